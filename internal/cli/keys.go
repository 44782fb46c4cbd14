package cli

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/keys"
)

// dbRun runs a command that works with or without a config file (keys
// are set up before any config is written) inside the compliance wrapper:
// role check under the pinned policy and audit records either way.
func (a *app) dbRun(ctx context.Context, command string, body func(ctx context.Context, pool *pgxpool.Pool) error) error {
	return a.guarded(ctx, guardSpec{Command: command, Conns: 2, NoPlan: true, OptionalConfig: true}, command, func(ctx context.Context, s *session, out *outcome) error {
		return body(ctx, s.Pool)
	})
}

func (a *app) keysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage key material (init, rotate, list); key bytes are never printed",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "init",
		Short: "Create the first data key, wrapped by the KEK (PGPHI_PASSPHRASE[_FILE|_FD] or PGPHI_KEY_FILE), in the pgphi schema",
		RunE: func(cmd *cobra.Command, _ []string) error {
			provider, err := keys.ProviderFromEnv()
			if err != nil {
				return withCode(ExitUsage, err)
			}
			return a.dbRun(cmd.Context(), "keys init", func(ctx context.Context, pool *pgxpool.Pool) error {
				created, err := keys.Init(ctx, pool, provider)
				if err != nil {
					return err
				}
				if created {
					fmt.Fprintf(a.stdout, "created data key 1, wrapped with a key-encryption key from the %s\n", provider.Name())
				} else {
					fmt.Fprintf(a.stdout, "keys already initialized; the %s unwraps them\n", provider.Name())
				}
				return nil
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Add a new data key and make it active; older keys stay for decryption",
		RunE: func(cmd *cobra.Command, _ []string) error {
			provider, err := keys.ProviderFromEnv()
			if err != nil {
				return withCode(ExitUsage, err)
			}
			return a.dbRun(cmd.Context(), "keys rotate", func(ctx context.Context, pool *pgxpool.Pool) error {
				id, err := keys.Rotate(ctx, pool, provider)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "data key %d is now active; new ciphertexts use it\n", id)
				return nil
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List data keys: id, state, creation time (no key material)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.dbRun(cmd.Context(), "keys list", func(ctx context.Context, pool *pgxpool.Pool) error {
				infos, err := keys.List(ctx, pool)
				if err != nil {
					return err
				}
				if len(infos) == 0 {
					return keys.ErrNotInitialized
				}
				fmt.Fprintf(a.stdout, "%-6s %-8s %-10s %s\n", "KEY", "STATE", "WRAPPED BY", "CREATED")
				for _, i := range infos {
					fmt.Fprintf(a.stdout, "%-6d %-8s %-10s %s\n", i.ID, i.State, i.KEKKind, i.CreatedAt.UTC().Format("2006-01-02 15:04:05Z"))
				}
				return nil
			})
		},
	})
	for _, c := range cmd.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	return cmd
}
