package report

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func approvedMigration() *MigrationFacts {
	fin := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ms := int64(40)
	return &MigrationFacts{Name: "005_add_payment_table", Version: 5, Environment: "production", Database: "lab",
		History: MigrationRecord{SHA256: strings.Repeat("ab", 32), State: "applied", Source: "pgphi", StatementsTotal: 2, StatementsDone: 2,
			StartedAt: fin.Add(-time.Second), FinishedAt: &fin, DurationMS: &ms, AppliedByRole: "dba_alice", AppliedByActor: "alice"},
		Run: &MigrationRun{RunID: "r1", PlanID: "migrate-0123", Subcommand: "up", Event: "success", Outcome: "applied", SHA256: strings.Repeat("ab", 32), LintRuled: true,
			Records: []AuditEntry{{Seq: 7, Event: "start"}, {Seq: 8, Event: "success"}}},
		ApprovalsRequired: true, ApprovalsOK: true, ApprovalNote: "met",
		Lint:  []LintFact{{Rule: "ban-drop-table", Severity: "error", Line: 2, Col: 1, Ignored: true, Reason: "never used"}},
		Audit: AuditFact{Records: 8, HeadSeq: 8, Head: "h", Valid: true},
	}
}

// Each requirement withdrawn on its own turns the verdict, and the item
// that lacks evidence says what produces it.
func TestMigrationVerdictNeedsEveryRequirement(t *testing.T) {
	if f := approvedMigration(); !f.Approved() {
		t.Fatalf("the complete facts are not approved: %+v", f.Assess())
	}
	for name, change := range map[string]func(*MigrationFacts){
		"adopted":               func(f *MigrationFacts) { f.History.State, f.Run = "baseline", nil },
		"failed":                func(f *MigrationFacts) { f.History.State = "failed" },
		"unfinished":            func(f *MigrationFacts) { f.History.StatementsDone = 1 },
		"hash differs":          func(f *MigrationFacts) { f.Run.SHA256 = strings.Repeat("cd", 32) },
		"run failed":            func(f *MigrationFacts) { f.Run.Event = "failure" },
		"approvals":             func(f *MigrationFacts) { f.ApprovalsOK = false },
		"no lint record":        func(f *MigrationFacts) { f.Run.LintRuled = false },
		"lint error":            func(f *MigrationFacts) { f.Lint[0].Ignored = false },
		"suppressed, no reason": func(f *MigrationFacts) { f.Lint[0].Reason = " " },
		"audit chain":           func(f *MigrationFacts) { f.Audit.Valid = false },
	} {
		f := approvedMigration()
		change(f)
		if f.Approved() {
			t.Errorf("%s: still approved", name)
			continue
		}
		for _, i := range f.Assess() {
			if !i.Met && i.Remedy == "" {
				t.Errorf("%s: %q unmet without what produces the evidence", name, i.Requirement)
			}
		}
		var md bytes.Buffer
		if err := RenderMigration(&md, "md", f); err != nil || !strings.Contains(md.String(), "NOT APPROVED") {
			t.Errorf("%s: %v\n%s", name, err, md.String())
		}
	}
	for _, format := range []string{"md", "html", "json"} {
		var b bytes.Buffer
		if err := RenderMigration(&b, format, approvedMigration()); err != nil || !strings.Contains(b.String(), "005_add_payment_table") {
			t.Errorf("%s: %v", format, err)
		}
	}
	if err := RenderMigration(&bytes.Buffer{}, "txt", approvedMigration()); err == nil {
		t.Error("an unknown format rendered")
	}
}
