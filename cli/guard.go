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
	// noPlan: the command needs no plan (keys, flags, pins, init).
	noPlan bool
	// optionalConfig: the command runs without a config file (then it
	// proposes nothing and works under the pinned policy).
	optionalConfig bool
	// noConfig: the command never reads a config file (init writes it).
	noConfig bool
	// mismatchOK: the command runs while the config proposes pins other
	// than the pinned ones (pins show, pins set, approve); every decision it
	// makes still reads the pins.
	mismatchOK bool
}

// outcome is what a guarded command reports for the audit record.
type outcome struct {
	rows    int64
	details map[string]string
}

// guarded runs body inside pgphi's compliance wrapper: connection under the
// TLS policy, role check, reason, approvals, hooks, validation, and an audit
// record at the start and the end. Every refusal exits 4 and is audited. It
// is the only way a command reaches pgphi's state or application data, with
// a config file or without one.
//
// Every security decision reads the pins (policy.Pins) in the database, not
// the config: the config only proposes them. A role that is a member of no
// pgphi group is refused first, before anything reads pgphi's tables, and the
// refusal is recorded through pgphi.audit_refusal.
func (a *app) guarded(ctx context.Context, spec guardSpec, reason string, body func(ctx context.Context, s *session, out *outcome) error) error {
	if spec.reason && strings.TrimSpace(reason) == "" {
		return withCode(ExitUsage, fmt.Errorf("usage: %s needs --reason TEXT: say why (it is recorded in the audit trail)", spec.command))
	}
	// The role check comes before anything reads application tables: an
	// unauthorized attempt is refused and audited, not failed on a privilege.
	s, err := a.openGuarded(ctx, spec)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.pool.QueryRow(ctx, "SELECT current_user::text").Scan(&s.executor); err != nil {
		return err
	}
	var proposedNames policy.RoleNames
	if s.proposed != nil {
		proposedNames = s.proposed.Roles
	}
	// Outsiders first: a role in no pgphi group (of the pinned names when
	// it can read them, else of the proposed or default names) is refused
	// before it touches pgphi's schema, and the refusal is audited.
	pinned, perr := policy.LoadPins(ctx, s.pool)
	if perr != nil && !errors.Is(perr, policy.ErrPinsUnreadable) {
		return perr
	}
	names := proposedNames
	if pinned != nil {
		names = pinned.Roles
	}
	member, err := policy.MemberOfAny(ctx, s.pool, names)
	if err != nil {
		return err
	}
	if !member || errors.Is(perr, policy.ErrPinsUnreadable) {
		return a.refuseOutsider(ctx, s, spec.command, names, perr)
	}

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	_, err = state.Ensure(ctx, conn, state.WithDBAGroup(names.Group(policy.DBA)))
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

	// The pins: pinned at the first run by a dba; afterwards the config
	// only proposes, and a difference refuses the command.
	if err := a.reconcilePins(ctx, s, spec); err != nil {
		if ExitCode(err) == ExitRefused || errors.Is(err, policy.ErrPinsMismatch) || errors.Is(err, policy.ErrAccessDenied) {
			return refuse(err)
		}
		if berr := begin(); berr != nil {
			return berr
		}
		return finish("failure", err, nil)
	}
	rec.Environment = s.pins.Environment
	role, err := policy.CheckAccess(ctx, s.pool, s.pins.Roles, spec.command, s.pins.AllowSuperuser)
	if err != nil {
		return refuse(err)
	}
	s.role = role
	if !spec.noPlan {
		if err := a.resolvePlan(ctx, s); err != nil {
			if berr := begin(); berr != nil {
				return berr
			}
			return finish("failure", err, nil)
		}
		a.describePlan(s, &rec)
	} else {
		s.plan = &engine.Plan{}
	}
	if spec.approvals {
		if err := a.checkApprovals(ctx, s, s.plan.ID, spec.command); err != nil {
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
	case errors.Is(err, policy.ErrAccessDenied), errors.Is(err, policy.ErrPinsUnreadable):
		return "policy: access denied"
	case errors.Is(err, policy.ErrPinsMismatch):
		return "policy: pins differ"
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

func hookConfig(cfg *config.Config) hooks.Config {
	// hooks.Run resolves a relative hook path against Dir, the config
	// file's directory, and never searches PATH.
	hc := hooks.Config{Hooks: map[hooks.Phase][]string{}, Timeout: cfg.Hooks.Timeout, Dir: cfg.Resolve(".")}
	for phase, cmds := range cfg.Hooks.Phases {
		hc.Hooks[hooks.Phase(phase)] = append(hc.Hooks[hooks.Phase(phase)], cmds...)
	}
	return hc
}

// checkApprovals checks the approvals of id for command under the pins:
// their requirements for the pinned environment, their signers, and the
// connected database role as the executor.
func (a *app) checkApprovals(ctx context.Context, s *session, id, command string) error {
	_, err := a.approvalResult(ctx, s, id, command)
	return err
}

func (a *app) approvalResult(ctx context.Context, s *session, id, command string) (*policy.Result, error) {
	p := s.pins
	if len(p.Approvals[p.Environment]) == 0 {
		return &policy.Result{}, nil
	}
	signers := p.SignerList()
	if len(signers) == 0 {
		return nil, fmt.Errorf("%w: environment %s requires approvals but no signers are pinned (approvals.signers, then `pgphi pins set --from-config`)", policy.ErrApprovalRequired, p.Environment)
	}
	res, err := policy.Check(ctx, s.pool, signers, p.Approvals, policy.Target{PlanID: id, Command: command, Environment: p.Environment}, s.executor)
	if err == nil {
		for _, n := range res.Ignored {
			a.logf("note: %s", n)
		}
	}
	return res, err
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

// openGuarded loads the config (unless the command reads none, or it may
// run without one and there is none) and connects under its TLS policy.
func (a *app) openGuarded(ctx context.Context, spec guardSpec) (*session, error) {
	var cfg *config.Config
	if !spec.noConfig {
		var err error
		if spec.optionalConfig {
			cfg, err = a.loadConfigOptional()
		} else {
			cfg, err = a.loadConfig()
		}
		if err != nil {
			return nil, err
		}
	}
	s := &session{}
	if cfg != nil {
		p, err := proposedPins(cfg)
		if err != nil {
			return nil, err
		}
		s.proposed = &p
	}
	pool, err := a.connect(ctx, cfg, spec.conns)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		d := config.Defaults()
		d.Audit.File = "" // no config directory to mirror into
		cfg, s.noConfig = &d, true
	}
	s.cfg, s.pool = cfg, pool
	return s, nil
}

// proposedPins are the pins cfg proposes: environment, approval policy
// (default: production needs a dba and a healthcare_admin), signers, role
// names, allow_superuser and the audit public key.
func proposedPins(cfg *config.Config) (policy.Pins, error) {
	p := policy.Pins{Environment: cfg.Environment, AllowSuperuser: cfg.SuperuserAllowed(), AuditPublicKey: cfg.Audit.PublicKey}
	fail := func(err error) (policy.Pins, error) {
		return policy.Pins{}, withCode(ExitUsage, fmt.Errorf("%s: %w", cfg.Path, err))
	}
	var err error
	p.Approvals = policy.DefaultRequirements()
	if cfg.Approvals.Require != nil {
		if p.Approvals, err = policy.ParseRequirements(cfg.Approvals.Require); err != nil {
			return fail(err)
		}
	}
	if p.Roles, err = policy.ParseRoleNames(cfg.Access.Roles); err != nil {
		return fail(err)
	}
	if cfg.Approvals.Signers != "" {
		signers, err := policy.LoadSigners(cfg.Resolve(cfg.Approvals.Signers))
		if err != nil {
			return policy.Pins{}, withCode(ExitUsage, err)
		}
		p.Signers = policy.PinSigners(signers)
	}
	if _, _, err := p.Encode(); err != nil {
		return fail(err)
	}
	return p, nil
}

// refuseOutsider refuses a role that is a member of no pgphi group (or
// cannot read the pins at all) and records the refusal through
// pgphi.audit_refusal, the one audit function every role may execute.
func (a *app) refuseOutsider(ctx context.Context, s *session, command string, names policy.RoleNames, perr error) error {
	err := fmt.Errorf("%w: %s needs a member of a pgphi group (%s, %s or %s); connected as database role %s, a member of none",
		policy.ErrAccessDenied, command, names.Group(policy.DBA), names.Group(policy.HealthcareAdmin), names.Group(policy.AuditOfficer), s.executor)
	if perr != nil {
		err = fmt.Errorf("%w: connected as database role %s, which may not read the pinned security policy of pgphi (a dba grants the pgphi groups with `pgphi roles init`)",
			policy.ErrAccessDenied, s.executor)
	}
	if aerr := audit.AppendRefusal(ctx, s.pool, command); aerr != nil {
		return withCode(ExitRefused, errors.Join(err, fmt.Errorf("the refusal could not be audited: %w", aerr)))
	}
	return withCode(ExitRefused, err)
}

// reconcilePins sets the session's pins: the pinned ones; on the first run
// by a dba, the config's proposal, pinned now; without a config and with
// nothing pinned, the defaults (nothing is pinned). A config that proposes
// other pins is refused (unless spec.mismatchOK), and so is any run against
// pinned production that did not connect under production's TLS policy.
func (a *app) reconcilePins(ctx context.Context, s *session, spec guardSpec) error {
	pinned, err := policy.LoadPins(ctx, s.pool)
	if errors.Is(err, policy.ErrPinsUnreadable) {
		return withCode(ExitRefused, err)
	}
	if err != nil {
		return err
	}
	if pinned == nil {
		if s.proposed == nil {
			d := policy.DefaultPins()
			s.pins = &d
			return nil
		}
		// The first run of a dba pins what the config proposes.
		if _, err := policy.CheckAccess(ctx, s.pool, s.proposed.Roles, "pins set", s.proposed.AllowSuperuser); err != nil {
			return withCode(ExitRefused, fmt.Errorf("nothing is pinned yet, and only a dba pins the security policy (at roles init or its first run): %w", err))
		}
		if err := policy.PinInitial(ctx, s.pool, *s.proposed); err != nil {
			return err
		}
		if pinned, err = policy.LoadPins(ctx, s.pool); err != nil {
			return err
		}
		if pinned == nil {
			return errors.New("the pins vanished after pinning")
		}
		a.logf("pinned the security policy %s from %s (environment, approvals, signers, role names, allow_superuser, audit key): `pgphi pins show`", pinned.ID, s.cfg.Path)
	}
	s.pinned, s.pins = pinned, &pinned.Pins
	proposedEnv := "none (no config file)"
	if s.proposed != nil {
		proposedEnv = s.proposed.Environment
	}
	if config.IsProductionEnvironment(pinned.Environment) && (s.proposed == nil || !config.IsProductionEnvironment(s.proposed.Environment)) {
		s.pool.Close()
		return withCode(ExitRefused, fmt.Errorf("%w (pins %s): the pinned environment is production, but this run connected under the TLS policy of environment %s: refused and disconnected; run with a config that says environment: production",
			policy.ErrPinsMismatch, pinned.ID, proposedEnv))
	}
	if s.proposed != nil {
		if d := policy.Diff(pinned.Pins, *s.proposed); len(d) > 0 {
			if !spec.mismatchOK {
				return policy.MismatchError(pinned, d)
			}
		}
	}
	// Where the config and the pins overlap, the pins are what counts.
	s.cfg.Environment = pinned.Environment
	return nil
}
