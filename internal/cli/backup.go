package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/backup"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/pgcluster"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/keys"
)

// EnvAgeIdentityFile names the age identity file `backup verify` opens an
// age backup with (the --identity flag wins).
const EnvAgeIdentityFile = "PGPHI_AGE_IDENTITY_FILE"

func (a *app) backupCommand() *cobra.Command {
	var outPath, format string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Encrypted, signed backup of the whole database (pg_dump, never plaintext on disk); verify it with backup verify",
		Long: `Take a backup of the whole database with pg_dump (custom format), streamed
through Tink's streaming AEAD AES256_GCM_HKDF_1MB under a fresh key wrapped by
the KEK (the default, FIPS-approved primitives), or with --format age to the
pinned age X25519 recipients (backup.age_recipients) where FIPS 140 is not
required. A manifest (tables, row counts and checksums taken in pg_dump's
snapshot, plan id, data key ids, format, time) is signed with
audit.signing_key and travels inside the encryption. The backup is recorded
in the database and audited; production requires one verified by
'pgphi backup verify' within backup.max_age (pinned).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if outPath == "" {
				return withCode(ExitUsage, errors.New("backup: --out FILE is required"))
			}
			f := backup.FormatTink
			switch format {
			case "", "tink":
			case "age":
				f = backup.FormatAge
			default:
				return withCode(ExitUsage, fmt.Errorf("backup: --format %q: want tink (AES-256-GCM, FIPS-approved) or age", format))
			}
			return a.guarded(cmd.Context(), guardSpec{Command: "backup", Conns: 3, NoPlan: true}, "backup", func(ctx context.Context, s *session, out *outcome) error {
				opts := backup.TakeOptions{Pool: s.Pool, Format: f, Recipients: s.Pins.BackupRecipients}
				if s.Cfg.Audit.SigningKey == "" {
					return withCode(ExitUsage, errors.New("backup: audit.signing_key is not set in the config: the manifest is signed with it"))
				}
				var err error
				if opts.SigningKey, err = policy.LoadPrivateKey(s.Cfg.Resolve(s.Cfg.Audit.SigningKey)); err != nil {
					return withCode(ExitUsage, err)
				}
				if f == backup.FormatTink {
					if opts.KEK, err = keys.ProviderFromEnv(); err != nil {
						return withCode(ExitUsage, err)
					}
				} else if len(opts.Recipients) == 0 {
					return withCode(ExitUsage, errors.New("backup: --format age needs backup.age_recipients in the config, pinned (pgphi pins set --from-config)"))
				}
				bin, err := pgcluster.FindBinDir()
				if err != nil {
					return err
				}
				opts.PgDump = filepath.Join(bin, "pg_dump")
				child, err := engine.NewChildConn(s.Pool, s.Cfg.Database.TLS, s.Cfg.Resolve)
				if err != nil {
					return withCode(ExitRefused, fmt.Errorf("backup: %w", err))
				}
				defer child.Close()
				opts.Child = backup.Child{Args: child.Args, Env: child.Env}
				file, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return withCode(ExitUsage, fmt.Errorf("backup: %w (pgphi never overwrites a backup)", err))
				}
				res, err := backup.Take(ctx, opts, file)
				if cerr := file.Close(); err == nil && cerr != nil {
					err = cerr
				}
				if err != nil {
					os.Remove(outPath)
					return err
				}
				out.Rows = res.Manifest.Rows()
				out.Details = map[string]string{"backup_id": res.Manifest.BackupID, "format": res.Manifest.Format,
					"manifest_sha256": res.Digest, "bytes": strconv.FormatInt(res.Bytes, 10), "tables": strconv.Itoa(len(res.Manifest.Tables))}
				fmt.Fprintf(a.stdout, "backup %s written to %s: %d bytes, %d tables, %d rows, format %s, data keys %v; manifest signed by %s\n",
					res.Manifest.BackupID, outPath, res.Bytes, len(res.Manifest.Tables), res.Manifest.Rows(), res.Manifest.Format, res.Manifest.KeyIDs, res.Manifest.SigningKey)
				fmt.Fprintf(a.stdout, "not yet verified: run pgphi backup verify %s\n", outPath)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&outPath, "out", "", "file to write (created with mode 0600; never overwritten)")
	cmd.Flags().StringVar(&format, "format", "tink", "tink (AES-256-GCM streaming AEAD, key wrapped by the KEK) or age (X25519 recipients; not FIPS-approved)")
	cmd.AddCommand(a.backupVerifyCommand())
	for _, c := range cmd.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	return cmd
}

func (a *app) backupVerifyCommand() *cobra.Command {
	var identityPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Decrypt a backup, restore it into a temporary local cluster, compare it with its signed manifest, run pgphi verify there, and record the verification",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			return a.guarded(cmd.Context(), guardSpec{Command: "backup verify", Conns: 2, NoPlan: true}, "backup verify", func(ctx context.Context, s *session, out *outcome) error {
				opts := backup.VerifyOptions{Logf: a.logf}
				trusted, err := a.manifestKeys(s)
				if err != nil {
					return err
				}
				opts.Trusted = trusted
				if p, err := keys.ProviderFromEnv(); err == nil {
					opts.KEK = p
				}
				if identityPath == "" {
					identityPath = os.Getenv(EnvAgeIdentityFile)
				}
				if identityPath != "" {
					if opts.Identities, err = readAgeIdentities(identityPath); err != nil {
						return withCode(ExitUsage, err)
					}
				}
				opts.Check = func(ctx context.Context, pool *pgxpool.Pool) (string, error) {
					return a.verifyRestored(ctx, s, pool, opts.KEK)
				}
				f, err := os.Open(path)
				if err != nil {
					return withCode(ExitUsage, fmt.Errorf("backup verify: %w", err))
				}
				defer f.Close()
				start := time.Now()
				res, err := backup.Verify(ctx, f, opts)
				if res != nil {
					out.Details = map[string]string{"backup_id": res.Header.BackupID, "format": res.Header.Format, "manifest_sha256": res.Digest}
				}
				if err != nil {
					return err
				}
				out.Rows = res.Manifest.Rows()
				var at time.Time
				if err := s.Pool.QueryRow(ctx, "SELECT pgphi.backup_verified($1, $2, $3)", res.Header.BackupID, res.Digest, res.Manifest.Rows()).Scan(&at); err != nil {
					return fmt.Errorf("backup verify: recording the verification: %w", err)
				}
				if asJSON {
					return json.NewEncoder(a.stdout).Encode(map[string]any{"ok": true, "backup_id": res.Header.BackupID, "format": res.Header.Format,
						"taken_at": res.Manifest.TakenAt, "tables": len(res.Manifest.Tables), "rows": res.Manifest.Rows(), "key_ids": res.Manifest.KeyIDs,
						"plan_id": res.Manifest.PlanID, "verify": res.Check, "verified_at": at, "seconds": time.Since(start).Seconds()})
				}
				fmt.Fprintf(a.stdout, "backup %s (%s, taken %s) restored into a temporary local cluster in %s: %d tables, %d rows match the signed manifest; %s; verification recorded\n",
					res.Header.BackupID, res.Header.Format, res.Manifest.TakenAt.Format(time.RFC3339), time.Since(start).Round(time.Millisecond),
					len(res.Manifest.Tables), res.Manifest.Rows(), res.Check)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&identityPath, "identity", "", "age identity file (age-keygen output, mode 0600) for --format age backups (default $"+EnvAgeIdentityFile+")")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// manifestKeys are the keys a backup's manifest may be signed with: the
// pinned audit public key, else the public half of audit.signing_key.
func (a *app) manifestKeys(s *session) ([]ed25519.PublicKey, error) {
	if s.Pins != nil && s.Pins.AuditPublicKey != "" {
		pub, err := policy.ParseAuthorizedKey(s.Pins.AuditPublicKey)
		if err != nil {
			return nil, err
		}
		return []ed25519.PublicKey{pub}, nil
	}
	if s.Cfg.Audit.SigningKey == "" {
		return nil, withCode(ExitUsage, errors.New("backup verify: no audit public key is pinned and audit.signing_key is not set: nothing to check the manifest's signature with"))
	}
	k, err := policy.LoadPrivateKey(s.Cfg.Resolve(s.Cfg.Audit.SigningKey))
	if err != nil {
		return nil, withCode(ExitUsage, err)
	}
	return []ed25519.PublicKey{k.Public().(ed25519.PublicKey)}, nil
}

// verifyRestored runs pgphi's verification on the restored database: the
// plan resolved there, the keys unwrapped from it with the KEK given.
func (a *app) verifyRestored(ctx context.Context, s *session, pool *pgxpool.Pool, kek keys.KEKProvider) (string, error) {
	rs := &session{Cfg: s.Cfg, Pool: pool}
	if err := a.resolvePlan(ctx, rs); err != nil {
		return "", err
	}
	if kek == nil {
		return "", errors.New("no KEK given: the restored data keys cannot be unwrapped")
	}
	ring, err := keys.Load(ctx, pool, kek)
	if errors.Is(err, keys.ErrNotInitialized) {
		return "pgphi verify: no keys in the backup (taken before keys init), nothing to compare", nil
	}
	if err != nil {
		return "", err
	}
	res, err := engine.Verify(ctx, pool, ring, rs.Plan, 0)
	if errors.Is(err, engine.ErrNotExpanded) {
		return "pgphi verify: no ciphertext columns yet (taken before apply), nothing to compare", nil
	}
	if err != nil {
		return "", err
	}
	if res.Mismatches > 0 {
		return "", fmt.Errorf("%d of %d values do not match their plaintext in the restored database", res.Mismatches, res.Values)
	}
	return fmt.Sprintf("pgphi verify: %d values in %d rows decrypt and match, %d rows pending encryption", res.Values, res.Rows, res.Pending), nil
}

// readAgeIdentities reads an age identity file, which must be readable by
// its owner only.
func readAgeIdentities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("age identity file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("age identity file %s must be readable by its owner only (chmod 600)", path)
	}
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("age identity file %s: not an age identity file", path)
	}
	return ids, nil
}
