package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/engine"
)

func (a *app) flagsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "flags [set NAME on|off]",
		Short: "Show or set the cutover flags applications read: SELECT pgphi.flag('NAME')",
		Long: `Flags tell applications where the migration stands. Read them with one query:
  SELECT pgphi.flag('use_encrypted_search');

  use_encrypted_search  applications search through the blind indexes
  migration_complete    every row is encrypted and verified; applications read ciphertext
  require_encryption    the database refuses plaintext writes to protected columns`,
		Args: cobra.MaximumNArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if len(args) != 0 && (len(args) != 3 || args[0] != "set" || (args[2] != "on" && args[2] != "off")) {
				return withCode(ExitUsage, errors.New("usage: pgphi flags [set NAME on|off]"))
			}
			if len(args) == 3 && !slices.Contains(engine.FlagNames, args[1]) {
				return withCode(ExitUsage, fmt.Errorf("usage: unknown flag `%s`; flags: %v", args[1], engine.FlagNames))
			}
			command := "flags"
			if len(args) == 3 {
				command = "flags set"
			}
			return a.dbRun(ctx, command, func(ctx context.Context, pool *pgxpool.Pool) error {
				if len(args) == 3 {
					if err := engine.SetFlag(ctx, pool, args[1], args[2] == "on"); err != nil {
						return err
					}
				}
				flags, err := engine.GetFlags(ctx, pool)
				if err != nil {
					return err
				}
				for _, f := range flags {
					v := "off"
					if f.Enabled {
						v = "on"
					}
					by := ""
					if f.UpdatedAt != nil && f.UpdatedBy != nil {
						by = fmt.Sprintf("  (set %s by %s)", f.UpdatedAt.UTC().Format("2006-01-02 15:04:05Z"), *f.UpdatedBy)
					}
					fmt.Fprintf(a.stdout, "%-22s %-3s%s\n", f.Name, v, by)
				}
				return nil
			})
		},
	}
	return cmd
}
