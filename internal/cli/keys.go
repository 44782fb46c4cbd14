package cli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/metrics"
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

// kekProvider returns the provider of the given kind, or the one the
// environment configures when kind is empty.
func kekProvider(kind string) (keys.KEKProvider, error) {
	if kind == "" {
		return keys.ProviderFromEnv()
	}
	return keys.ProviderOfKind(kind)
}

func (a *app) keysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage key material (init, rotate, list, status, retire, rewrap); key bytes are never printed",
	}
	var kekKind string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create the first data key, wrapped by the KEK (PGPHI_PASSPHRASE[_FILE|_FD], PGPHI_KEY_FILE or a PKCS#11 token), in the pgphi schema",
		Long: `Create the first data key, wrapped by the key-encryption key, in the pgphi schema.

The KEK comes from a passphrase (PGPHI_PASSPHRASE_FILE, PGPHI_PASSPHRASE_FD or
PGPHI_PASSPHRASE), a key file (PGPHI_KEY_FILE), or an HSM: with --kek pkcs11 (or
PGPHI_PKCS11_MODULE set), a non-extractable AES-256 key in a PKCS#11 token
(PGPHI_PKCS11_MODULE, PGPHI_PKCS11_TOKEN or _SERIAL or _SLOT,
PGPHI_PKCS11_KEY_LABEL or _KEY_ID, PGPHI_PKCS11_PIN_FILE or PGPHI_PKCS11_PIN,
PGPHI_PKCS11_MECHANISM auto|kwp|pad|gcm) wraps and unwraps the data keys inside
the token.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, _ = a.loadConfigOptional() // its keys: section; dbRun reports a bad config
			provider, err := kekProvider(kekKind)
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
	}
	initCmd.Flags().StringVar(&kekKind, "kek", "", "KEK provider: passphrase, keyfile or pkcs11 (default: from the environment, PGPHI_KEK)")
	cmd.AddCommand(initCmd)
	var reencrypt bool
	var reason string
	var maxRate float64
	var mo metricsOpt
	rotateCmd := &cobra.Command{
		Use:   "rotate",
		Short: "Add a new data key and make it active; older keys stay for decryption (--reencrypt: move every ciphertext to it)",
		Long: `rotate adds a new data key and makes it active: new ciphertexts use it, older
ones stay readable with their own keys. With --reencrypt (it needs the config)
every ciphertext of the configured tables under an older key is then sealed
again under the active one, online, over leased chunks: throttled like apply
(--max-rate), with progress, resumable (run the same command again: a
re-encryption under the active key that did not finish resumes instead of
rotating again), and counted at the end (none under an older key may be
left). Blind index terms keep their key: pgphi reindex --new-key moves them.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, _ = a.loadConfigOptional() // its keys: section; dbRun reports a bad config
			provider, err := keys.ProviderFromEnv()
			if err != nil {
				return withCode(ExitUsage, err)
			}
			if !reencrypt {
				return a.dbRun(cmd.Context(), "keys rotate", func(ctx context.Context, pool *pgxpool.Pool) error {
					id, err := keys.Rotate(ctx, pool, provider)
					if err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "data key %d is now active; new ciphertexts use it\n", id)
					return nil
				})
			}
			if maxRate < 0 {
				return withCode(ExitUsage, errors.New("usage: --max-rate must be positive"))
			}
			m, stopMetrics, err := a.startMetrics(cmd.Context(), &mo, "keys rotate")
			if err != nil {
				return err
			}
			defer stopMetrics()
			return a.rotateReencrypt(cmd.Context(), provider, reasonOrEnv(reason), maxRate, m)
		},
	}
	mo.register(rotateCmd)
	rotateCmd.Flags().BoolVar(&reencrypt, "reencrypt", false, "then re-encrypt every ciphertext under an older key with the active one (needs the config)")
	rotateCmd.Flags().StringVar(&reason, "reason", "", "with --reencrypt: why (required, audited; default $PGPHI_REASON)")
	rotateCmd.Flags().Float64Var(&maxRate, "max-rate", 0, "with --reencrypt: at most this many rows per second (default apply.max_rate; none)")
	cmd.AddCommand(rotateCmd)
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
	cmd.AddCommand(a.keysLifecycleCommands()...)
	for _, c := range cmd.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	return cmd
}

// rotateReencrypt rotates the data key (unless a re-encryption under the
// active key is unfinished: then it resumes that one) and re-encrypts every
// ciphertext under an older key (engine.Runner.Reencrypt).
func (a *app) rotateReencrypt(ctx context.Context, provider keys.KEKProvider, reason string, maxRate float64, m *metrics.Recorder) error {
	return a.guarded(ctx, guardSpec{Command: "keys rotate", Reason: true}, reason, func(ctx context.Context, s *session, out *outcome) error {
		if err := dbconn.DetectPooler(ctx, s.Pool); err != nil {
			if errors.Is(err, dbconn.ErrPooler) {
				return withCode(ExitRefused, err)
			}
			return err
		}
		ring, err := keys.Load(ctx, s.Pool, provider)
		if err != nil {
			return err
		}
		resume, err := engine.ReencryptInProgress(ctx, s.Pool, ring.ActiveKeyID())
		if err != nil {
			return err
		}
		if resume {
			a.logf("resuming the re-encryption under data key %d", ring.ActiveKeyID())
		} else {
			id, err := keys.Rotate(ctx, s.Pool, provider)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "data key %d is now active; new ciphertexts use it\n", id)
			if ring, err = keys.Load(ctx, s.Pool, provider); err != nil {
				return err
			}
		}
		out.Details["key_id"] = fmt.Sprint(ring.ActiveKeyID())
		th := &engine.Throttle{MaxRate: s.Cfg.Apply.MaxRate, Adaptive: s.Cfg.Apply.Adaptive && os.Getenv("PGPHI_ADAPTIVE") != "off",
			CanaryQuery: s.Cfg.Apply.CanaryQuery, MaxLag: s.Cfg.Apply.MaxReplicationLag}
		th.Alerts = s.Alerts
		if maxRate > 0 {
			th.MaxRate = maxRate
		}
		a.watchAlerts(s.Alerts, m)
		observeRun(m, s.Plan, th)
		r := &engine.Runner{Pool: s.Pool, Keys: ring, Config: s.Cfg, Plan: s.Plan, Log: a.stderr, Throttle: th, Metrics: engineMetrics(m),
			Progress: m.Progress(a.progressFactory(statusLine(th.Status, s.Alerts.Summary)))}
		res, err := r.Reencrypt(ctx)
		for _, x := range res {
			out.Rows += x.Rows
			fmt.Fprintf(a.stdout, "%s: %d ciphertexts re-encrypted under data key %d (%d rows read); none under an older key is left\n", x.Table, x.Reencrypted, x.KeyID, x.Rows)
		}
		return err
	})
}
