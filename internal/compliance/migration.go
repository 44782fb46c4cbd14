package compliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/migrate"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/report"
)

// ErrUnknownMigration: the history has no migration of that name or
// version.
var ErrUnknownMigration = errors.New("no such migration in the history")

// MigrationRunKey and MigrationLintKey are the audit details keys under
// which a run of `migrate up` records one migration: its entry (sha256,
// statements, rows, duration, outcome) and its lint findings (JSON of
// report.LintFact: rule, severity, position, suppression reason; never the
// message, which may quote the statement). They are how the report finds
// the run.
func MigrationRunKey(name string) string  { return detailKey("m.", name) }
func MigrationLintKey(name string) string { return detailKey("lint.", name) }

// detailKey is prefix and name in the characters audit details keys allow.
func detailKey(prefix, name string) string {
	k := prefix + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, name)
	if len(k) > 64 {
		k = k[:64]
	}
	return k
}

// MigrationFacts gathers the sign-off facts of one schema migration, named
// (005_add_payment_table) or by version: its history entry, the audit
// records of the run that wrote it, the approvals of that run's plan id as
// they stood when it ran (re-verified against the pinned signers and
// policy), the lint findings the run recorded, and the audit trail's head
// and newest checkpoint.
func (w *Wrapper) MigrationFacts(ctx context.Context, s *Session, name string) (*report.MigrationFacts, error) {
	rec, err := migrate.HistoryOf(ctx, s.Pool, name)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownMigration, name)
	}
	f := &report.MigrationFacts{Name: rec.Name, Version: rec.Version, Environment: s.Pins.Environment, GeneratedAt: time.Now().UTC(),
		History: report.MigrationRecord{SHA256: rec.SHA256, State: rec.State, Source: rec.Source, Transactional: rec.Transactional,
			StatementsTotal: rec.StatementsTotal, StatementsDone: rec.StatementsDone, RowsAffected: rec.RowsAffected, StartedAt: rec.StartedAt,
			FinishedAt: rec.FinishedAt, DurationMS: rec.DurationMS, AppliedByRole: rec.AppliedByRole, AppliedByActor: rec.AppliedByActor,
			ErrorClass: rec.ErrorClass, FailedStatement: rec.FailedStatement}}
	_ = s.Pool.QueryRow(ctx, "SELECT current_database()").Scan(&f.Database)

	run, started, err := migrationRun(ctx, s, rec)
	if err != nil {
		return nil, err
	}
	f.Run = run
	if run != nil {
		if f.Lint, err = runLint(ctx, s, run.RunID, rec.Name); err != nil {
			return nil, err
		}
		if f.Lint != nil {
			run.LintRuled = true
		}
		w.migrationApprovals(ctx, s, f, run, started)
	} else {
		f.ApprovalNote = "no run of pgphi's applied it"
	}
	if f.Lint == nil {
		f.Lint = []report.LintFact{}
	}
	if rep, err := audit.Verify(ctx, s.Pool); err == nil {
		f.Audit = report.AuditFact{Records: rep.Records, HeadSeq: rep.HeadSeq, Head: rep.Head, Valid: len(rep.Problems) == 0, Problems: len(rep.Problems)}
	}
	f.Audit.Checkpoint = latestCheckpoint(ctx, s)
	return f, nil
}

// migrationApprovals re-verifies the approvals of the run's plan id as of
// the run's start, under the pinned signers and policy: the executor was
// the role that ran it.
func (w *Wrapper) migrationApprovals(ctx context.Context, s *Session, f *report.MigrationFacts, run *report.MigrationRun, started time.Time) {
	p := s.Pins
	env := run.Environment
	if env == "" {
		env = f.Environment
	}
	if len(p.Approvals[env]) == 0 {
		f.ApprovalsOK, f.ApprovalNote = true, "environment "+env+" requires no approvals under the pinned policy"
		return
	}
	f.ApprovalsRequired = true
	signers := p.SignerList()
	if len(signers) == 0 {
		f.ApprovalNote = "environment " + env + " requires approvals but no signers are pinned"
		return
	}
	executor := ""
	if len(run.Records) > 0 {
		executor = run.Records[0].DBRole
	}
	res, err := policy.CheckAt(ctx, s.Pool, signers, p.Approvals, policy.Target{PlanID: run.PlanID, Command: "migrate", Environment: env}, executor, started)
	if err != nil {
		f.ApprovalNote = err.Error()
		return
	}
	f.ApprovalsOK = true
	f.ApprovalNote = "the approvals valid when it ran (" + started.UTC().Format(time.RFC3339) + ") meet the pinned policy of " + env
	for _, ap := range res.Valid {
		f.Approvals = append(f.Approvals, report.ApprovalFact{Signer: ap.Signer, Role: string(ap.Role), SignedAt: ap.SignedAt, Fingerprint: ap.Fingerprint,
			PlanID: ap.PlanID, Command: ap.Command, Environment: ap.Environment, Database: ap.Database, Expires: ap.Expires})
	}
}

// auditRow is the part of an audit record the migration report reads.
type auditRow struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Event  string    `json:"event"`
	RunID  string    `json:"run_id"`
	PlanID string    `json:"plan_id"`
	Reason string    `json:"reason"`
	Env    string    `json:"environment"`
	Hash   string    `json:"hash"`
	Actor  struct {
		DBRole string `json:"db_role"`
		Name   string `json:"name"`
		OSUser string `json:"os_user"`
	} `json:"actor"`
	Details map[string]string `json:"details"`
}

func readAudit(ctx context.Context, s *Session, where string, args ...any) ([]auditRow, error) {
	rows, err := s.Pool.Query(ctx, `SELECT record::text FROM pgphi.audit_log WHERE `+where+` ORDER BY seq`, args...)
	if err != nil {
		return nil, fmt.Errorf("reading the audit trail: %w", err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading the audit trail: %w", err)
	}
	var out []auditRow
	for _, t := range texts {
		var r auditRow
		if err := json.Unmarshal([]byte(t), &r); err != nil {
			return nil, fmt.Errorf("reading the audit trail: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// migrationRun finds the newest run of `migrate` whose end record names the
// migration with the outcome its history shows (applied, or failed), and
// all that run's records. It returns the run's start time.
func migrationRun(ctx context.Context, s *Session, rec *migrate.Record) (*report.MigrationRun, time.Time, error) {
	key := MigrationRunKey(rec.Name)
	ends, err := readAudit(ctx, s, `record OPERATOR(pg_catalog.->>) 'command' OPERATOR(pg_catalog.=) 'migrate'
		AND (record OPERATOR(pg_catalog.->) 'details') OPERATOR(pg_catalog.?) $1`, key)
	if err != nil || len(ends) == 0 {
		return nil, time.Time{}, err
	}
	want := "outcome=applied"
	if rec.State == "failed" || rec.State == "running" {
		want = "outcome=failed"
	}
	end := ends[len(ends)-1]
	for i := len(ends) - 1; i >= 0; i-- {
		if strings.Contains(ends[i].Details[key], want) {
			end = ends[i]
			break
		}
	}
	all, err := readAudit(ctx, s, `record OPERATOR(pg_catalog.->>) 'run_id' OPERATOR(pg_catalog.=) $1`, end.RunID)
	if err != nil {
		return nil, time.Time{}, err
	}
	entry := end.Details[key]
	run := &report.MigrationRun{RunID: end.RunID, PlanID: end.PlanID, Reason: end.Reason, Subcommand: end.Details["subcommand"], Event: end.Event, Entry: entry, Environment: end.Env}
	for _, field := range strings.Fields(entry) {
		k, v, _ := strings.Cut(field, "=")
		switch k {
		case "sha256":
			run.SHA256 = v
		case "outcome":
			run.Outcome = v
		}
	}
	started := end.Time
	for i, r := range all {
		actor := r.Actor.Name
		if actor == "" {
			actor = r.Actor.OSUser
		}
		run.Records = append(run.Records, report.AuditEntry{Seq: r.Seq, Time: r.Time, Event: r.Event, DBRole: r.Actor.DBRole, Actor: actor, Hash: r.Hash})
		if i == 0 {
			started = r.Time
		}
	}
	return run, started, nil
}

// runLint reads the lint findings the run recorded for the migration; nil
// when it recorded none.
func runLint(ctx context.Context, s *Session, runID, name string) ([]report.LintFact, error) {
	key := MigrationLintKey(name)
	rows, err := readAudit(ctx, s, `record OPERATOR(pg_catalog.->>) 'run_id' OPERATOR(pg_catalog.=) $1
		AND (record OPERATOR(pg_catalog.->) 'details') OPERATOR(pg_catalog.?) $2`, runID, key)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	out := []report.LintFact{}
	if err := json.Unmarshal([]byte(rows[len(rows)-1].Details[key]), &out); err != nil {
		return nil, fmt.Errorf("reading the lint findings of %s from the audit trail: %w", name, err)
	}
	return out, nil
}
