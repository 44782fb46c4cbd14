package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/keys"
)

// keysLifecycleCommands are `keys status`, `keys retire` and `keys rewrap`.
func (a *app) keysLifecycleCommands() []*cobra.Command {
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Per data key: ciphertexts sealed under it (read from envelope headers), encryptions counted, blind indexes and backups that need it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.guarded(cmd.Context(), guardSpec{Command: "keys status", Conns: 2, NoPlan: true, OptionalConfig: true}, "keys status",
				func(ctx context.Context, s *session, out *outcome) error {
					rep, err := keys.Status(ctx, s.Pool)
					if err != nil {
						return err
					}
					for _, k := range rep.Keys {
						out.Rows += k.Ciphertexts
					}
					if asJSON {
						return json.NewEncoder(a.stdout).Encode(rep)
					}
					fmt.Fprintf(a.stdout, "%-5s %-8s %12s %12s  %s\n", "KEY", "STATE", "CIPHERTEXTS", "ENCRYPTIONS", "ALSO NEEDED BY")
					for _, k := range rep.Keys {
						var also []string
						if n := len(k.BlindIndexes); n > 0 {
							also = append(also, fmt.Sprintf("%d blind index families", n))
						}
						if n := len(k.Backups); n > 0 {
							also = append(also, fmt.Sprintf("%d backups", n))
						}
						warn := ""
						if k.Encryptions >= keys.UsageWarn {
							warn = fmt.Sprintf("  (%.1f%% of the 2^32 limit: rotate)", 100*float64(k.Encryptions)/float64(keys.UsageLimit))
						}
						fmt.Fprintf(a.stdout, "%-5d %-8s %12d %12d  %s%s\n", k.ID, k.State, k.Ciphertexts, k.Encryptions, orDash(strings.Join(also, ", ")), warn)
						for _, c := range k.Columns {
							fmt.Fprintf(a.stdout, "      %s.%s: %d\n", c.Table, c.Column, c.Ciphertexts)
						}
					}
					for _, u := range rep.Unknown {
						fmt.Fprintf(a.stdout, "unknown key id %d: %d ciphertexts in %s.%s\n", u.KeyID, u.Ciphertexts, u.Table, u.Column)
					}
					return nil
				})
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")

	var backupsBefore string
	retire := &cobra.Command{
		Use:   "retire ID",
		Short: "Destroy the wrapped copy of a data key nothing needs any more (refuses, listing what still does)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseUint(args[0], 10, 32)
			if err != nil || n == 0 {
				return withCode(ExitUsage, fmt.Errorf("keys retire: %q is not a key id (a positive number, see pgphi keys status)", args[0]))
			}
			var opts keys.RetireOptions
			if backupsBefore != "" {
				if opts.BackupsDestroyedBefore, err = time.Parse(time.RFC3339, backupsBefore); err != nil {
					return withCode(ExitUsage, fmt.Errorf("--backups-destroyed-before: want an RFC 3339 time such as 2026-01-31T00:00:00Z: %w", err))
				}
			}
			return a.guarded(cmd.Context(), guardSpec{Command: "keys retire", Conns: 2, NoPlan: true, OptionalConfig: true}, "keys retire",
				func(ctx context.Context, s *session, out *outcome) error {
					out.Details = map[string]string{"key_id": strconv.FormatUint(n, 10)}
					if backupsBefore != "" {
						out.Details["backups_destroyed_before"] = opts.BackupsDestroyedBefore.UTC().Format(time.RFC3339)
					}
					k, err := keys.Retire(ctx, s.Pool, uint32(n), opts)
					if err != nil {
						if errors.Is(err, keys.ErrKeyInUse) {
							out.Details["uses"] = strconv.Itoa(len(k.InUse()))
						}
						return err
					}
					out.Details["encryptions"] = strconv.FormatInt(k.Encryptions, 10)
					fmt.Fprintf(a.stdout, "data key %d retired: no ciphertext, blind index or backup needs it; its wrapped copy is destroyed\n", n)
					return nil
				})
		},
	}
	retire.Flags().StringVar(&backupsBefore, "backups-destroyed-before", "", "declare that every backup taken before this time (RFC 3339) is destroyed, so it no longer needs the key")

	rewrap := &cobra.Command{
		Use:   "rewrap",
		Short: "Move the data keys to a new KEK (PGPHI_NEW_KEK and PGPHI_NEW_PASSPHRASE[_FILE|_FD], PGPHI_NEW_KEY_FILE or PGPHI_NEW_PKCS11_*) in one transaction",
		Long: `Move the data keys to a new key-encryption key in one transaction: each is
unwrapped with the current KEK and wrapped with the new one; no ciphertext
changes. The current KEK is given as always; the new one by PGPHI_NEW_KEK
(passphrase, keyfile or pkcs11) and PGPHI_NEW_PASSPHRASE_FILE,
PGPHI_NEW_PASSPHRASE_FD or PGPHI_NEW_PASSPHRASE; PGPHI_NEW_KEY_FILE; or
PGPHI_NEW_PKCS11_MODULE, _TOKEN, _KEY_LABEL, _PIN_FILE (as PGPHI_PKCS11_*).
Afterwards the old KEK no longer unwraps the keys. Backups taken before keep
their data keys wrapped under the old KEK.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, _ = a.loadConfigOptional() // its keys: section; guarded reports a bad config
			from, err := keys.ProviderFromEnv()
			if err != nil {
				return withCode(ExitUsage, err)
			}
			to, err := keys.NewProviderFromEnv()
			if err != nil {
				return withCode(ExitUsage, err)
			}
			return a.guarded(cmd.Context(), guardSpec{Command: "keys rewrap", Conns: 2, NoPlan: true, OptionalConfig: true}, "keys rewrap",
				func(ctx context.Context, s *session, out *outcome) error {
					res, err := keys.Rewrap(ctx, s.Pool, from, to)
					if err != nil {
						return err
					}
					out.Rows = int64(res.Keys)
					out.Details = map[string]string{"kek_from": res.From, "kek_to": res.To}
					if res.Mechanism != "" {
						out.Details["mechanism"] = res.Mechanism
					}
					fmt.Fprintf(a.stdout, "%d data keys rewrapped from a %s KEK to a %s KEK; the old KEK no longer unwraps them\n", res.Keys, res.From, res.To)
					return nil
				})
		},
	}
	return []*cobra.Command{status, retire, rewrap}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
