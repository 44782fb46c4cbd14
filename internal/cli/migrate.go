package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/compliance"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/migrate"
	"github.com/pgphi/pgphi/internal/migrate/lint"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/report"
)

// migrateOpts are the flags every `pgphi migrate` subcommand shares.
type migrateOpts struct {
	dir         string
	lockWait    time.Duration
	lockTimeout time.Duration
	reason      string
}

func (a *app) migrateCommand() *cobra.Command {
	o := &migrateOpts{}
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Versioned schema migrations (NNN_name.up.sql / .down.sql) inside the compliance wrapper",
	}
	cmd.PersistentFlags().StringVar(&o.dir, "dir", "migrations", "the migrations directory")
	cmd.PersistentFlags().DurationVar(&o.lockWait, "lock-wait", 60*time.Second, "how long to wait for another runner")
	cmd.PersistentFlags().DurationVar(&o.lockTimeout, "lock-timeout", 0, "how long DDL waits for a table lock before retrying (default apply.lock_timeout, 2s)")
	cmd.PersistentFlags().StringVar(&o.reason, "reason", "", "why (required for up, down and baseline; audited; default $PGPHI_REASON)")
	cmd.AddCommand(a.migrateNew(o), a.migrateUp(o), a.migrateDown(o), a.migrateStatus(o), a.migrateVerify(o),
		a.migrateLint(o), a.migrateBaseline(o), a.migrateHash(o))
	for _, c := range cmd.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	return cmd
}

// migrateErr maps the migrate package's errors to exit codes.
func migrateErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, migrate.ErrTampered), errors.Is(err, migrate.ErrDir), errors.Is(err, migrate.ErrParse):
		return withCode(ExitUsage, err)
	}
	return err
}

func readDir(o *migrateOpts) (*migrate.Dir, error) {
	d, err := migrate.ReadDir(o.dir)
	return d, migrateErr(err)
}

// migrateRun runs body in the compliance wrapper; the plan id approvals
// bind is planFn's (the files the run would change and the database).
func (a *app) migrateRun(ctx context.Context, sub string, spec compliance.Spec, o *migrateOpts, planFn func(ctx context.Context, s *session) (string, error), body func(ctx context.Context, s *session, out *outcome) error) error {
	w := a.wrapper()
	w.ResolvePlan = func(ctx context.Context, s *session) error {
		id := ""
		if planFn != nil {
			var err error
			if id, err = planFn(ctx, s); err != nil {
				return err
			}
		}
		s.Plan = &engine.Plan{ID: id}
		return nil
	}
	spec.Command, spec.OptionalConfig = "migrate", true
	if spec.Conns == 0 {
		spec.Conns = 3
	}
	return w.Run(ctx, spec, reasonOrEnv(o.reason), func(ctx context.Context, s *session, out *outcome) error {
		out.Details["subcommand"] = sub
		return body(ctx, s, out)
	})
}

func (a *app) runnerOptions(s *session, o *migrateOpts) migrate.Options {
	lt := o.lockTimeout
	if lt <= 0 {
		lt = s.Cfg.Apply.LockTimeout
	}
	// The same actor the audit record names.
	la := audit.LocalActor(s.Cfg.Actor)
	actor := la.Name
	if actor == "" {
		actor = la.OSUser
	}
	opt := migrate.Options{Actor: actor, LockWait: o.lockWait, LockTimeout: lt, Retries: s.Cfg.Apply.DDLRetries, Logf: a.logf}
	if a.metrics != nil {
		opt.Observer = a.metrics
		a.metrics.SetPlan(s.Plan.ID, nil)
	}
	return opt
}

func openRunner(ctx context.Context, s *session, d *migrate.Dir, opt migrate.Options) (*migrate.Runner, error) {
	r, err := migrate.Open(ctx, s.Pool, d, opt)
	if errors.Is(err, migrate.ErrLocked) || errors.Is(err, migrate.ErrPooler) {
		return nil, withCode(ExitFailed, err)
	}
	return r, migrateErr(err)
}

// planOf is the plan id of the files a run would change.
func planOf(ctx context.Context, s *session, direction string, files []*migrate.Migration) (string, error) {
	sysid, db, err := policy.DatabaseIdentity(ctx, s.Pool)
	if err != nil {
		return "", err
	}
	return migrate.PlanID(direction, sysid, db, files), nil
}

// lintContext is what lint knows of PHI: pgphi.yaml's columns and, with a
// session, which of them cleanup has removed the plaintext of.
func lintContext(ctx context.Context, s *session, cfg *config.Config) lint.Context {
	var cleaned map[string]bool
	if s != nil {
		if c, err := engine.LoadCleaned(ctx, s.Pool); err == nil {
			cleaned = map[string]bool{}
			for k := range c {
				cleaned[k] = true
			}
		}
	}
	return lint.FromConfig(cfg, cleaned)
}

func printFindings(w io.Writer, fs []lint.Finding) {
	for _, f := range fs {
		tag := string(f.Severity)
		if f.Ignored {
			tag = "ignored (" + f.Reason + ")"
		}
		fmt.Fprintf(w, "%s:%d:%d: %s: %s: %s\n", f.File, f.Line, f.Col, tag, f.Rule, f.Message)
	}
}

// detailKey is the audit details key of a migration's entry.
func detailKey(name string) string { return compliance.MigrationRunKey(name) }

// recordLint puts each migration's lint findings in the run's audit
// record (rule, severity, position, suppression reason; never the message).
func recordLint(out *outcome, todo []*migrate.Migration, findings []lint.Finding) error {
	for _, m := range todo {
		facts := []report.LintFact{}
		for _, f := range findings {
			if f.File == m.UpFile {
				facts = append(facts, report.LintFact{Rule: f.Rule, Severity: string(f.Severity), Line: f.Line, Col: f.Col, Ignored: f.Ignored, Reason: f.Reason})
			}
		}
		b, err := json.Marshal(facts)
		if err != nil {
			return err
		}
		out.Details[compliance.MigrationLintKey(m.Name)] = string(b)
	}
	return nil
}

func lintFiles(lc lint.Context, files []*migrate.Migration) ([]lint.Finding, []string, error) {
	f, adds, err := lint.Migrations(lc, files)
	return f, adds, migrateErr(err)
}

func (a *app) migrateNew(o *migrateOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "new NAME",
		Short: "Create the next NNN_NAME.up.sql and .down.sql and update pgphi.sum",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			paths, err := migrate.New(o.dir, args[0])
			if err != nil {
				return migrateErr(err)
			}
			for _, p := range paths {
				fmt.Fprintln(a.stdout, p)
			}
			a.logf("after editing them, run `pgphi migrate hash` to record them in %s", filepath.Join(o.dir, migrate.SumFile))
			return nil
		},
	}
}

func (a *app) migrateHash(o *migrateOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "hash",
		Short: "Rewrite pgphi.sum for the directory as it is (after writing or fixing a pending migration)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := readDir(o)
			if err != nil {
				return err
			}
			if err := d.WriteSum(); err != nil {
				return migrateErr(err)
			}
			fmt.Fprintf(a.stdout, "wrote %s (%d migrations)\n", filepath.Join(o.dir, migrate.SumFile), len(d.Migrations))
			return nil
		},
	}
}

func (a *app) migrateUp(o *migrateOpts) *cobra.Command {
	var to int64
	var dry bool
	var mo metricsOpt
	cmd := &cobra.Command{
		Use:   "up [--to N] [--dry-run]",
		Short: "Lint, then apply pending migrations (each in its own transaction, or statement by statement where needed)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := readDir(o)
			if err != nil {
				return err
			}
			if err := migrateErr(d.CheckSum()); err != nil {
				return err
			}
			_, stopMetrics, err := a.startMetrics(cmd.Context(), &mo, "migrate")
			if err != nil {
				return err
			}
			defer stopMetrics()
			pending := func(ctx context.Context, s *session) ([]*migrate.Migration, error) {
				h, err := migrate.History(ctx, s.Pool)
				return migrate.Pending(d, h, to), err
			}
			planFn := func(ctx context.Context, s *session) (string, error) {
				p, err := pending(ctx, s)
				if err != nil {
					return "", err
				}
				return planOf(ctx, s, "up", p)
			}
			spec := compliance.Spec{Reason: !dry, Approvals: !dry, Pre: []string{"pre_execute"}, Post: "post_execute"}
			sub := "up"
			if dry {
				spec.Pre, spec.Post, sub = nil, "", "up --dry-run"
			}
			return a.migrateRun(cmd.Context(), sub, spec, o, planFn, func(ctx context.Context, s *session, out *outcome) error {
				r, err := openRunner(ctx, s, d, a.runnerOptions(s, o))
				if err != nil {
					return err
				}
				defer r.Close(ctx)
				todo := migrate.Pending(d, r.History(), to)
				if len(todo) == 0 {
					fmt.Fprintln(a.stdout, "nothing to migrate: the database is up to date")
					return nil
				}
				// Approvals bind the files: another runner may have applied
				// some while this one waited for the lock.
				if id, err := planOf(ctx, s, "up", todo); err != nil {
					return err
				} else if id != s.Plan.ID {
					return withCode(ExitRefused, fmt.Errorf("the pending migrations changed while waiting for the lock (plan %s, now %s): run again", s.Plan.ID, id))
				}
				findings, adds, err := lintFiles(lintContext(ctx, s, s.Cfg), todo)
				if err != nil {
					return err
				}
				printFindings(a.stderr, findings)
				var ignored []string
				for _, f := range findings {
					if f.Ignored {
						ignored = append(ignored, fmt.Sprintf("%s:%d %s: %s", f.File, f.Line, f.Rule, f.Reason))
					}
				}
				if len(ignored) > 0 {
					out.Details["lint_ignored"] = strings.Join(ignored, "; ")
				}
				if lint.Blocking(findings, config.IsProductionEnvironment(s.Pins.Environment)) {
					return withCode(ExitRefused, errors.New("lint errors block the migration (in production every error, elsewhere those that keep PHI protected): fix them or suppress one with `-- pgphi:ignore RULE reason`"))
				}
				out.Details["migrations"] = migrate.Names(todo)
				if dry {
					fmt.Fprintf(a.stdout, "plan %s: %s (approvals of `migrate up` sign this id: pgphi approve %s --command migrate)\n", s.Plan.ID, migrate.Names(todo), s.Plan.ID)
					res, err := r.DryRun(ctx, to)
					if err != nil {
						return migrateErr(err)
					}
					for _, m := range res.Migrations {
						fmt.Fprintf(a.stdout, "dry run: %s: %d statements, %d rows (rolled back)\n", m.Name, m.Statements, m.Rows)
					}
					for _, sk := range res.Skipped {
						fmt.Fprintf(a.stdout, "dry run: not tried (cannot run in a transaction): %s\n", sk)
					}
					return nil
				}
				if err := recordLint(out, todo, findings); err != nil {
					return err
				}
				out.Details["migration_name"] = todo[len(todo)-1].Name
				out.Details["tables_modified"] = strings.Join(migrate.TablesOf(todo), ", ")
				res, err := r.Up(ctx, to)
				out.Rows = res.Rows()
				var stmts int
				for _, m := range res.Migrations {
					stmts += m.Statements
					fmt.Fprintf(a.stdout, "applied %s (sha256 %s): %d statements, %d rows, %s\n", m.Name, m.SHA256, m.Statements, m.Rows, m.Duration.Round(time.Millisecond))
					// One entry per migration in the audit record: id, hash,
					// statements, rows, duration, outcome.
					out.Details[detailKey(m.Name)] = fmt.Sprintf("sha256=%s statements=%d rows=%d duration_ms=%d resumed=%d outcome=applied", m.SHA256, m.Statements, m.Rows, m.Duration.Milliseconds(), m.Resumed)
				}
				var me *migrate.MigrationError
				if errors.As(err, &me) {
					out.Details[detailKey(strings.TrimSuffix(me.File, ".up.sql"))] = fmt.Sprintf("outcome=failed statement=%d error_class=%s", me.Statement, migrate.ErrorClass(err))
				}
				out.Details["statements"] = strconv.Itoa(stmts)
				if err != nil {
					return migrateErr(err)
				}
				if len(adds) > 0 {
					fmt.Fprintf(a.stdout, "%s are listed in %s and hold plaintext until encrypted: run `pgphi apply`\n", strings.Join(adds, ", "), s.Cfg.Path)
				}
				return nil
			})
		},
	}
	cmd.Flags().Int64Var(&to, "to", -1, "apply up to this version")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "run in one transaction and roll back")
	mo.register(cmd)
	return cmd
}

func (a *app) migrateDown(o *migrateOpts) *cobra.Command {
	var to int64
	var steps int
	var mo metricsOpt
	cmd := &cobra.Command{
		Use:   "down (--to N | --steps K)",
		Short: "Revert applied migrations with their down files, newest first",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (to < 0) == (steps <= 0) {
				return withCode(ExitUsage, errors.New("usage: pgphi migrate down --to N (keep N and below) or --steps K"))
			}
			d, err := readDir(o)
			if err != nil {
				return err
			}
			_, stopMetrics, err := a.startMetrics(cmd.Context(), &mo, "migrate")
			if err != nil {
				return err
			}
			defer stopMetrics()
			files := func(h []migrate.Record) []*migrate.Migration {
				var out []*migrate.Migration
				for _, r := range migrate.ToRevert(d, h, to, steps) {
					if m := d.Find(r.Version); m != nil {
						out = append(out, m)
					}
				}
				return out
			}
			planFn := func(ctx context.Context, s *session) (string, error) {
				h, err := migrate.History(ctx, s.Pool)
				if err != nil {
					return "", err
				}
				return planOf(ctx, s, "down", files(h))
			}
			spec := compliance.Spec{Reason: true, Approvals: true, Pre: []string{"pre_execute"}, Post: "post_execute"}
			return a.migrateRun(cmd.Context(), "down", spec, o, planFn, func(ctx context.Context, s *session, out *outcome) error {
				r, err := openRunner(ctx, s, d, a.runnerOptions(s, o))
				if err != nil {
					return err
				}
				defer r.Close(ctx)
				if id, err := planOf(ctx, s, "down", files(r.History())); err != nil {
					return err
				} else if id != s.Plan.ID {
					return withCode(ExitRefused, fmt.Errorf("the applied migrations changed while waiting for the lock (plan %s, now %s): run again", s.Plan.ID, id))
				}
				res, err := r.Down(ctx, to, steps)
				out.Rows = res.Rows()
				var names []string
				for _, m := range res.Migrations {
					names = append(names, m.Name)
					fmt.Fprintf(a.stdout, "reverted %s: %d statements, %d rows, %s\n", m.Name, m.Statements, m.Rows, m.Duration.Round(time.Millisecond))
				}
				out.Details["migrations"] = strings.Join(names, ", ")
				return migrateErr(err)
			})
		},
	}
	cmd.Flags().Int64Var(&to, "to", -1, "revert every migration above this version")
	cmd.Flags().IntVar(&steps, "steps", 0, "revert this many migrations")
	mo.register(cmd)
	return cmd
}

func (a *app) migrateStatus(o *migrateOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Every migration: pending, applied, failed (at which statement), adopted",
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := readDir(o)
			if err != nil {
				return err
			}
			return a.migrateRun(cmd.Context(), "status", compliance.Spec{}, o, nil, func(ctx context.Context, s *session, out *outcome) error {
				h, err := migrate.History(ctx, s.Pool)
				if err != nil {
					return err
				}
				entries := migrate.Status(d, h)
				pending := migrate.Pending(d, h, -1)
				planID := ""
				if len(pending) > 0 {
					if planID, err = planOf(ctx, s, "up", pending); err != nil {
						return err
					}
				}
				if asJSON {
					return json.NewEncoder(a.stdout).Encode(map[string]any{"dir": d.Path, "migrations": entries, "check": errString(migrate.Check(d, h)), "up_plan_id": planID})
				}
				if planID != "" {
					fmt.Fprintf(a.stdout, "%d pending: plan %s (approvals of `migrate up` sign this id)\n\n", len(pending), planID)
				}
				tw := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tNAME\tSTATE\tAPPLIED AT\tBY\tSTATEMENTS\tROWS\tERROR")
				for _, e := range entries {
					at, by, st, rows, ec := "", "", "", "", ""
					if r := e.Record; r != nil && e.State != "pending" {
						if r.FinishedAt != nil {
							at = r.FinishedAt.UTC().Format(time.RFC3339)
						}
						by = r.AppliedByRole + " (" + r.AppliedByActor + ")"
						st = fmt.Sprintf("%d/%d", r.StatementsDone, r.StatementsTotal)
						rows = strconv.FormatInt(r.RowsAffected, 10)
						ec = r.ErrorClass
						if r.FailedStatement != nil {
							ec += fmt.Sprintf(" at statement %d", *r.FailedStatement)
						}
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Version, e.Name, e.State, at, by, st, rows, ec)
				}
				tw.Flush()
				if err := migrate.Check(d, h); err != nil {
					return migrateErr(err)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func (a *app) migrateVerify(o *migrateOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the sum file, the applied files' hashes, unfinished runs and INVALID indexes; exit 1 or 2 on any problem",
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := readDir(o)
			if err != nil {
				return err
			}
			return a.migrateRun(cmd.Context(), "verify", compliance.Spec{}, o, nil, func(ctx context.Context, s *session, out *outcome) error {
				h, err := migrate.History(ctx, s.Pool)
				if err != nil {
					return err
				}
				if err := migrate.Check(d, h); err != nil {
					return migrateErr(err)
				}
				var problems []string
				for _, r := range h {
					if r.State == "failed" || r.State == "running" {
						problems = append(problems, fmt.Sprintf("%s is %s after %d of %d statements (%s): the next up resumes or retries it", r.Name, r.State, r.StatementsDone, r.StatementsTotal, r.ErrorClass))
					}
				}
				bad, err := migrate.InvalidIndexes(ctx, s.Pool, d, h)
				if err != nil {
					return migrateErr(err)
				}
				for _, b := range bad {
					problems = append(problems, "index "+b+" is INVALID: the next up rebuilds it")
				}
				for _, p := range problems {
					fmt.Fprintln(a.stdout, "PROBLEM "+p)
				}
				if len(problems) > 0 {
					return withCode(ExitFailed, fmt.Errorf("migrations: %d problems", len(problems)))
				}
				fmt.Fprintf(a.stdout, "verified %d migrations: the sum file and every applied file's SHA-256 match, no unfinished run, no INVALID index\n", len(d.Migrations))
				return nil
			})
		},
	}
}

func (a *app) migrateLint(o *migrateOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "lint [FILE...] [--json]",
		Short: "Lint migration files (default: every up file of the directory); exit 1 on an error",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfigOptional()
			if err != nil {
				return err
			}
			lc := lintContext(cmd.Context(), nil, cfg)
			var files []*migrate.Migration
			if len(args) == 0 {
				d, err := readDir(o)
				if err != nil {
					return err
				}
				files = d.Migrations
			}
			for _, p := range args {
				b, err := os.ReadFile(p)
				if err != nil {
					return withCode(ExitUsage, err)
				}
				files = append(files, &migrate.Migration{UpFile: p, Up: b})
			}
			findings, _, err := lintFiles(lc, files)
			if err != nil {
				return err
			}
			if asJSON {
				if findings == nil {
					findings = []lint.Finding{}
				}
				if err := json.NewEncoder(a.stdout).Encode(findings); err != nil {
					return err
				}
			} else {
				printFindings(a.stdout, findings)
			}
			if lint.Blocking(findings, true) {
				return withCode(ExitFailed, errors.New("lint found errors"))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) migrateBaseline(o *migrateOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "baseline N",
		Short: "Adopt a database whose migrations up to N ran elsewhere (imports golang-migrate's and Flyway's history when present)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || n < 0 {
				return withCode(ExitUsage, errors.New("usage: pgphi migrate baseline N: N is a version number"))
			}
			d, err := readDir(o)
			if err != nil {
				return err
			}
			if err := migrateErr(d.CheckSum()); err != nil {
				return err
			}
			planFn := func(ctx context.Context, s *session) (string, error) {
				var files []*migrate.Migration
				for _, m := range d.Migrations {
					if m.Version <= n {
						files = append(files, m)
					}
				}
				return planOf(ctx, s, "baseline", files)
			}
			spec := compliance.Spec{Reason: true, Approvals: true}
			return a.migrateRun(cmd.Context(), "baseline", spec, o, planFn, func(ctx context.Context, s *session, out *outcome) error {
				r, err := openRunner(ctx, s, d, a.runnerOptions(s, o))
				if err != nil {
					return err
				}
				defer r.Close(ctx)
				done, err := r.Baseline(ctx, n)
				if errors.Is(err, migrate.ErrForeignHistory) {
					return withCode(ExitUsage, err)
				}
				if err != nil {
					return migrateErr(err)
				}
				out.Details["migrations"] = strings.Join(done, ", ")
				fmt.Fprintf(a.stdout, "adopted %d migrations up to version %d: %s\n", len(done), n, strings.Join(done, ", "))
				return nil
			})
		},
	}
}
