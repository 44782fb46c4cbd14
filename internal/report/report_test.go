package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func completeFacts() *Facts {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	return &Facts{
		PlanID: "plan-abc", Environment: "production", Database: "lab", GeneratedAt: now, Completed: &now,
		Columns:   []ColumnFact{{Table: "public.patient", Column: "last_name", Class: "pii", Phase: "expanded", Encrypted: 10}},
		Checklist: &Checklist{PlanID: "plan-abc", CheckedAt: now, Items: []Check{{ID: "tls", Title: "tls", Required: true, Passed: true, Evidence: "TLS 1.3"}}},
		Approvals: []ApprovalFact{{Signer: "alice", Role: "dba", SignedAt: now, Fingerprint: "SHA256:x",
			PlanID: "plan-abc", Command: "apply", Environment: "production", Database: "lab", Expires: now.Add(72 * time.Hour)}},
		ApprovalsOK:  true,
		ApprovalNote: "met",
		Validation:   &ValidationFact{Rules: 2, Source: "live"},
		Verification: &VerifyFact{At: now, OK: true, Rows: 10, Values: 10},
		Audit: AuditFact{Records: 5, HeadSeq: 5, Head: "ab", Valid: true,
			Checkpoint: &CheckpointFact{Seq: 4, Hash: "cd", SignedAt: now, KeyFingerprint: "SHA256:auditor", Proven: true}},
	}
}

func TestApprovedOnlyWithEvidenceForEveryRequirement(t *testing.T) {
	f := completeFacts()
	if !f.Approved() || f.Verdict() != "APPROVED FOR PRODUCTION" {
		t.Fatalf("complete facts not approved: %+v", f.Assess())
	}
	breakers := map[string]func(*Facts){
		"no checklist":           func(f *Facts) { f.Checklist = nil },
		"failed required check":  func(f *Facts) { f.Checklist.Items[0].Passed = false },
		"approvals missing":      func(f *Facts) { f.ApprovalsOK = false },
		"validation violated":    func(f *Facts) { f.Validation.Violations = []string{"x"} },
		"not applied":            func(f *Facts) { f.Completed = nil },
		"verification failed":    func(f *Facts) { f.Verification.OK = false },
		"no verification":        func(f *Facts) { f.Verification = nil },
		"values pending":         func(f *Facts) { f.Columns[0].Pending = 1 },
		"audit chain broken":     func(f *Facts) { f.Audit.Valid = false },
		"nothing protected":      func(f *Facts) { f.Columns = nil },
		"no validation recorded": func(f *Facts) { f.Validation = nil },
	}
	for name, brk := range breakers {
		f := completeFacts()
		brk(f)
		if f.Approved() || strings.HasPrefix(f.Verdict(), "APPROVED") {
			t.Errorf("%s: still approved", name)
		}
	}
}

func TestRenderFormats(t *testing.T) {
	f := completeFacts()
	for _, format := range []string{"md", "html", "json"} {
		var b bytes.Buffer
		if err := Render(&b, format, f); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "plan-abc") || !strings.Contains(b.String(), "APPROVED FOR PRODUCTION") {
			t.Fatalf("%s lacks plan id or verdict:\n%s", format, b.String())
		}
		if format == "json" {
			var m map[string]any
			if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["approved"] != true {
				t.Fatalf("json: %v %v", err, m["approved"])
			}
		}
	}
	if err := Render(&bytes.Buffer{}, "pdf", f); err == nil {
		t.Fatal("unknown format accepted")
	}
}
