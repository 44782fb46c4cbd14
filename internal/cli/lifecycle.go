package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/engine"
)

func (a *app) cleanupCommand() *cobra.Command {
	var confirm, purge, reason string
	var rename, vacuumFull bool
	var mo metricsOpt
	cmd := &cobra.Command{
		Use:   "cleanup --confirm PLAN_ID",
		Short: "Drop the plaintext, purge it from the table files, keep the ciphertext",
		Long: `cleanup is the irreversible end of a migration (rollback can still restore the
plaintext from the ciphertext). It refuses unless --confirm names the current
plan, the flags use_encrypted_search and require_encryption are on, and the
last full ` + "`pgphi verify`" + ` of the plan passed.

While writes are briefly blocked it catches up the last changes, verifies
again every row written since that verification began (refusing, with the
row named, if one does not verify), drops the plaintext columns, the
triggers and the marker, then rewrites each table so no
old row version keeps plaintext on disk: with pg_repack (online) when it is
usable, that is installed in the server's bin directory, its extension
available, and the TLS policy one libpq can honour (not pin_sha256).
Otherwise cleanup refuses before dropping anything, unless --vacuum-full
accepts VACUUM FULL, which locks each table against reads and writes for
the whole rewrite.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if confirm == "" {
				return withCode(ExitUsage, errors.New("usage: cleanup needs --confirm PLAN_ID (see `pgphi plan`)"))
			}
			if purge != "auto" && purge != "repack" && purge != "vacuum-full" {
				return withCode(ExitUsage, errors.New("usage: --purge is auto, repack or vacuum-full"))
			}
			ctx := cmd.Context()
			m, stopMetrics, err := a.startMetrics(ctx, &mo, "cleanup")
			if err != nil {
				return err
			}
			defer stopMetrics()
			return a.guarded(ctx, guardSpec{Command: "cleanup", Reason: true, Approvals: true, RequireBackup: true, Pre: []string{"pre_cleanup"}, Post: "post_cleanup"}, reasonOrEnv(reason), func(ctx context.Context, s *session, out *outcome) error {
				r, err := a.runner(ctx, s, m)
				if err != nil {
					return err
				}
				start := time.Now()
				if err := r.Cleanup(ctx, confirm, engine.CleanupOptions{Rename: rename, Purge: purge, VacuumFull: vacuumFull}); err != nil {
					if errors.Is(err, engine.ErrRefused) {
						return withCode(ExitRefused, err)
					}
					return err
				}
				fmt.Fprintf(a.stdout, "cleaned up %s in %s: plaintext dropped and purged from the table files; flag migration_complete is on\n",
					s.Plan.ID, time.Since(start).Round(time.Millisecond))
				fmt.Fprintln(a.stdout, "plaintext may still exist outside the tables; expire it:")
				for _, l := range engine.Leftovers(ctx, r) {
					fmt.Fprintf(a.stdout, "  - %s\n", l)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&confirm, "confirm", "", "the plan id being cleaned up (required)")
	cmd.Flags().BoolVar(&rename, "rename", false, "rename <column>_encrypted to <column> after dropping the plaintext")
	cmd.Flags().StringVar(&purge, "purge", "auto", "how to purge old row versions: auto (pg_repack, else refuse unless --vacuum-full), repack or vacuum-full")
	cmd.Flags().BoolVar(&vacuumFull, "vacuum-full", false, "when pg_repack cannot be used, purge with VACUUM FULL, which locks each table for its whole rewrite")
	cmd.Flags().StringVar(&reason, "reason", "", "why (required, audited; default $PGPHI_REASON)")
	mo.register(cmd)
	return cmd
}

func (a *app) rollbackCommand() *cobra.Command {
	var reason string
	var mo metricsOpt
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Back to plaintext: remove what pgphi added (after cleanup: decrypt into the original columns first)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			m, stopMetrics, err := a.startMetrics(ctx, &mo, "rollback")
			if err != nil {
				return err
			}
			defer stopMetrics()
			return a.guarded(ctx, guardSpec{Command: "rollback", Reason: true, Approvals: true, Pre: []string{"pre_rollback"}, Post: "post_rollback"}, reasonOrEnv(reason), func(ctx context.Context, s *session, out *outcome) error {
				r, err := a.runner(ctx, s, m)
				if err != nil {
					return err
				}
				start := time.Now()
				if err := r.Rollback(ctx); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "rolled back %s in %s: the protected tables hold plaintext only, as before apply\n", s.Plan.ID, time.Since(start).Round(time.Millisecond))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required, audited; default $PGPHI_REASON)")
	mo.register(cmd)
	return cmd
}
