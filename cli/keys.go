package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/keys"
	"github.com/pgphi/pgphi/state"
)

func (a *app) keysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage key material (init, rotate, list); key bytes are never printed",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "init",
		Short: "Create the first data key, wrapped by PGPHI_PASSPHRASE or PGPHI_KEY_FILE, in the pgphi schema",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			provider, err := keys.ProviderFromEnv()
			if err != nil {
				return withCode(ExitUsage, err)
			}
			cfg, err := a.loadConfigOptional()
			if err != nil {
				return err
			}
			pool, err := a.connect(ctx, cfg, 2)
			if err != nil {
				return err
			}
			defer pool.Close()
			conn, err := pool.Acquire(ctx)
			if err != nil {
				return err
			}
			_, err = state.Ensure(ctx, conn)
			conn.Release()
			if err != nil {
				return err
			}
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
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Add a new data key and make it active; older keys stay for decryption",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			provider, err := keys.ProviderFromEnv()
			if err != nil {
				return withCode(ExitUsage, err)
			}
			cfg, err := a.loadConfigOptional()
			if err != nil {
				return err
			}
			pool, err := a.connect(ctx, cfg, 2)
			if err != nil {
				return err
			}
			defer pool.Close()
			id, err := keys.Rotate(ctx, pool, provider)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "data key %d is now active; new ciphertexts use it\n", id)
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List data keys: id, state, creation time (no key material)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := a.loadConfigOptional()
			if err != nil {
				return err
			}
			pool, err := a.connect(ctx, cfg, 2)
			if err != nil {
				return err
			}
			defer pool.Close()
			ok, err := state.Exists(ctx, pool)
			if err != nil {
				return err
			}
			if !ok {
				return keys.ErrNotInitialized
			}
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
		},
	})
	for _, c := range cmd.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	return cmd
}
