package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"regexp"
	"strings"
	"time"

	_ "embed"
)

// MigrationFacts are the recorded facts of the sign-off report of one
// schema migration: its history entry, the audit records of the run that
// applied it, the approvals of the plan id it ran under, the lint findings
// that run recorded and the state of the audit trail. Like Facts, they
// hold names, hashes, counts and times, never SQL text or a value.
type MigrationFacts struct {
	Name        string          `json:"migration"`
	Version     int64           `json:"version"`
	Environment string          `json:"environment"`
	Database    string          `json:"database"`
	GeneratedAt time.Time       `json:"generated_at"`
	History     MigrationRecord `json:"history"`
	// Run is the run that produced the history entry, from the audit
	// trail; nil when no run of pgphi's records it (an adopted migration).
	Run *MigrationRun `json:"run,omitempty"`
	// ApprovalsRequired: the pinned policy of the run's environment asks
	// for approvals; Approvals are the ones that counted when it ran.
	ApprovalsRequired bool           `json:"approvals_required"`
	ApprovalsOK       bool           `json:"approvals_ok"`
	ApprovalNote      string         `json:"approval_note"`
	Approvals         []ApprovalFact `json:"approvals"`
	// Lint is what the run's lint found in the migration's file; nil when
	// the run recorded no lint result.
	Lint  []LintFact `json:"lint"`
	Audit AuditFact  `json:"audit"`
}

// MigrationRecord is the migration's entry in the history table.
type MigrationRecord struct {
	SHA256          string     `json:"sha256"`
	State           string     `json:"state"` // applied, failed, running, baseline, reverted
	Source          string     `json:"source"`
	Transactional   bool       `json:"transactional"`
	StatementsTotal int        `json:"statements_total"`
	StatementsDone  int        `json:"statements_done"`
	RowsAffected    int64      `json:"rows_affected"`
	StartedAt       time.Time  `json:"started_at"`
	FinishedAt      *time.Time `json:"finished_at,omitempty"`
	DurationMS      *int64     `json:"duration_ms,omitempty"`
	AppliedByRole   string     `json:"applied_by_role"`
	AppliedByActor  string     `json:"applied_by_actor"`
	ErrorClass      string     `json:"error_class,omitempty"`
	FailedStatement *int       `json:"failed_statement,omitempty"`
}

// MigrationRun is the run of `pgphi migrate` that applied (or failed) the
// migration, as its audit records tell it.
type MigrationRun struct {
	RunID      string `json:"run_id"`
	PlanID     string `json:"plan_id"`
	Reason     string `json:"reason"`
	Subcommand string `json:"subcommand"`
	// Environment is the one the run recorded (its approvals are that
	// environment's).
	Environment string `json:"environment"`
	Event       string `json:"event"` // the run's end: success, failure, refused
	// Entry is the run's own line for this migration: sha256, statements,
	// rows, duration and outcome.
	Entry     string       `json:"entry"`
	SHA256    string       `json:"sha256"`
	Outcome   string       `json:"outcome"`
	LintRuled bool         `json:"lint_recorded"`
	Records   []AuditEntry `json:"records"`
}

// AuditEntry is one record of the audit trail, by its place in the chain.
type AuditEntry struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Event  string    `json:"event"`
	DBRole string    `json:"db_role"`
	Actor  string    `json:"actor"`
	Hash   string    `json:"hash"`
}

// LintFact is one lint finding of the migration's file when it ran: the
// rule, its severity and position, and for a suppression its reason.
type LintFact struct {
	Rule     string `json:"rule"`
	Severity string `json:"severity"`
	Line     int    `json:"line"`
	Col      int    `json:"column"`
	Ignored  bool   `json:"ignored,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// Assess lists the sign-off requirements of the migration with their
// evidence.
func (f *MigrationFacts) Assess() []Item {
	var items []Item
	add := func(req string, met bool, ev, remedy string) {
		if met {
			remedy = ""
		}
		items = append(items, Item{req, met, ev, remedy})
	}
	h := f.History
	prev := f.Version - 1
	if prev < 0 {
		prev = 0
	}
	switch h.State {
	case "applied":
		add("applied by pgphi's runner, every statement", h.StatementsDone == h.StatementsTotal,
			fmt.Sprintf("applied %s by %s (%s): %d of %d statements, %d rows, %s", timeOr(h.FinishedAt, "-"), h.AppliedByRole, h.AppliedByActor,
				h.StatementsDone, h.StatementsTotal, h.RowsAffected, durationOr(h.DurationMS)),
			"`pgphi migrate verify` names what is unfinished; `pgphi migrate up --reason TEXT` finishes it")
	case "baseline":
		add("applied by pgphi's runner, every statement", false,
			fmt.Sprintf("adopted with `pgphi migrate baseline` (history from %s) at %s: it ran outside pgphi, which holds no evidence of how it ran, who approved it or what lint found", h.Source, h.StartedAt.UTC().Format(time.RFC3339)),
			fmt.Sprintf("the evidence of an adopted migration is the other tool's records; for pgphi's, revert it and apply it again under the wrapper: `pgphi migrate down --to %d --reason TEXT`, then `pgphi migrate up --reason TEXT`", prev))
	case "failed":
		at := ""
		if h.FailedStatement != nil {
			at = fmt.Sprintf(" at statement %d", *h.FailedStatement)
		}
		add("applied by pgphi's runner, every statement", false,
			fmt.Sprintf("failed%s (%s) after %d of %d statements, started %s by %s (%s)", at, orDash(h.ErrorClass), h.StatementsDone, h.StatementsTotal, h.StartedAt.UTC().Format(time.RFC3339), h.AppliedByRole, h.AppliedByActor),
			"fix the statement, `pgphi migrate hash`, then `pgphi migrate up --reason TEXT` (it retries a transactional migration and resumes a statement-by-statement one at the failed statement)")
	case "running":
		add("applied by pgphi's runner, every statement", false,
			fmt.Sprintf("interrupted after %d of %d statements, started %s by %s (%s)", h.StatementsDone, h.StatementsTotal, h.StartedAt.UTC().Format(time.RFC3339), h.AppliedByRole, h.AppliedByActor),
			"`pgphi migrate up --reason TEXT` resumes it at the first statement not done")
	default:
		add("applied by pgphi's runner, every statement", false, "state "+h.State+" since "+timeOr(h.FinishedAt, h.StartedAt.UTC().Format(time.RFC3339)),
			"`pgphi migrate up --reason TEXT` applies it again")
	}

	if r := f.Run; r == nil {
		add("its run is in the audit trail with the applied file's hash", false, "no audit record of a `pgphi migrate` run names this migration",
			"only a run of `pgphi migrate up` records one; `pgphi audit verify` checks that none was removed")
	} else {
		ev := fmt.Sprintf("run %s (%s, %s): %s", r.RunID, r.Subcommand, r.Event, r.Entry)
		ok := r.Event == "success" && r.Outcome == "applied" && r.SHA256 == h.SHA256 && h.SHA256 != ""
		if r.SHA256 != h.SHA256 {
			ev += fmt.Sprintf("; the history's hash %s differs from the run's", short(h.SHA256))
		}
		add("its run is in the audit trail with the applied file's hash", ok, ev,
			"the run did not apply it: see the history entry above; `pgphi migrate up --reason TEXT` records a new run")
	}

	switch {
	case f.Run == nil:
		add("approvals of the plan id it ran under meet the pinned policy", false, "no run of pgphi's, so no plan id was approved",
			"the pinned signers sign the plan id `pgphi migrate status` shows before `pgphi migrate up`: `pgphi approve PLAN_ID --command migrate --key FILE`")
	default:
		add("approvals of the plan id it ran under meet the pinned policy", f.ApprovalsOK, fmt.Sprintf("plan %s: %s", orDash(f.Run.PlanID), f.ApprovalNote),
			"the pinned signers sign the plan id `pgphi migrate status` shows before `pgphi migrate up`: `pgphi approve PLAN_ID --command migrate --key FILE`")
	}

	if f.Run == nil || !f.Run.LintRuled {
		add("lint: no error left, every suppression with a reason", false, "the run recorded no lint result for this migration",
			"`pgphi migrate lint FILE` shows the findings; `pgphi migrate up` records them in the run's audit record")
	} else {
		var errs, unexplained []string
		ignored := 0
		for _, l := range f.Lint {
			switch {
			case l.Ignored && strings.TrimSpace(l.Reason) == "":
				unexplained = append(unexplained, fmt.Sprintf("%s at line %d", l.Rule, l.Line))
			case l.Ignored:
				ignored++
			case l.Severity == "error":
				errs = append(errs, fmt.Sprintf("%s at line %d", l.Rule, l.Line))
			}
		}
		ev := fmt.Sprintf("%d findings, %d suppressed with a reason", len(f.Lint), ignored)
		if len(errs) > 0 {
			ev += "; errors: " + strings.Join(errs, ", ")
		}
		if len(unexplained) > 0 {
			ev += "; suppressed without a reason: " + strings.Join(unexplained, ", ")
		}
		add("lint: no error left, every suppression with a reason", len(errs) == 0 && len(unexplained) == 0, ev,
			"fix the statement or suppress the rule with `-- pgphi:ignore RULE reason`, then apply it again")
	}

	add("audit trail intact", f.Audit.Valid && f.Audit.Records > 0, fmt.Sprintf("%d records, head #%d %s, %d problems; %s", f.Audit.Records, f.Audit.HeadSeq, short(f.Audit.Head), f.Audit.Problems, f.Audit.Covers()),
		"`pgphi audit verify` names the first record where the chain breaks; compare with the JSON-lines mirror and the signed checkpoints")
	return items
}

// Approved reports whether every requirement has evidence.
func (f *MigrationFacts) Approved() bool {
	for _, i := range f.Assess() {
		if !i.Met {
			return false
		}
	}
	return true
}

// Verdict is the report's conclusion.
func (f *MigrationFacts) Verdict() string {
	if f.Approved() {
		return "APPROVED FOR PRODUCTION"
	}
	return "NOT APPROVED: requirements without evidence are listed below"
}

func durationOr(ms *int64) string {
	if ms == nil {
		return "-"
	}
	return (time.Duration(*ms) * time.Millisecond).String()
}

// RenderMigration writes the migration's report as md, html or json.
func RenderMigration(w io.Writer, format string, f *MigrationFacts) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*MigrationFacts
			Verdict  string `json:"verdict"`
			Approved bool   `json:"approved"`
			Items    []Item `json:"requirements"`
		}{f, f.Verdict(), f.Approved(), f.Assess()})
	case "md", "":
		return renderMigrationMarkdown(w, f)
	case "html":
		return renderMigrationHTML(w, f)
	}
	return fmt.Errorf("unknown report format `%s` (md, html, json)", format)
}

func cell(s string) string { return strings.ReplaceAll(s, "|", "/") }

func renderMigrationMarkdown(w io.Writer, f *MigrationFacts) error {
	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	h := f.History
	p("# HIPAA compliance report: migration %s\n\n", f.Name)
	p("**%s**\n\n", f.Verdict())
	p("| | |\n|---|---|\n")
	p("| migration id | `%s` (version %d) |\n| environment | %s |\n| database | %s |\n| report generated | %s |\n\n", f.Name, f.Version, f.Environment, f.Database, f.GeneratedAt.UTC().Format(time.RFC3339))
	p("## Requirements and evidence\n\n| requirement | met | evidence | what produces the evidence |\n|---|---|---|---|\n")
	for _, i := range f.Assess() {
		p("| %s | %s | %s | %s |\n", i.Requirement, yes(i.Met), cell(i.Evidence), cell(i.Remedy))
	}
	p("\n## History entry\n\n| | |\n|---|---|\n")
	p("| SHA-256 of the file | `%s` |\n| outcome | %s |\n| source | %s |\n| transactional | %s |\n", h.SHA256, h.State, h.Source, yes(h.Transactional))
	p("| statements | %d of %d |\n| rows affected | %d |\n| started | %s |\n| finished | %s |\n| duration | %s |\n",
		h.StatementsDone, h.StatementsTotal, h.RowsAffected, h.StartedAt.UTC().Format(time.RFC3339), timeOr(h.FinishedAt, "-"), durationOr(h.DurationMS))
	p("| by | %s (%s) |\n| error class | %s |\n", h.AppliedByRole, h.AppliedByActor, orDash(h.ErrorClass))
	p("\n## Approval\n\n")
	if f.Run != nil {
		p("Plan id `%s` (`pgphi migrate %s`, reason: %s). %s\n\n", orDash(f.Run.PlanID), f.Run.Subcommand, cell(f.Run.Reason), f.ApprovalNote)
	} else {
		p("%s\n\n", f.ApprovalNote)
	}
	if len(f.Approvals) == 0 {
		p("No approval counted.\n")
	} else {
		p("| approver | role | signed | key fingerprint | what was signed |\n|---|---|---|---|---|\n")
		for _, a := range f.Approvals {
			p("| %s | %s | %s | `%s` | %s |\n", a.Signer, a.Role, a.SignedAt.UTC().Format(time.RFC3339), a.Fingerprint, a.Signed())
		}
	}
	p("\n## Lint findings and suppressions\n\n")
	switch {
	case f.Run == nil || !f.Run.LintRuled:
		p("No lint result recorded.\n")
	case len(f.Lint) == 0:
		p("No finding.\n")
	default:
		p("| rule | severity | line | suppressed | reason |\n|---|---|---|---|---|\n")
		for _, l := range f.Lint {
			p("| %s | %s | %d:%d | %s | %s |\n", l.Rule, l.Severity, l.Line, l.Col, map[bool]string{true: "yes", false: "no"}[l.Ignored], cell(orDash(l.Reason)))
		}
	}
	p("\n## Audit records of the run\n\n")
	if f.Run == nil || len(f.Run.Records) == 0 {
		p("None.\n")
	} else {
		p("| seq | time | event | role (actor) | hash |\n|---|---|---|---|---|\n")
		for _, r := range f.Run.Records {
			p("| %d | %s | %s | %s (%s) | `%s` |\n", r.Seq, r.Time.UTC().Format(time.RFC3339), r.Event, r.DBRole, r.Actor, r.Hash)
		}
	}
	p("\n## Audit trail\n\n%d records; head #%d `%s`; chain %s; %s.\n", f.Audit.Records, f.Audit.HeadSeq, f.Audit.Head, map[bool]string{true: "verified", false: "NOT valid"}[f.Audit.Valid], f.Audit.Covers())
	if cp := f.Audit.Checkpoint; cp != nil {
		p("Newest signed checkpoint: #%d `%s`, signed %s with key `%s`; %s.\n", cp.Seq, cp.Hash, cp.SignedAt.UTC().Format(time.RFC3339), cp.KeyFingerprint,
			map[bool]string{true: "proven against the pinned audit key", false: "not proven: " + cp.Note}[cp.Proven])
	}
	p("\n---\nSign-off: ______________________ (compliance officer)   date: __________\n")
	_, err := w.Write(b.Bytes())
	return err
}

//go:embed migration.html.tmpl
var migrationHTMLSource string

// The migration page uses the plan report's stylesheet.
var reportStyle = template.CSS(regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(htmlSource)[1])

var migrationTemplate = template.Must(template.New("migration").Funcs(htmlFuncs).Parse(migrationHTMLSource))

func renderMigrationHTML(w io.Writer, f *MigrationFacts) error {
	items := f.Assess()
	unmet := 0
	for _, i := range items {
		if !i.Met {
			unmet++
		}
	}
	return migrationTemplate.Execute(w, struct {
		F        *MigrationFacts
		Items    []Item
		Approved bool
		Unmet    int
		Verdict  string
		Style    template.CSS
	}{f, items, unmet == 0, unmet, f.Verdict(), reportStyle})
}
