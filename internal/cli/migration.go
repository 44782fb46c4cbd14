package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/redact"
	"github.com/pgphi/pgphi/internal/state"
)

func (a *app) planCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Print the plan and its id; change nothing",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{Command: "plan", Conns: 2}, "", func(ctx context.Context, s *session, out *outcome) error {
				// Sizing reads the values; a role that may plan but not
				// read the tables gets the plan with the bits of the row
				// planner, and apply (as the owner) measures them.
				if err := engine.SizeColumns(ctx, s.Pool, nil, s.Plan, s.Cfg.IsProduction()); err != nil {
					var pgErr *pgconn.PgError
					if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
						return err
					}
					a.logf("blind index sizing left out (the connected role cannot read the tables; apply measures it): the bits shown are the row planner's")
				}
				specs, err := engine.IndexSpecs(ctx, s.Pool, s.Plan)
				if err != nil {
					return err
				}
				s.Plan.AttachIndexSpecs(specs)
				// A foreign key on a protected column refuses the plan
				// itself: nothing after it could work.
				if err := s.Plan.ForeignKeyRefusal(); err != nil {
					return withCode(ExitRefused, err)
				}
				// Measured from the data, like the blind index sizing: not
				// part of the plan id.
				// A role that may plan but not read the tables gets the plan
				// without it.
				est, err := engine.EstimateStorage(ctx, s.Pool, s.Plan)
				if err != nil {
					a.logf("storage estimate left out: %v", redact.Error(err))
				}
				if asJSON {
					var steps []string
					for _, st := range s.Plan.Steps {
						steps = append(steps, st.Describe())
					}
					return json.NewEncoder(a.stdout).Encode(map[string]any{"plan_id": s.Plan.ID, "spec": s.Plan.Spec, "steps": steps, "blind_indexes": s.Plan.IndexReport(), "dependencies": s.Plan.Dependencies, "storage": est})
				}
				s.Plan.Print(a.stdout)
				engine.PrintStorage(a.stdout, est)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"plan_id": ..., "spec": ..., "steps": [...], "blind_indexes": [...], "dependencies": [...], "storage": [...]}`)
	return cmd
}

func (a *app) applyCommand() *cobra.Command {
	var workers, batch int
	var maxRate float64
	var noAdaptive bool
	var reason string
	var mo metricsOpt
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Expand, backfill, catch up and verify; resumable and safe to run again",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfgWorkers := workers
			m, stopMetrics, err := a.startMetrics(ctx, &mo, "apply")
			if err != nil {
				return err
			}
			defer stopMetrics()
			return a.guarded(ctx, guardSpec{Command: "apply", Reason: true, Approvals: true, RequireBackup: true, Validate: true, Pre: []string{"pre_validate", "pre_execute"}, Post: "post_execute"}, reasonOrEnv(reason), func(ctx context.Context, s *session, out *outcome) error {
				if cfgWorkers <= 0 {
					cfgWorkers = s.Cfg.Apply.Workers
				}
				// Checkpoints, leases and the canonical session settings
				// need sessions of their own.
				if err := dbconn.DetectPooler(ctx, s.Pool); err != nil {
					if errors.Is(err, dbconn.ErrPooler) {
						return withCode(ExitRefused, err)
					}
					return err
				}
				ring, err := loadKeys(ctx, s.Pool)
				if err != nil {
					return err
				}
				a.logf("applying %s to %d tables with %d workers", s.Plan.ID, len(s.Plan.Tables), cfgWorkers)
				start := time.Now()
				if maxRate < 0 {
					return withCode(ExitUsage, errors.New("usage: --max-rate must be positive"))
				}
				th := &engine.Throttle{MaxRate: s.Cfg.Apply.MaxRate, Adaptive: s.Cfg.Apply.Adaptive && !noAdaptive && os.Getenv("PGPHI_ADAPTIVE") != "off",
					CanaryQuery: s.Cfg.Apply.CanaryQuery, MaxLag: s.Cfg.Apply.MaxReplicationLag}
				th.Alerts = s.Alerts
				a.watchAlerts(s.Alerts, m)
				if maxRate > 0 {
					th.MaxRate = maxRate
				}
				r := &engine.Runner{
					Pool: s.Pool, Keys: ring, Config: s.Cfg, Plan: s.Plan,
					Workers: cfgWorkers, BatchSize: batch, Log: a.stderr, Throttle: th,
					Progress: m.Progress(a.progressFactory(statusLine(th.Status, s.Alerts.Summary))),
					Metrics:  engineMetrics(m),
				}
				observeRun(m, s.Plan, th)
				// Row counts before and after, as audit evidence that the
				// migration itself lost nothing (the application may still
				// insert and delete meanwhile).
				before := countRows(ctx, s)
				// The plan's storage estimate, watched during the run and
				// once at its end (storage alert above 150 %).
				est, err := engine.EstimateStorage(ctx, s.Pool, s.Plan)
				if err != nil {
					a.logf("storage estimate: %v; the storage alert is off for this run", redact.Error(err))
				}
				watch := &engine.StorageWatch{Pool: s.Pool, Estimates: est, Alerts: s.Alerts, Observer: m}
				stopWatch := watch.Start(ctx)
				// Apply's own verification is recorded like a verify run:
				// the mark comes first, so its snapshot precedes every row
				// the verification reads.
				mark, markErr := engine.MarkVerification(ctx, r)
				err = r.Apply(ctx)
				stopWatch()
				v := r.Verification()
				if err == nil {
					// The accuracy oracle is part of the verification.
					err = a.checkSearchAccuracy(ctx, s, ring, m, v)
				}
				if v != nil && markErr == nil {
					if rerr := engine.RecordVerification(ctx, r, v, mark); rerr != nil {
						a.logf("recording apply's verification: %v", redact.Error(rerr))
					}
				}
				if err != nil {
					return err
				}
				after := countRows(ctx, s)
				out.Rows = after
				out.Details["rows_before"], out.Details["rows_after"] = fmt.Sprint(before), fmt.Sprint(after)
				if n := r.Remaining(); n > 0 {
					fmt.Fprintf(a.stdout, "applied %s in %s: every row encrypted and verified, except %d rows the application changed during the last pass; run `pgphi apply` again to encrypt them\n",
						s.Plan.ID, time.Since(start).Round(time.Millisecond), n)
					return nil
				}
				fmt.Fprintf(a.stdout, "applied %s in %s: every configured column is encrypted and verified\n", s.Plan.ID, time.Since(start).Round(time.Millisecond))
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&workers, "workers", 0, "concurrent workers in this process (default apply.workers)")
	cmd.Flags().IntVar(&batch, "batch-size", 0, "rows per batch transaction (default apply.batch_size)")
	cmd.Flags().Float64Var(&maxRate, "max-rate", 0, "at most this many rows per second (default apply.max_rate; none)")
	cmd.Flags().BoolVar(&noAdaptive, "no-adaptive", false, "do not slow down when the canary query slows (apply.adaptive)")
	cmd.Flags().StringVar(&reason, "reason", "", "why this migration runs (required, audited; default $PGPHI_REASON)")
	mo.register(cmd)
	return cmd
}

func (a *app) statusCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Per table and column: total, encrypted, pending, failed",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{Command: "status", Conns: 2}, "", func(ctx context.Context, s *session, out *outcome) error {
				st, err := engine.GetStatus(ctx, s.Pool, s.Plan)
				if err != nil {
					return err
				}
				if asJSON {
					if err := json.NewEncoder(a.stdout).Encode(st); err != nil || len(st.Triggers) == 0 {
						return err
					}
					return withCode(ExitFailed, engine.TriggersError(st.Triggers))
				}
				state := "not applied"
				switch {
				case st.Complete:
					state = "complete"
				case st.Applied:
					state = "in progress"
				}
				fmt.Fprintf(a.stdout, "plan %s: %s\n\n", st.PlanID, state)
				tw := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', tabwriter.AlignRight)
				fmt.Fprintln(tw, "TABLE\tCOLUMN\tTOTAL\tENCRYPTED\tPENDING\tNULL\tFAILED\t")
				for _, c := range st.Columns {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t\n", c.Table, c.Column, c.Total, c.Encrypted, c.Pending, c.Null, c.Failed)
				}
				tw.Flush()
				for _, f := range st.Failures {
					fmt.Fprintf(a.stdout, "failed: %s.%s at key (%s): %s\n", f.Table, f.Column, strings.Join(f.PrimaryKey, ", "), f.Reason)
				}
				for _, c := range st.Unprotected() {
					fmt.Fprintf(a.stdout, "UNPROTECTED %s.%s: no encrypted column yet; its %d values and every write to it stay plaintext until `pgphi apply` runs\n", c.Table, c.Column, c.Pending)
				}
				for _, r := range st.Reindexes {
					fmt.Fprintf(a.stdout, "reindex of %s.%s to generation %d in progress: %d of %d rows (pgphi reindex resumes it)\n", r.Table, r.Column, r.Generation, r.RowsDone, r.RowsTotal)
				}
				for _, p := range st.Triggers {
					fmt.Fprintf(a.stdout, "TRIGGER PROBLEM %s\n", p)
				}
				if len(st.Triggers) > 0 {
					return withCode(ExitFailed, engine.TriggersError(st.Triggers))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) verifyCommand() *cobra.Command {
	var asJSON bool
	var reason string
	var mo metricsOpt
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Decrypt every ciphertext and compare it with the plaintext; non-zero exit on any mismatch",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			m, stopMetrics, err := a.startMetrics(ctx, &mo, "verify")
			if err != nil {
				return err
			}
			defer stopMetrics()
			return a.guarded(ctx, guardSpec{Command: "verify", Conns: 6}, reason, func(ctx context.Context, s *session, out *outcome) error {
				r, err := a.runner(ctx, s, m)
				if err != nil {
					return err
				}
				a.watchAlerts(s.Alerts, m)
				mark, err := engine.MarkVerification(ctx, r)
				if err != nil {
					return err
				}
				start := mark.Started
				res, err := engine.VerifyObserved(ctx, s.Pool, r.Keys, s.Plan, 0, r.Metrics)
				if errors.Is(err, engine.ErrNotExpanded) {
					// After a rollback nothing is left to compare: say so
					// and pass, as before apply it fails.
					if at, ok, rbErr := engine.RolledBack(ctx, s.Pool, s.Plan); rbErr == nil && ok {
						out.Details["rolled_back"] = at.UTC().Format(time.RFC3339)
						if asJSON {
							return json.NewEncoder(a.stdout).Encode(map[string]any{"plan_id": s.Plan.ID, "ok": true, "rolled_back_at": at.UTC()})
						}
						fmt.Fprintf(a.stdout, "plan %s was rolled back at %s: the plaintext is the only copy, no ciphertext is left to verify\n",
							s.Plan.ID, at.UTC().Format(time.RFC3339))
						return nil
					}
					return withCode(ExitFailed, err)
				}
				if err != nil {
					return err
				}
				// The accuracy oracle: encrypted search against the
				// plaintext answer, for a few random values per column;
				// part of the recorded result.
				accErr := a.checkSearchAccuracy(ctx, s, r.Keys, m, res)
				if hasState, _ := state.Exists(ctx, s.Pool); hasState {
					if err := engine.RecordVerification(ctx, r, res, mark); err != nil {
						return err
					}
				}
				if asJSON {
					if err := json.NewEncoder(a.stdout).Encode(map[string]any{"plan_id": s.Plan.ID, "ok": res.OK(), "result": res}); err != nil {
						return err
					}
				} else {
					for _, m := range res.Examples {
						fmt.Fprintf(a.stdout, "MISMATCH %s\n", m)
					}
					if res.Mismatches > int64(len(res.Examples)) {
						fmt.Fprintf(a.stdout, "... and %d more\n", res.Mismatches-int64(len(res.Examples)))
					}
					fmt.Fprintf(a.stdout, "verified %d values in %d rows in %s: %d mismatches, %d rows pending re-encryption\n",
						res.Values, res.Rows, time.Since(start).Round(time.Millisecond), res.Mismatches, res.Pending)
					for _, p := range res.Triggers {
						fmt.Fprintf(a.stdout, "TRIGGER PROBLEM %s\n", p)
					}
				}
				switch {
				case len(res.Triggers) > 0:
					return withCode(ExitFailed, engine.TriggersError(res.Triggers))
				case res.Mismatches > 0:
					return withCode(ExitFailed, fmt.Errorf("verification failed: %d values do not match their plaintext", res.Mismatches))
				case res.Pending > 0:
					return withCode(ExitFailed, fmt.Errorf("verification incomplete: %d rows changed since they were encrypted; run `pgphi apply`", res.Pending))
				}
				return accErr
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "verification", "why (audited)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	mo.register(cmd)
	return cmd
}

// countRows is the total row count of the plan's tables, or -1 when a table
// could not be counted. It waits for a lock on a table no longer than DDL
// would (apply.lock_timeout): behind a session holding ACCESS EXCLUSIVE,
// apply goes on to its expand step, which retries and then fails with a
// clear message, instead of waiting here without end.
func countRows(ctx context.Context, s *session) int64 {
	var total int64
	for _, t := range s.Plan.Tables {
		var n int64
		err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", s.Cfg.Apply.LockTimeout.Milliseconds())); err != nil {
				return err
			}
			return tx.QueryRow(ctx, "SELECT count(*) FROM "+t.Ident()).Scan(&n)
		})
		if err != nil {
			return -1
		}
		total += n
	}
	return total
}
