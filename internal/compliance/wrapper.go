package compliance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/alert"
	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/backup"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/hooks"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/redact"
	"github.com/pgphi/pgphi/internal/state"
)

// Spec says which compliance steps wrap a command.
type Spec struct {
	Command   string
	Reason    bool     // --reason required
	Approvals bool     // plan approvals required by the pinned policy
	Validate  bool     // run column validation before executing
	Pre       []string // hook phases before execution
	Post      string   // hook phase after success
	Conns     int      // pool size
	// NoPlan: the command needs no plan (keys, flags, pins, init).
	NoPlan bool
	// OptionalConfig: the command runs without a config file (then it
	// proposes nothing and works under the pinned policy).
	OptionalConfig bool
	// NoConfig: the command never reads a config file (init writes it).
	NoConfig bool
	// RequireBackup: in production, the command needs a backup verified by
	// restoring it, taken within the pinned backup maximum age.
	RequireBackup bool
	// MismatchOK: the command runs while the config proposes pins other
	// than the pinned ones (pins show, pins set, approve); every decision it
	// makes still reads the pins.
	MismatchOK bool
}

// Outcome is what a wrapped command reports for its audit record.
type Outcome struct {
	Rows    int64
	Details map[string]string // keys [a-z][a-z0-9_.-]*; never values
}

// Session is a loaded config, an open pool, the pins in force and the
// resolved plan of one wrapped run.
type Session struct {
	Cfg  *config.Config
	Pool *pgxpool.Pool
	Plan *engine.Plan

	NoConfig bool           // no config file: Cfg holds defaults and proposes nothing
	Proposed *policy.Pins   // what the config proposes (nil without a config)
	Pinned   *policy.Pinned // the pins in the database (nil: defaults, nothing pinned)
	Pins     *policy.Pins   // the pins in force: Pinned's, or the defaults
	Executor string         // the connected (effective) database role
	Role     policy.Role    // the pgphi role the command runs as

	// Alerts receives the alert thresholds the command crosses; the
	// wrapper records each in the audit trail (event alert) and runs the
	// on_alert hooks, before the run's end record. Commands add their own
	// sinks (metrics, the progress line).
	Alerts *alert.Monitor
}

// Close closes the session's pool.
func (s *Session) Close() {
	if s.Pool != nil {
		s.Pool.Close()
	}
}

// Wrapper runs commands inside the compliance steps. The command line
// supplies how to load the config, connect and resolve the plan.
type Wrapper struct {
	// LoadConfig loads the config; with optional, a missing config file
	// (none named explicitly) is (nil, nil).
	LoadConfig func(optional bool) (*config.Config, error)
	// Connect opens a pool under cfg's TLS policy (cfg nil: no config).
	Connect func(ctx context.Context, cfg *config.Config, conns int) (*pgxpool.Pool, error)
	// ResolvePlan reads the catalog and sets s.Plan.
	ResolvePlan func(ctx context.Context, s *Session) error
	// Refused reports whether a command's own error is a refusal by policy
	// (its end record is "refused", not "failure").
	Refused func(error) bool
	// Logf prints a line for the operator (stderr).
	Logf func(format string, args ...any)
	// Audited, when set, is told of every audit record the run appended:
	// its event (start, success, failure, refused) and, at the end, the
	// error class (empty on success). Metrics count them.
	Audited func(event, errorClass string)
}

func (w *Wrapper) audited(event, class string) {
	if w.Audited != nil {
		w.Audited(event, class)
	}
}

// ErrRefused is wrapped by every refusal of the wrapper (exit 4), and
// ErrUsage by its usage errors (exit 2).
var (
	ErrRefused = errors.New("refused by policy")
	ErrUsage   = errors.New("usage")
	// ErrNoVerifiedBackup is wrapped by the refusal of a command that
	// production lets run only after a recent verified backup.
	ErrNoVerifiedBackup = errors.New("no recent verified backup")
)

// coded marks an error with ErrRefused or ErrUsage without changing its text.
type coded struct {
	kind error
	err  error
}

func (e *coded) Error() string   { return e.err.Error() }
func (e *coded) Unwrap() []error { return []error{e.kind, e.err} }

// Kind returns ErrRefused or ErrUsage: what the command line maps to an
// exit code when this is the outermost coded error.
func (e *coded) Kind() error { return e.kind }

func refused(err error) error {
	if err == nil || errors.Is(err, ErrRefused) {
		return err
	}
	return &coded{kind: ErrRefused, err: err}
}

func usage(err error) error {
	if err == nil {
		return nil
	}
	return &coded{kind: ErrUsage, err: err}
}

// Run runs body inside pgphi's compliance wrapper: connection under the
// TLS policy, role check, reason, approvals, hooks, validation, and an audit
// record at the start and the end. Every refusal exits 4 and is audited. It
// is the only way a command reaches pgphi's state or application data, with
// a config file or without one.
//
// Every security decision reads the pins (policy.Pins) in the database, not
// the config: the config only proposes them. A role that is a member of no
// pgphi group is refused first, before anything reads pgphi's tables, and the
// refusal is recorded through pgphi.audit_refusal.
func (w *Wrapper) Run(ctx context.Context, spec Spec, reason string, body func(ctx context.Context, s *Session, out *Outcome) error) error {
	if spec.Reason && strings.TrimSpace(reason) == "" {
		return usage(fmt.Errorf("usage: %s needs --reason TEXT: say why (it is recorded in the audit trail)", spec.Command))
	}
	// The role check comes before anything reads application tables: an
	// unauthorized attempt is refused and audited, not failed on a privilege.
	s, err := w.open(ctx, spec)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Pool.QueryRow(ctx, "SELECT current_user::text").Scan(&s.Executor); err != nil {
		return err
	}
	var proposedNames policy.RoleNames
	if s.Proposed != nil {
		proposedNames = s.Proposed.Roles
	}
	// Outsiders first: a role in no pgphi group (of the pinned names when
	// it can read them, else of the proposed or default names) is refused
	// before it touches pgphi's schema, and the refusal is audited.
	pinned, perr := policy.LoadPins(ctx, s.Pool)
	if perr != nil && !errors.Is(perr, policy.ErrPinsUnreadable) {
		return perr
	}
	names := proposedNames
	if pinned != nil {
		names = pinned.Roles
	}
	member, err := policy.MemberOfAny(ctx, s.Pool, names)
	if err != nil {
		return err
	}
	if !member || errors.Is(perr, policy.ErrPinsUnreadable) {
		return w.refuseOutsider(ctx, s, spec.Command, names, perr)
	}

	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	_, err = state.Ensure(ctx, conn, state.WithDBAGroup(names.Group(policy.DBA)))
	conn.Release()
	if err != nil {
		// Roles other than dba may not create schemas; they work with the
		// state a dba has set up.
		var pgErr *pgconn.PgError
		exists, _ := state.Exists(ctx, s.Pool)
		if !(errors.As(err, &pgErr) && pgErr.Code == "42501" && exists) {
			return err
		}
	}
	alog, err := audit.Open(ctx, s.Pool, s.Cfg.Resolve(s.Cfg.Audit.File))
	if err != nil {
		return fmt.Errorf("opening the audit trail: %w", err)
	}
	rec := w.baseRecord(ctx, s, spec.Command, reason)
	rec.RunID = audit.NewRunID()
	started := false
	start := time.Now()
	finish := func(event string, err error, out *Outcome) error {
		r := rec
		r.Event = event
		r.DurationMS = time.Since(start).Milliseconds()
		if out != nil {
			r.Rows, r.Details = out.Rows, out.Details
		}
		if err != nil {
			r.ErrorClass = errorClass(err)
		}
		if _, aerr := alog.Append(context.WithoutCancel(ctx), r); aerr != nil && !w.mirrorTolerated(spec, aerr) {
			return errors.Join(err, fmt.Errorf("writing the audit record: %w", aerr))
		}
		w.audited(event, r.ErrorClass)
		return err
	}
	// Every run writes a start record and exactly one end record.
	begin := func() error {
		if started {
			return nil
		}
		started = true
		if _, err := alog.Append(ctx, withEvent(rec, "start")); err != nil && !w.mirrorTolerated(spec, err) {
			return fmt.Errorf("writing the audit record: %w", err)
		}
		w.audited("start", "")
		return nil
	}
	refuse := func(err error) error {
		if berr := begin(); berr != nil {
			return berr
		}
		return finish("refused", refused(err), nil)
	}

	// The pins: pinned at the first run by a dba; afterwards the config
	// only proposes, and a difference refuses the command.
	if err := w.reconcilePins(ctx, s, spec); err != nil {
		if w.Refused(err) || errors.Is(err, policy.ErrPinsMismatch) || errors.Is(err, policy.ErrAccessDenied) {
			return refuse(err)
		}
		if berr := begin(); berr != nil {
			return berr
		}
		return finish("failure", err, nil)
	}
	rec.Environment = s.Pins.Environment
	role, err := policy.CheckAccess(ctx, s.Pool, s.Pins.Roles, spec.Command, s.Pins.AllowSuperuser)
	if err != nil {
		return refuse(err)
	}
	s.Role = role
	if !spec.NoPlan {
		if err := w.ResolvePlan(ctx, s); err != nil {
			if berr := begin(); berr != nil {
				return berr
			}
			return finish("failure", err, nil)
		}
		w.describePlan(s, &rec)
	} else {
		s.Plan = &engine.Plan{}
	}
	if spec.Approvals {
		if err := w.CheckApprovals(ctx, s, s.Plan.ID, spec.Command); err != nil {
			return refuse(err)
		}
	}
	if spec.RequireBackup && s.Pins.Environment == "production" {
		st, err := backup.LatestVerified(ctx, s.Pool, s.Pins.MaxBackupAge())
		if err != nil {
			if berr := begin(); berr != nil {
				return berr
			}
			return finish("failure", err, nil)
		}
		if !st.OK {
			return refuse(fmt.Errorf("%w: %s in production needs a backup verified by restoring it within the pinned maximum age %s: %s (pgphi backup, then pgphi backup verify)",
				ErrNoVerifiedBackup, spec.Command, st.MaxAge, st.Describe()))
		}
	}
	if err := begin(); err != nil {
		return err
	}
	hc := hooks.Context{Command: spec.Command, PlanID: s.Plan.ID, Environment: s.Cfg.Environment, Database: rec.DBName, Actor: rec.Actor.Name, Reason: reason, Tables: rec.Tables}
	hcfg := hookConfig(s.Cfg)
	for _, phase := range spec.Pre {
		hc.Phase = hooks.Phase(phase)
		if phase == "pre_execute" && spec.Validate {
			if err := w.runValidation(ctx, s); err != nil {
				return refuse(err)
			}
		}
		if _, err := hcfg.Run(ctx, hc, redactText); err != nil {
			return refuse(err)
		}
	}
	s.Alerts = alert.New(ctx)
	s.Alerts.OnFireAsync(func(ctx context.Context, a alert.Alert) {
		r := withEvent(rec, audit.EventAlert)
		r.DurationMS = time.Since(start).Milliseconds()
		r.Details = alertDetails(a)
		if a.Table != "" {
			r.Tables, r.Columns = []string{a.Table}, nil
		}
		if _, err := alog.Append(ctx, r); err != nil && !w.mirrorTolerated(spec, err) {
			w.Logf("recording the alert in the audit trail: %v", redact.Error(err))
		} else {
			w.audited(audit.EventAlert, "")
		}
		ahc := hc
		ahc.Phase, ahc.Alert = hooks.OnAlert, &hooks.Alert{Threshold: string(a.Threshold), Measured: a.Measured, Limit: a.Limit, Unit: a.Unit, Table: a.Table}
		if _, herr := hcfg.Run(ctx, ahc, redactText); herr != nil {
			w.Logf("on_alert hook: %v", redact.Error(herr))
		}
	})
	out := &Outcome{Details: map[string]string{}}
	bodyStart := time.Now()
	err = body(ctx, s, out)
	hc.RowsAffected, hc.DurationMS, hc.Details = out.Rows, time.Since(bodyStart).Milliseconds(), out.Details
	// Every alert is recorded before the end record.
	s.Alerts.Close()
	if fired := s.Alerts.Firing(); len(fired) > 0 {
		var names []string
		for _, a := range fired {
			if !slices.Contains(names, string(a.Threshold)) {
				names = append(names, string(a.Threshold))
			}
		}
		out.Details["alerts"] = strings.Join(names, ",")
	}
	if err != nil {
		hc.Phase, hc.Error = "on_error", errorClass(err)
		if _, herr := hcfg.Run(context.WithoutCancel(ctx), hc, redactText); herr != nil {
			w.Logf("on_error hook: %v", redact.Error(herr))
		}
		event := "failure"
		if w.Refused(err) {
			event = "refused"
		}
		return finish(event, err, out)
	}
	if spec.Post != "" {
		hc.Phase = hooks.Phase(spec.Post)
		if _, herr := hcfg.Run(ctx, hc, redactText); herr != nil {
			w.Logf("%s hook: %v", spec.Post, redact.Error(herr))
			out.Details["post_hook"] = "failed"
		}
	}
	return finish("success", nil, out)
}

// redactText is the redaction hook output passes through before it is shown.
func redactText(s string) string { return redact.Message(s) }

// mirrorTolerated lets `pgphi audit ...` run when the file mirror is damaged:
// the record is in the table, and examining the damage is the point. Every
// other command fails loudly instead.
func (w *Wrapper) mirrorTolerated(spec Spec, err error) bool {
	if spec.Command == "audit" && errors.Is(err, audit.ErrMirror) {
		w.Logf("warning: the audit mirror file does not match the table (%v); the record was written to the table", err)
		return true
	}
	return false
}

// open loads the config (unless the command reads none, or it may
// run without one and there is none) and connects under its TLS policy.
func (w *Wrapper) open(ctx context.Context, spec Spec) (*Session, error) {
	var cfg *config.Config
	if !spec.NoConfig {
		var err error
		if spec.OptionalConfig {
			cfg, err = w.LoadConfig(true)
		} else {
			cfg, err = w.LoadConfig(false)
		}
		if err != nil {
			return nil, err
		}
	}
	s := &Session{}
	if cfg != nil {
		p, err := proposedPins(cfg)
		if err != nil {
			return nil, err
		}
		s.Proposed = &p
	}
	pool, err := w.Connect(ctx, cfg, spec.Conns)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		d := config.Defaults()
		d.Audit.File = "" // no config directory to mirror into
		cfg, s.NoConfig = &d, true
	}
	s.Cfg, s.Pool = cfg, pool
	return s, nil
}
