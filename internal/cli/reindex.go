package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/engine"
)

// reindexCommand rebuilds the blind index terms of searchable columns
// online as a new generation (engine.Runner.Reindex).
func (a *app) reindexCommand() *cobra.Command {
	var table, column, reason string
	var resize, newKey bool
	var workers, batch int
	var maxRate float64
	var mo metricsOpt
	cmd := &cobra.Command{
		Use:   "reindex",
		Short: "Rebuild a column's blind index terms online: new sizing and/or the active data key, then switch",
		Long: `reindex writes a new generation of the blind index terms of every searchable
column (or the one --table/--column name) beside the one in use, while the
application keeps writing and searching: --resize sizes it from the data
under the current leakage budget (the default), --new-key derives its keys
from the active data key (after keys rotate). The new terms go to
<col>_bidx_next with its own GIN index; writers through the application API
write both generations, search reads both; the backfill runs over leased
chunks (resumable: run reindex again after an interruption), throttled like
apply. At the end every new term is verified, and one short transaction
switches: the old column and index are dropped and the new ones take their
names. No value is printed.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if column != "" && table == "" {
				return withCode(ExitUsage, errors.New("usage: --column needs --table"))
			}
			if maxRate < 0 {
				return withCode(ExitUsage, errors.New("usage: --max-rate must be positive"))
			}
			if !resize && !newKey {
				resize = true
			}
			m, stopMetrics, err := a.startMetrics(ctx, &mo, "reindex")
			if err != nil {
				return err
			}
			defer stopMetrics()
			return a.guarded(ctx, guardSpec{Command: "reindex", Reason: true}, reasonOrEnv(reason), func(ctx context.Context, s *session, out *outcome) error {
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
				th := &engine.Throttle{MaxRate: s.Cfg.Apply.MaxRate, Adaptive: s.Cfg.Apply.Adaptive && os.Getenv("PGPHI_ADAPTIVE") != "off",
					CanaryQuery: s.Cfg.Apply.CanaryQuery, MaxLag: s.Cfg.Apply.MaxReplicationLag}
				th.Alerts = s.Alerts
				if maxRate > 0 {
					th.MaxRate = maxRate
				}
				r := &engine.Runner{
					Pool: s.Pool, Keys: ring, Config: s.Cfg, Plan: s.Plan,
					Workers: workers, BatchSize: batch, Log: a.stderr, Throttle: th,
					Progress: m.Progress(a.progressFactory(statusLine(th.Status, s.Alerts.Summary))),
					Metrics:  engineMetrics(m),
				}
				start := time.Now()
				res, err := r.Reindex(ctx, engine.ReindexOptions{Table: table, Column: column, Resize: resize, NewKey: newKey})
				var cols []string
				for _, x := range res {
					cols = append(cols, fmt.Sprintf("%s.%s:%d->%d", x.Table, x.Column, x.From, x.To))
					out.Rows += x.Rows
				}
				out.Details["columns"] = strings.Join(cols, " ")
				out.Details["resize"], out.Details["new_key"] = fmt.Sprint(resize), fmt.Sprint(newKey)
				if err != nil {
					if errors.Is(err, engine.ErrReindex) {
						return withCode(ExitRefused, err)
					}
					return err
				}
				for _, x := range res {
					fmt.Fprintf(a.stdout, "%s.%s: generation %d -> %d (data key %d -> %d), %d rows verified\n", x.Table, x.Column, x.From, x.To, x.KeyFrom, x.KeyTo, x.Rows)
					for _, f := range x.Families {
						fmt.Fprintf(a.stdout, "  %-14s %2d bits (%s) -> %2d bits (%s)\n", f.SubKind, f.BitsFrom, f.SizingFrom, f.BitsTo, f.Sizing)
					}
				}
				fmt.Fprintf(a.stdout, "reindexed %d columns in %s\n", len(res), time.Since(start).Round(time.Millisecond))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&table, "table", "", "only this table (schema.table, or table in public)")
	cmd.Flags().StringVar(&column, "column", "", "only this column of --table")
	cmd.Flags().BoolVar(&resize, "resize", false, "size the new terms from the data under the current budget (the default)")
	cmd.Flags().BoolVar(&newKey, "new-key", false, "derive the new terms' keys from the active data key (after pgphi keys rotate)")
	cmd.Flags().IntVar(&workers, "workers", 0, "concurrent workers in this process (default apply.workers)")
	cmd.Flags().IntVar(&batch, "batch-size", 0, "rows per batch transaction (default apply.batch_size)")
	cmd.Flags().Float64Var(&maxRate, "max-rate", 0, "at most this many rows per second (default apply.max_rate; none)")
	cmd.Flags().StringVar(&reason, "reason", "", "why the terms are rebuilt (required, audited; default $PGPHI_REASON)")
	mo.register(cmd)
	return cmd
}
