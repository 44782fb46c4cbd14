package report

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"strings"
	"time"
)

// Facts are the recorded facts a report is built from. The CLI gathers them
// from pgphi's state; nothing here is computed from data values.
type Facts struct {
	PlanID       string          `json:"plan_id"`
	Environment  string          `json:"environment"`
	Database     string          `json:"database"`
	GeneratedAt  time.Time       `json:"generated_at"`
	PlanCreated  *time.Time      `json:"plan_created,omitempty"`
	Completed    *time.Time      `json:"apply_completed,omitempty"`
	CleanedUp    *time.Time      `json:"cleaned_up,omitempty"`
	Columns      []ColumnFact    `json:"columns"`
	Checklist    *Checklist      `json:"checklist,omitempty"`
	Approvals    []ApprovalFact  `json:"approvals"`
	ApprovalsOK  bool            `json:"approvals_ok"`
	ApprovalNote string          `json:"approval_note"`
	Validation   *ValidationFact `json:"validation,omitempty"`
	Verification *VerifyFact     `json:"verification,omitempty"`
	Backup       *BackupFact     `json:"backup,omitempty"`
	Audit        AuditFact       `json:"audit"`
}

// BackupFact is the newest backup verified by restoring it, against the
// pinned maximum age (required in production).
type BackupFact struct {
	OK       bool   `json:"ok"`
	Required bool   `json:"required"`
	Format   string `json:"format,omitempty"` // tink-aes256-gcm-hkdf-1mb (FIPS-approved primitives) or age
	BackupID string `json:"backup_id,omitempty"`
	Evidence string `json:"evidence"`
}

// ColumnFact is one protected column and where it stands.
type ColumnFact struct {
	Table     string `json:"table"`
	Column    string `json:"column"`
	Class     string `json:"class"`
	Phase     string `json:"phase"` // planned, expanded, cleaned
	Encrypted int64  `json:"encrypted"`
	Pending   int64  `json:"pending"`
	Search    string `json:"search,omitempty"`
}

// ApprovalFact is one valid approval.
type ApprovalFact struct {
	Signer      string    `json:"signer"`
	Role        string    `json:"role"`
	SignedAt    time.Time `json:"signed_at"`
	Fingerprint string    `json:"key_fingerprint"`
}

// ValidationFact is the result of pre-migration validation.
type ValidationFact struct {
	Rules      int      `json:"rules_checked"`
	Violations []string `json:"violations"` // "table.column rule: N rows"
	Source     string   `json:"source"`     // "checklist <time>" or "live"
}

// VerifyFact is the last recorded verification.
type VerifyFact struct {
	At         time.Time `json:"at"`
	OK         bool      `json:"ok"`
	Rows       int64     `json:"rows"`
	Values     int64     `json:"values"`
	Mismatches int64     `json:"mismatches"`
	Pending    int64     `json:"pending"`
}

// AuditFact is the state of the audit trail.
type AuditFact struct {
	Records  int64  `json:"records"`
	HeadSeq  int64  `json:"head_seq"`
	Head     string `json:"head_hash"`
	Valid    bool   `json:"chain_valid"`
	Problems int    `json:"problems"`
}

// Item is one line of the sign-off: a requirement and its evidence.
type Item struct {
	Requirement string `json:"requirement"`
	Met         bool   `json:"met"`
	Evidence    string `json:"evidence"`
}

// Assess lists the sign-off requirements with their evidence.
func (f *Facts) Assess() []Item {
	var items []Item
	add := func(req string, met bool, ev string) { items = append(items, Item{req, met, ev}) }

	if f.Checklist == nil {
		add("pre-flight checklist passed", false, "no `pgphi check` on record for this plan")
	} else {
		var failed []string
		for _, c := range f.Checklist.Items {
			if c.Required && !c.Passed {
				failed = append(failed, c.ID)
			}
		}
		ev := fmt.Sprintf("checked %s, %d items", f.Checklist.CheckedAt.UTC().Format(time.RFC3339), len(f.Checklist.Items))
		if len(failed) > 0 {
			ev += "; failed: " + strings.Join(failed, ", ")
		}
		add("pre-flight checklist passed", len(failed) == 0, ev)
	}
	add("approvals meet the environment's policy", f.ApprovalsOK, f.ApprovalNote)
	if f.Validation == nil {
		add("PHI validation before migration", false, "no validation on record")
	} else {
		ev := fmt.Sprintf("%d rules checked (%s), %d violated", f.Validation.Rules, f.Validation.Source, len(f.Validation.Violations))
		if len(f.Validation.Violations) > 0 {
			ev += ": " + strings.Join(f.Validation.Violations, "; ")
		}
		add("PHI validation before migration", len(f.Validation.Violations) == 0, ev)
	}
	add("migration applied", f.Completed != nil, timeOr(f.Completed, "apply has not completed"))
	if f.Verification == nil {
		add("every value verified by decryption", false, "no `pgphi verify` on record")
	} else {
		v := f.Verification
		add("every value verified by decryption", v.OK, fmt.Sprintf("%s: %d values in %d rows, %d mismatches, %d pending",
			v.At.UTC().Format(time.RFC3339), v.Values, v.Rows, v.Mismatches, v.Pending))
	}
	pending := int64(0)
	for _, c := range f.Columns {
		pending += c.Pending
	}
	add("no value left unencrypted", pending == 0 && len(f.Columns) > 0, fmt.Sprintf("%d columns, %d values pending", len(f.Columns), pending))
	if b := f.Backup; b != nil && b.Required {
		add("backup verified by restoring it, within the pinned maximum age", b.OK, b.Evidence)
	}
	add("audit trail intact", f.Audit.Valid && f.Audit.Records > 0, fmt.Sprintf("%d records, head #%d %s, %d problems", f.Audit.Records, f.Audit.HeadSeq, short(f.Audit.Head), f.Audit.Problems))
	return items
}

// Approved reports whether every requirement has evidence.
func (f *Facts) Approved() bool {
	for _, i := range f.Assess() {
		if !i.Met {
			return false
		}
	}
	return true
}

func timeOr(t *time.Time, alt string) string {
	if t == nil {
		return alt
	}
	return t.UTC().Format(time.RFC3339)
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "..."
	}
	return h
}

// Verdict is the report's conclusion.
func (f *Facts) Verdict() string {
	if f.Approved() {
		return "APPROVED FOR PRODUCTION"
	}
	return "NOT APPROVED: requirements without evidence are listed below"
}

// Render writes the report as md, html or json.
func Render(w io.Writer, format string, f *Facts) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*Facts
			Verdict  string `json:"verdict"`
			Approved bool   `json:"approved"`
			Items    []Item `json:"requirements"`
		}{f, f.Verdict(), f.Approved(), f.Assess()})
	case "md", "":
		return renderMarkdown(w, f)
	case "html":
		var b strings.Builder
		if err := renderMarkdown(&b, f); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>pgphi compliance report %s</title>\n<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{white-space:pre-wrap}</style></head>\n<body><pre>%s</pre></body></html>\n",
			html.EscapeString(f.PlanID), html.EscapeString(b.String()))
		return err
	}
	return fmt.Errorf("unknown report format `%s` (md, html, json)", format)
}

func renderMarkdown(w io.Writer, f *Facts) error {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# HIPAA compliance report: %s\n\n", f.PlanID)
	p("**%s**\n\n", f.Verdict())
	p("| | |\n|---|---|\n")
	p("| migration (plan) id | `%s` |\n| environment | %s |\n| database | %s |\n", f.PlanID, f.Environment, f.Database)
	p("| plan recorded | %s |\n| apply completed | %s |\n| plaintext dropped | %s |\n| report generated | %s |\n\n",
		timeOr(f.PlanCreated, "-"), timeOr(f.Completed, "-"), timeOr(f.CleanedUp, "-"), f.GeneratedAt.UTC().Format(time.RFC3339))

	p("## Requirements and evidence\n\n| requirement | met | evidence |\n|---|---|---|\n")
	for _, i := range f.Assess() {
		p("| %s | %s | %s |\n", i.Requirement, yes(i.Met), strings.ReplaceAll(i.Evidence, "|", "/"))
	}
	p("\n## Pre-flight checklist\n\n")
	if f.Checklist == nil {
		p("No checklist on record: run `pgphi check`.\n")
	} else {
		p("| item | required | passed | evidence |\n|---|---|---|---|\n")
		for _, c := range f.Checklist.Items {
			p("| %s | %s | %s | %s |\n", c.Title, yes(c.Required), yes(c.Passed), strings.ReplaceAll(c.Evidence, "|", "/"))
		}
	}
	p("\n## Approvals\n\n")
	if len(f.Approvals) == 0 {
		p("None.\n")
	} else {
		p("| approver | role | signed | key fingerprint |\n|---|---|---|---|\n")
		for _, a := range f.Approvals {
			p("| %s | %s | %s | `%s` |\n", a.Signer, a.Role, a.SignedAt.UTC().Format(time.RFC3339), a.Fingerprint)
		}
	}
	p("\n%s\n\n## Protected columns\n\n| table | column | class | phase | encrypted | pending | search |\n|---|---|---|---|---|---|---|\n", f.ApprovalNote)
	for _, c := range f.Columns {
		p("| %s | %s | %s | %s | %d | %d | %s |\n", c.Table, c.Column, c.Class, c.Phase, c.Encrypted, c.Pending, c.Search)
	}
	if b := f.Backup; b != nil {
		p("\n## Backups\n\n| verified backup within the pinned maximum age | required | encryption | evidence |\n|---|---|---|---|\n")
		p("| %s | %s | %s | %s |\n", yes(b.OK), yes(b.Required), orDash(b.Format), strings.ReplaceAll(b.Evidence, "|", "/"))
	}
	p("\n## Audit trail\n\n%d records; head #%d `%s`; chain %s.\n", f.Audit.Records, f.Audit.HeadSeq, f.Audit.Head, map[bool]string{true: "verified", false: "NOT valid"}[f.Audit.Valid])
	p("\n---\nSign-off: ______________________ (compliance officer)   date: __________\n")
	return nil
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
