package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/audit"
	"github.com/pgphi/pgphi/config"
	"github.com/pgphi/pgphi/dbconn"
	"github.com/pgphi/pgphi/engine"
	"github.com/pgphi/pgphi/hooks"
	"github.com/pgphi/pgphi/policy"
	"github.com/pgphi/pgphi/redact"
	"github.com/pgphi/pgphi/state"
)

// guardSpec says which compliance steps wrap a command.
type guardSpec struct {
	command   string
	reason    bool     // --reason required
	approvals bool     // plan approvals required by the environment's policy
	validate  bool     // run column validation before executing
	pre       []string // hook phases before execution
	post      string   // hook phase after success
	conns     int      // pool size
}

// outcome is what a guarded command reports for the audit record.
type outcome struct {
	rows    int64
	details map[string]string
}

// guarded runs body inside pgphi's compliance wrapper: connection under the
// TLS policy, role check, reason, approvals, hooks, validation, and an audit
// record at the start and the end. Every refusal exits 4 and is audited.
func (a *app) guarded(ctx context.Context, spec guardSpec, reason string, body func(ctx context.Context, s *session, out *outcome) error) error {
	if spec.reason && strings.TrimSpace(reason) == "" {
		return withCode(ExitUsage, fmt.Errorf("usage: %s needs --reason TEXT: say why (it is recorded in the audit trail)", spec.command))
	}
	// The role check comes before anything reads application tables: an
	// unauthorized attempt is refused and audited, not failed on a privilege.
	s, err := a.openConn(ctx, spec.conns)
	if err != nil {
		return err
	}
	defer s.Close()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	_, err = state.Ensure(ctx, conn)
	conn.Release()
	if err != nil {
		// Roles other than dba may not create schemas; they work with the
		// state a dba has set up.
		var pgErr *pgconn.PgError
		exists, _ := state.Exists(ctx, s.pool)
		if !(errors.As(err, &pgErr) && pgErr.Code == "42501" && exists) {
			return err
		}
	}
	alog, err := audit.Open(ctx, s.pool, s.cfg.Resolve(s.cfg.Audit.File))
	if err != nil {
		return fmt.Errorf("opening the audit trail: %w", err)
	}
	rec := a.baseRecord(ctx, s, spec.command, reason)
	rec.RunID = audit.NewRunID()
	started := false
	start := time.Now()
	finish := func(event string, err error, out *outcome) error {
		r := rec
		r.Event = event
		r.DurationMS = time.Since(start).Milliseconds()
		if out != nil {
			r.Rows, r.Details = out.rows, out.details
		}
		if err != nil {
			r.ErrorClass = errorClass(err)
		}
		if _, aerr := alog.Append(context.WithoutCancel(ctx), r); aerr != nil && !a.mirrorTolerated(spec, aerr) {
			return errors.Join(err, fmt.Errorf("writing the audit record: %w", aerr))
		}
		return err
	}
	// Every run writes a start record and exactly one end record.
	begin := func() error {
		if started {
			return nil
		}
		started = true
		if _, err := alog.Append(ctx, withEvent(rec, "start")); err != nil && !a.mirrorTolerated(spec, err) {
			return fmt.Errorf("writing the audit record: %w", err)
		}
		return nil
	}
	refuse := func(err error) error {
		if berr := begin(); berr != nil {
			return berr
		}
		return finish("refused", withCode(ExitRefused, err), nil)
	}

	if _, err := policy.CheckAccess(ctx, s.pool, roleNames(s.cfg), spec.command, s.cfg.SuperuserAllowed()); err != nil {
		return refuse(err)
	}
	if err := a.resolvePlan(ctx, s); err != nil {
		if berr := begin(); berr != nil {
			return berr
		}
		return finish("failure", err, nil)
	}
	a.describePlan(s, &rec)
	if spec.approvals {
		if err := a.checkApprovals(ctx, s, rec.Actor.Name); err != nil {
			return refuse(err)
		}
	}
	if err := begin(); err != nil {
		return err
	}
	hc := hooks.Context{Command: spec.command, PlanID: s.plan.ID, Environment: s.cfg.Environment, Database: rec.DBName, Actor: rec.Actor.Name, Reason: reason, Tables: rec.Tables}
	hcfg := hookConfig(s.cfg)
	for _, phase := range spec.pre {
		hc.Phase = hooks.Phase(phase)
		if phase == "pre_execute" && spec.validate {
			if err := a.runValidation(ctx, s); err != nil {
				return refuse(err)
			}
		}
		if _, err := hcfg.Run(ctx, hc, redactText); err != nil {
			return refuse(err)
		}
	}
	out := &outcome{details: map[string]string{}}
	if err := body(ctx, s, out); err != nil {
		hc.Phase, hc.Error = "on_error", errorClass(err)
		if _, herr := hcfg.Run(context.WithoutCancel(ctx), hc, redactText); herr != nil {
			a.logf("on_error hook: %v", redact.Error(herr))
		}
		event := "failure"
		if ExitCode(err) == ExitRefused {
			event = "refused"
		}
		return finish(event, err, out)
	}
	if spec.post != "" {
		hc.Phase = hooks.Phase(spec.post)
		if _, herr := hcfg.Run(ctx, hc, redactText); herr != nil {
			a.logf("%s hook: %v", spec.post, redact.Error(herr))
			out.details["post_hook"] = "failed"
		}
	}
	return finish("success", nil, out)
}

func withEvent(r audit.Record, e string) audit.Record { r.Event = e; return r }

func (a *app) baseRecord(ctx context.Context, s *session, command, reason string) audit.Record {
	actor := audit.LocalActor(s.cfg.Actor)
	if actor.Name == "" {
		actor.Name = actor.OSUser
	}
	var dbName string
	_ = s.pool.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&actor.DBRole, &dbName)
	cc := s.pool.Config().ConnConfig
	return audit.Record{
		Command: command, Environment: s.cfg.Environment, Reason: reason,
		Actor: actor, DBHost: cc.Host, DBName: dbName,
	}
}

// describePlan adds the plan id, tables and columns to the audit record.
func (a *app) describePlan(s *session, r *audit.Record) {
	r.PlanID = s.plan.ID
	for _, t := range s.plan.Tables {
		r.Tables = append(r.Tables, t.QualifiedName())
		for _, c := range t.Columns {
			r.Columns = append(r.Columns, t.QualifiedName()+"."+c.Name)
		}
	}
}

// errorClass names what went wrong without any value: SQLSTATE, a policy
// refusal kind, or the Go error's type of failure.
func errorClass(err error) string {
	var pgErr *pgconn.PgError
	var rowErr *engine.RowError
	switch {
	case errors.As(err, &pgErr):
		return "SQLSTATE " + pgErr.Code
	case errors.As(err, &rowErr):
		return "unencryptable value"
	case errors.Is(err, policy.ErrAccessDenied):
		return "policy: access denied"
	case errors.Is(err, policy.ErrApprovalRequired):
		return "policy: approval required"
	case errors.Is(err, hooks.ErrHookFailed):
		return "policy: hook failed"
	case errors.Is(err, engine.ErrRefused):
		return "policy: refused"
	case errors.Is(err, errValidation):
		return "policy: validation failed"
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, dbconn.ErrConnect):
		return "connection"
	}
	var ve *engine.VerifyError
	if errors.As(err, &ve) {
		return "verification mismatch"
	}
	return "error"
}

var errValidation = errors.New("validation failed")

func (a *app) runValidation(ctx context.Context, s *session) error {
	res, err := engine.Validate(ctx, s.pool, s.cfg, s.plan)
	if err != nil {
		return err
	}
	for _, v := range res.Violations {
		a.logf("validation: %s.%s %s: %d rows violate it", v.Table, v.Column, v.Rule, v.Rows)
	}
	if len(res.Violations) > 0 && s.cfg.ValidationFails() {
		return fmt.Errorf("%w: %d rules violated (validation.on_violation: fail)", errValidation, len(res.Violations))
	}
	return nil
}

// roleNames maps pgphi's roles to the configured PostgreSQL group roles.
func roleNames(cfg *config.Config) policy.RoleNames {
	names := policy.DefaultRoleNames()
	for role, group := range cfg.Access.Roles {
		names[policy.Role(role)] = group
	}
	return names
}

func hookConfig(cfg *config.Config) hooks.Config {
	// hooks.Run resolves a relative hook path against Dir, the config
	// file's directory, and never searches PATH.
	hc := hooks.Config{Hooks: map[hooks.Phase][]string{}, Timeout: cfg.Hooks.Timeout, Dir: cfg.Resolve(".")}
	for phase, cmds := range cfg.Hooks.Phases {
		hc.Hooks[hooks.Phase(phase)] = append(hc.Hooks[hooks.Phase(phase)], cmds...)
	}
	return hc
}

// requirements is the approval policy: the config's, else the default
// (production needs a dba and a healthcare_admin).
func requirements(cfg *config.Config) (policy.Requirements, error) {
	if cfg.Approvals.Require != nil {
		return policy.ParseRequirements(cfg.Approvals.Require)
	}
	return policy.DefaultRequirements(), nil
}

func loadSigners(cfg *config.Config) ([]policy.Signer, error) {
	if cfg.Approvals.Signers == "" {
		return nil, nil
	}
	return policy.LoadSigners(cfg.Resolve(cfg.Approvals.Signers))
}

func (a *app) checkApprovals(ctx context.Context, s *session, executor string) error {
	req, err := requirements(s.cfg)
	if err != nil {
		return withCode(ExitUsage, err)
	}
	if len(req[s.cfg.Environment]) == 0 {
		return nil
	}
	signers, err := loadSigners(s.cfg)
	if err != nil {
		return withCode(ExitUsage, err)
	}
	if signers == nil {
		return fmt.Errorf("%w: environment %s requires approvals but approvals.signers is not set", policy.ErrApprovalRequired, s.cfg.Environment)
	}
	_, err = policy.Check(ctx, s.pool, signers, req, s.plan.ID, s.cfg.Environment, executor)
	return err
}

// redactText is the redaction hook output passes through before it is shown.
func redactText(s string) string { return redact.Message(s) }

// reasonOrEnv lets a pipeline give the reason of a long operation in
// $PGPHI_REASON; a search's reason must always be given explicitly.
func reasonOrEnv(flag string) string {
	if strings.TrimSpace(flag) != "" {
		return flag
	}
	return os.Getenv("PGPHI_REASON")
}

// mirrorTolerated lets `pgphi audit ...` run when the file mirror is damaged:
// the record is in the table, and examining the damage is the point. Every
// other command fails loudly instead.
func (a *app) mirrorTolerated(spec guardSpec, err error) bool {
	if spec.command == "audit" && errors.Is(err, audit.ErrMirror) {
		a.logf("warning: the audit mirror file does not match the table (%v); the record was written to the table", err)
		return true
	}
	return false
}
