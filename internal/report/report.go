package report

import (
	"encoding/json"
	"fmt"
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
	// Alerts are the alert thresholds runs of this plan crossed, from the
	// audit trail.
	Alerts []AlertFact `json:"alerts"`
	// Migrations are the schema migrations pgphi ran for this database;
	// nil when the database has no migration history (the section is
	// left out).
	Migrations []MigrationFact `json:"migrations,omitempty"`
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
	// Leakage is what was measured of the column's blind index terms,
	// per term family; empty when nothing was measured (the report says
	// so).
	Leakage []LeakageFact `json:"leakage,omitempty"`
}

// LeakageFact is the measured leakage of one term family of a column: how
// many distinct values share a term (the mean and the minimum: a term with
// one value identifies it), and whether the pinned accept_leakage lets the
// column trade privacy for speed. Counts only.
type LeakageFact struct {
	Family          string    `json:"family"`
	MeanValues      float64   `json:"mean_values_per_term"`
	MinValues       float64   `json:"min_values_per_term"`
	AcceptedLeakage bool      `json:"accepted_leakage"`
	MeasuredAt      time.Time `json:"measured_at"`
}

// AlertFact is an alert threshold a run crossed (audit event alert).
type AlertFact struct {
	At        time.Time `json:"at"`
	Command   string    `json:"command"`
	Threshold string    `json:"threshold"`
	Measured  string    `json:"measured"`
	Limit     string    `json:"limit"`
	Unit      string    `json:"unit"`
	Table     string    `json:"table,omitempty"`
}

// MigrationFact is one schema migration in the database's history.
type MigrationFact struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Status    string     `json:"status"`
	AppliedAt *time.Time `json:"applied_at,omitempty"`
	AppliedBy string     `json:"applied_by,omitempty"`
}

// ApprovalFact is one valid approval and what its signature covers: the
// plan id, the command, the environment, the database and the expiry.
type ApprovalFact struct {
	Signer      string    `json:"signer"`
	Role        string    `json:"role"`
	SignedAt    time.Time `json:"signed_at"`
	Fingerprint string    `json:"key_fingerprint"`
	PlanID      string    `json:"plan_id"`
	Command     string    `json:"command"`
	Environment string    `json:"environment"`
	Database    string    `json:"database"`
	Expires     time.Time `json:"expires"`
}

// Signed is the text of what an approval's signature covers.
func (a ApprovalFact) Signed() string {
	return fmt.Sprintf("%s of %s in %s, database %s, until %s", a.Command, a.PlanID, a.Environment, a.Database, a.Expires.UTC().Format(time.RFC3339))
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
	Records    int64           `json:"records"`
	HeadSeq    int64           `json:"head_seq"`
	Head       string          `json:"head_hash"`
	Valid      bool            `json:"chain_valid"`
	Problems   int             `json:"problems"`
	Checkpoint *CheckpointFact `json:"checkpoint,omitempty"` // the newest signed checkpoint; nil: none
}

// CheckpointFact is the newest signed checkpoint of the audit trail and
// how much of the chain it covers.
type CheckpointFact struct {
	Seq            int64     `json:"seq"`
	Hash           string    `json:"hash"`
	SignedAt       time.Time `json:"signed_at"`
	KeyFingerprint string    `json:"key_fingerprint"`
	// Proven: the signature verifies with the pinned audit key and the
	// chain extends the signed record; Note says why not.
	Proven bool   `json:"proven"`
	Note   string `json:"note,omitempty"`
}

// Covers says how the checkpoint relates to the head.
func (a AuditFact) Covers() string {
	cp := a.Checkpoint
	switch {
	case cp == nil:
		return "no signed checkpoint"
	case cp.Seq >= a.HeadSeq:
		return fmt.Sprintf("checkpoint #%d covers the head", cp.Seq)
	}
	return fmt.Sprintf("checkpoint #%d covers all but the newest %d records", cp.Seq, a.HeadSeq-cp.Seq)
}

// Item is one line of the sign-off: a requirement, its evidence and, when
// it is not met, why and what produces the missing evidence.
type Item struct {
	Requirement string `json:"requirement"`
	Met         bool   `json:"met"`
	Evidence    string `json:"evidence"`
	Remedy      string `json:"remedy,omitempty"`
}

// Assess lists the sign-off requirements with their evidence.
func (f *Facts) Assess() []Item {
	var items []Item
	add := func(req string, met bool, ev, remedy string) {
		if met {
			remedy = ""
		}
		items = append(items, Item{req, met, ev, remedy})
	}

	if f.Checklist == nil {
		add("pre-flight checklist passed", false, "no pre-flight checklist on record for this plan",
			"run `pgphi check`: it records the checklist (TLS, audit trail, roles, keys, approvals, validation, disk, triggers) for this plan")
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
		add("pre-flight checklist passed", len(failed) == 0, ev,
			"fix the failed items (see the checklist below), then run `pgphi check` again")
	}
	add("approvals meet the environment's policy", f.ApprovalsOK, f.ApprovalNote,
		"the pinned signers sign the plan id: `pgphi approve PLAN_ID --command apply --key FILE`")
	if f.Validation == nil {
		add("PHI validation before migration", false, "no validation on record",
			"run `pgphi check` before apply: it counts the values that break the config's validation rules")
	} else {
		ev := fmt.Sprintf("%d rules checked (%s), %d violated", f.Validation.Rules, f.Validation.Source, len(f.Validation.Violations))
		if len(f.Validation.Violations) > 0 {
			ev += ": " + strings.Join(f.Validation.Violations, "; ")
		}
		add("PHI validation before migration", len(f.Validation.Violations) == 0, ev,
			"correct the rows that break the rules (`pgphi check` counts them by column), or change the rule in the config, then run `pgphi check` again")
	}
	add("migration applied", f.Completed != nil, timeOr(f.Completed, "apply has not completed"),
		"run `pgphi apply` until it reports every column encrypted and verified")
	if f.Verification == nil {
		ev := "no verification recorded for this plan"
		remedy := "run `pgphi verify`: it decrypts every value, compares it with its plaintext and records the result"
		if f.Completed != nil {
			// Apply records its own final verification; an apply that
			// completed without one ran before that was recorded.
			ev = fmt.Sprintf("apply completed at %s without a recorded verification (its verification step was not recorded by that version of pgphi)", f.Completed.UTC().Format(time.RFC3339))
		}
		add("every value verified by decryption", false, ev, remedy)
	} else {
		v := f.Verification
		ev := fmt.Sprintf("%s (apply's verification step or `pgphi verify`): %d values in %d rows, %d mismatches, %d pending",
			v.At.UTC().Format(time.RFC3339), v.Values, v.Rows, v.Mismatches, v.Pending)
		if !v.OK && v.Mismatches == 0 && v.Pending == 0 {
			// The other reasons a verification fails leave no count here.
			ev += "; failed on pgphi's triggers or on search accuracy below 95 %"
		}
		add("every value verified by decryption", v.OK, ev,
			"mismatches name table, column and key in `pgphi verify`; rows pending were changed after they were encrypted: run `pgphi apply`, then `pgphi verify`")
	}
	pending := int64(0)
	for _, c := range f.Columns {
		pending += c.Pending
	}
	add("no value left unencrypted", pending == 0 && len(f.Columns) > 0, fmt.Sprintf("%d columns, %d values pending", len(f.Columns), pending),
		"run `pgphi apply`: it encrypts the rows changed since; `pgphi status` counts them per column")
	if bk := f.Backup; bk != nil && bk.Required {
		add("backup verified by restoring it, within the pinned maximum age", bk.OK, bk.Evidence,
			"`pgphi backup --out FILE`, then `pgphi backup verify FILE`")
	}
	add("audit trail intact", f.Audit.Valid && f.Audit.Records > 0, fmt.Sprintf("%d records, head #%d %s, %d problems; %s", f.Audit.Records, f.Audit.HeadSeq, short(f.Audit.Head), f.Audit.Problems, f.Audit.Covers()),
		"`pgphi audit verify` names the first record where the chain breaks; compare with the JSON-lines mirror and the signed checkpoints")
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
		return renderHTML(w, f)
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

	p("## Requirements and evidence\n\n| requirement | met | evidence | what produces the evidence |\n|---|---|---|---|\n")
	for _, i := range f.Assess() {
		p("| %s | %s | %s | %s |\n", i.Requirement, yes(i.Met), strings.ReplaceAll(i.Evidence, "|", "/"), strings.ReplaceAll(i.Remedy, "|", "/"))
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
		p("| approver | role | signed | key fingerprint | what was signed |\n|---|---|---|---|---|\n")
		for _, a := range f.Approvals {
			p("| %s | %s | %s | `%s` | %s |\n", a.Signer, a.Role, a.SignedAt.UTC().Format(time.RFC3339), a.Fingerprint, a.Signed())
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
	if len(f.Alerts) > 0 {
		p("\n## Alerts during the runs\n\n| when | command | threshold | table | measured | limit |\n|---|---|---|---|---|---|\n")
		for _, a := range f.Alerts {
			p("| %s | %s | %s | %s | %s %s | %s %s |\n", a.At.UTC().Format(time.RFC3339), a.Command, a.Threshold, a.Table, a.Measured, a.Unit, a.Limit, a.Unit)
		}
	}
	if len(f.Migrations) > 0 {
		p("\n## Migrations included\n\n| migration | name | status | applied | by |\n|---|---|---|---|---|\n")
		for _, m := range f.Migrations {
			p("| %s | %s | %s | %s | %s |\n", m.ID, m.Name, m.Status, timeOr(m.AppliedAt, "-"), m.AppliedBy)
		}
	}
	p("\n## Audit trail\n\n%d records; head #%d `%s`; chain %s; %s.\n", f.Audit.Records, f.Audit.HeadSeq, f.Audit.Head, map[bool]string{true: "verified", false: "NOT valid"}[f.Audit.Valid], f.Audit.Covers())
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
