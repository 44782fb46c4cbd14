package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/compliance"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/report"
)

func (a *app) approveCommand() *cobra.Command {
	var keyFile, command string
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "approve PLAN_ID --command apply|cleanup|rollback|pins|migrate --key FILE [--expires 168h]",
		Short: "Sign a plan id (or pins id) for one command in this database as an approver (Ed25519 key, PKCS#8 PEM or OpenSSH)",
		Long: `approve signs, with your Ed25519 key, the approval of one plan id (or, for
` + "`pgphi pins set`" + `, one pins id) for one command, in the pinned environment of this
database (cluster system identifier and database name), until an expiry (default
7 days, at most 30). Your key must be one of the pinned signers (` + "`pgphi pins show`" + `).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" || command == "" {
				return withCode(ExitUsage, errors.New("usage: pgphi approve PLAN_ID --command apply|cleanup|rollback|pins|migrate --key FILE (your Ed25519 private key)"))
			}
			if !slices.Contains(policy.ApprovalCommands, command) {
				return withCode(ExitUsage, fmt.Errorf("usage: --command is one of %s", strings.Join(policy.ApprovalCommands, ", ")))
			}
			if expires <= 0 || expires > policy.MaxExpiry {
				return withCode(ExitUsage, fmt.Errorf("usage: --expires must be positive and at most %s", policy.MaxExpiry))
			}
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{Command: "approve", Conns: 2, NoPlan: true, MismatchOK: true}, "approve "+args[0], func(ctx context.Context, s *session, out *outcome) error {
				signers := s.Pins.SignerList()
				if len(signers) == 0 {
					return withCode(ExitUsage, errors.New("no signers are pinned: list the approvers in approvals.signers and pin them (`pgphi pins set --from-config`)"))
				}
				priv, err := policy.LoadPrivateKey(keyFile)
				if err != nil {
					return withCode(ExitUsage, err)
				}
				sysid, db, err := policy.DatabaseIdentity(ctx, s.Pool)
				if err != nil {
					return err
				}
				var now time.Time
				if err := s.Pool.QueryRow(ctx, "SELECT pg_catalog.clock_timestamp()").Scan(&now); err != nil {
					return err
				}
				tg := policy.Target{PlanID: args[0], Command: command, Environment: s.Pins.Environment, SystemIdentifier: sysid, Database: db,
					Expires: now.Add(expires).UTC().Truncate(time.Second)}
				ap, err := policy.Record(ctx, s.Pool, signers, tg, policy.Sign(priv, tg), priv.Public().(ed25519.PublicKey))
				if err != nil {
					if errors.Is(err, policy.ErrApprovalRejected) {
						return withCode(ExitRefused, err)
					}
					return err
				}
				out.Details["approver"] = ap.Signer
				out.Details["role"] = string(ap.Role)
				out.Details["approved_command"] = ap.Command
				out.Details["expires"] = ap.Expires.Format(time.RFC3339)
				fmt.Fprintf(a.stdout, "approved %s for %s as %s (%s, key %s): %s in database %s until %s\n",
					ap.PlanID, ap.Environment, ap.Signer, ap.Role, ap.Fingerprint, ap.Command, ap.Database, ap.Expires.Format(time.RFC3339))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "your Ed25519 private key file")
	cmd.Flags().StringVar(&command, "command", "", "the command approved: apply, cleanup, rollback, pins or migrate (required)")
	cmd.Flags().DurationVar(&expires, "expires", policy.DefaultExpiry, "how long the approval counts (at most 720h)")
	return cmd
}

// pinsCommand shows the pinned security policy and changes it.
func (a *app) pinsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pins",
		Short: "The security policy pinned in the database (environment, approvals, signers, role names, allow_superuser, audit key)",
		Long: `Security decisions read the pins in the database, never the config file: the
config only proposes them. They are pinned at the first roles init or run by a
dba. A config that proposes other pins is refused until they are changed with
` + "`pgphi pins set --from-config`" + `, itself approved like a plan: the approvers sign
the proposed pins id (` + "`pgphi approve PINS_ID --command pins`" + `) under the pins in force.`,
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the pinned policy, the config's proposal and what differs",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.guarded(cmd.Context(), guardSpec{Command: "pins", Conns: 2, NoPlan: true, OptionalConfig: true, MismatchOK: true}, "pins show", func(ctx context.Context, s *session, out *outcome) error {
				if s.Pinned == nil {
					fmt.Fprintln(a.stdout, "nothing is pinned yet; the defaults apply until a dba's first run pins the config's policy")
				} else {
					fmt.Fprintf(a.stdout, "pinned %s (#%d, %s by %s)\n", s.Pinned.ID, s.Pinned.Seq, s.Pinned.PinnedAt.UTC().Format(time.RFC3339), s.Pinned.PinnedBy)
				}
				for _, l := range s.Pins.Describe() {
					fmt.Fprintf(a.stdout, "  %s\n", l)
				}
				if s.Proposed == nil {
					return nil
				}
				d := policy.Diff(*s.Pins, *s.Proposed)
				if len(d) == 0 {
					fmt.Fprintf(a.stdout, "the config (%s) proposes the same pins\n", s.Cfg.Path)
					return nil
				}
				fmt.Fprintf(a.stdout, "the config (%s) proposes %s, which differs:\n", s.Cfg.Path, s.Proposed.ID())
				for _, l := range d {
					fmt.Fprintf(a.stdout, "  - %s\n", l)
				}
				fmt.Fprintf(a.stdout, "to pin it: approvals of %s for command pins (`pgphi approve %s --command pins --key KEY`), then `pgphi pins set --from-config` (a dba)\n", s.Proposed.ID(), s.Proposed.ID())
				return nil
			})
		},
	}
	var fromConfig bool
	set := &cobra.Command{
		Use:   "set --from-config",
		Short: "Pin what the config proposes: needs approvals of its pins id (command pins) under the current pins; a dba runs it",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !fromConfig {
				return withCode(ExitUsage, errors.New("usage: pgphi pins set --from-config"))
			}
			return a.guarded(cmd.Context(), guardSpec{Command: "pins set", Conns: 2, NoPlan: true, MismatchOK: true}, "pins set", func(ctx context.Context, s *session, out *outcome) error {
				if s.Pinned == nil {
					return errors.New("nothing is pinned (the first run pins the config's policy)")
				}
				id := s.Proposed.ID()
				out.Details["pins_from"], out.Details["pins_to"] = s.Pinned.ID, id
				d := policy.Diff(s.Pinned.Pins, *s.Proposed)
				if len(d) == 0 {
					fmt.Fprintf(a.stdout, "the config proposes the pinned policy %s: nothing to change\n", s.Pinned.ID)
					return nil
				}
				// Approved under the pins in force: their signers, their
				// requirements for their environment, the connected role as
				// the executor.
				if err := a.wrapper().CheckApprovals(ctx, s, id, "pins"); err != nil {
					return withCode(ExitRefused, err)
				}
				newID, err := policy.Replace(ctx, s.Pool, s.Pinned, *s.Proposed)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "pinned %s (was %s):\n", newID, s.Pinned.ID)
				for _, l := range d {
					fmt.Fprintf(a.stdout, "  - %s\n", l)
				}
				return nil
			})
		},
	}
	set.Flags().BoolVar(&fromConfig, "from-config", false, "pin what the config file proposes")
	cmd.AddCommand(show, set)
	for _, c := range cmd.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	return cmd
}

func (a *app) rolesCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "roles", Short: "PostgreSQL group roles for dba, healthcare_admin, audit_officer"}
	cmd.AddCommand(&cobra.Command{
		Use:   "init",
		Short: "Create the group roles and grant each what it needs (idempotent)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{Command: "roles", Conns: 2}, "roles init", func(ctx context.Context, s *session, out *outcome) error {
				lines, err := policy.InitRoles(ctx, s.Pool, s.Pins.Roles)
				if err != nil {
					return err
				}
				for _, l := range lines {
					fmt.Fprintln(a.stdout, l)
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

func (a *app) auditCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Verify, export, archive and checkpoint the tamper-evident audit trail"}
	var cpFile string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Recompute the hash chain in the table and the file; prove a kept checkpoint is still in the log",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{Command: "audit", Conns: 2}, "audit verify", func(ctx context.Context, s *session, out *outcome) error {
				// The guard has checked audit.public_key against the pinned
				// key: stored checkpoints are verified under it.
				var cpKeys []ed25519.PublicKey
				if s.Cfg.Audit.PublicKey != "" {
					pub, err := audit.ParsePublicKey(s.Cfg.Audit.PublicKey)
					if err != nil {
						return withCode(ExitUsage, err)
					}
					cpKeys = append(cpKeys, pub)
				}
				rep, err := audit.VerifyWithKeys(ctx, s.Pool, cpKeys)
				if err != nil {
					return err
				}
				bad := len(rep.Problems) > 0
				fmt.Fprintf(a.stdout, "table: %d records, head #%d %s\n", rep.Records, rep.HeadSeq, rep.Head)
				for _, p := range rep.Problems {
					fmt.Fprintf(a.stdout, "TAMPERED table record #%d: %s %s\n", p.Seq, p.Kind, p.Detail)
				}
				if path := s.Cfg.Resolve(s.Cfg.Audit.File); path != "" {
					frep, err := audit.VerifyFile(path)
					if err != nil {
						return err
					}
					for _, p := range frep.Problems {
						fmt.Fprintf(a.stdout, "TAMPERED file record #%d: %s %s\n", p.Seq, p.Kind, p.Detail)
					}
					bad = bad || len(frep.Problems) > 0
					if p, err := audit.CompareFileAndTable(ctx, s.Pool, path); err != nil {
						return err
					} else if p != nil {
						fmt.Fprintf(a.stdout, "MISMATCH file and table differ at record #%d: %s %s\n", p.Seq, p.Kind, p.Detail)
						bad = true
					}
				}
				if cpFile != "" {
					data, err := os.ReadFile(cpFile)
					if err != nil {
						return withCode(ExitUsage, err)
					}
					var cp audit.Checkpoint
					if err := json.Unmarshal(data, &cp); err != nil {
						return withCode(ExitUsage, fmt.Errorf("%s is not a checkpoint: %w", cpFile, err))
					}
					// A checkpoint whose signature cannot be checked (no
					// audit.public_key) is a failure, never accepted.
					var keys []ed25519.PublicKey
					if s.Cfg.Audit.PublicKey != "" {
						pub, err := audit.ParsePublicKey(s.Cfg.Audit.PublicKey)
						if err != nil {
							return withCode(ExitUsage, err)
						}
						keys = append(keys, pub)
					}
					if err := audit.VerifyCheckpointKeys(&cp, keys); err != nil {
						fmt.Fprintf(a.stdout, "CHECKPOINT signature invalid: %v\n", err)
						bad = true
					}
					if err := audit.ProveExtends(ctx, s.Pool, &cp); err != nil {
						fmt.Fprintf(a.stdout, "CHECKPOINT #%d not in the log any more: %v\n", cp.Seq, err)
						bad = true
					} else {
						fmt.Fprintf(a.stdout, "checkpoint #%d: the log still contains it and only grew since\n", cp.Seq)
					}
				}
				if bad {
					return withCode(ExitFailed, errors.New("audit trail verification failed"))
				}
				fmt.Fprintln(a.stdout, "audit trail verified")
				return nil
			})
		},
	}
	verify.Flags().StringVar(&cpFile, "checkpoint", "", "a checkpoint JSON file kept from `pgphi audit checkpoint`")
	var from, to int64
	export := &cobra.Command{
		Use:   "export",
		Short: "Write audit records as JSON lines to stdout",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{Command: "audit", Conns: 2}, "audit export", func(ctx context.Context, s *session, out *outcome) error {
				n, err := audit.Export(ctx, s.Pool, a.stdout, from, to)
				out.Rows = n
				return err
			})
		},
	}
	export.Flags().Int64Var(&from, "from", 0, "first record (0: the first)")
	export.Flags().Int64Var(&to, "to", 0, "last record (0: the last)")
	var dir string
	var olderThan time.Duration
	archive := &cobra.Command{
		Use:   "archive",
		Short: "Write records older than --older-than to a checksummed archive (the table keeps them: 6-year retention)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{Command: "audit", Conns: 2}, "audit archive", func(ctx context.Context, s *session, out *outcome) error {
				path, n, err := audit.Archive(ctx, s.Pool, dir, time.Now().Add(-olderThan))
				if err != nil {
					return err
				}
				out.Rows = n
				fmt.Fprintf(a.stdout, "archived %d records to %s (checksum in %s.sha256)\n", n, path, path)
				return nil
			})
		},
	}
	archive.Flags().StringVar(&dir, "dir", ".", "directory for the archive")
	archive.Flags().DurationVar(&olderThan, "older-than", 0, "archive records older than this (e.g. 720h)")
	checkpoint := &cobra.Command{
		Use:   "checkpoint",
		Short: "Sign the head of the log with audit.signing_key and print the checkpoint (keep it outside the database)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{Command: "audit", Conns: 2}, "audit checkpoint", func(ctx context.Context, s *session, out *outcome) error {
				if s.Cfg.Audit.SigningKey == "" {
					return withCode(ExitUsage, errors.New("audit.signing_key is not set in the config"))
				}
				key, err := policy.LoadPrivateKey(s.Cfg.Resolve(s.Cfg.Audit.SigningKey))
				if err != nil {
					return withCode(ExitUsage, err)
				}
				cp, err := audit.SignCheckpoint(ctx, s.Pool, key)
				if err != nil {
					return err
				}
				return json.NewEncoder(a.stdout).Encode(cp)
			})
		},
	}
	cmd.AddCommand(verify, export, archive, checkpoint)
	for _, c := range cmd.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	return cmd
}

// checkCommand runs the pre-flight checklist and records it.
func (a *app) checkCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Pre-flight checks with evidence; non-zero exit if any required check fails",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return a.guarded(ctx, guardSpec{Command: "check", Conns: 4}, "pre-flight check", func(ctx context.Context, s *session, out *outcome) error {
				cl := a.wrapper().Checklist(ctx, s)
				if err := report.Save(ctx, s.Pool, cl); err != nil {
					return err
				}
				if asJSON {
					if err := json.NewEncoder(a.stdout).Encode(cl); err != nil {
						return err
					}
				} else {
					for _, c := range cl.Items {
						mark := "PASS"
						if !c.Passed {
							mark = "FAIL"
							if !c.Required {
								mark = "WARN"
							}
						}
						fmt.Fprintf(a.stdout, "%-4s %-45s %s\n", mark, c.Title, c.Evidence)
					}
				}
				if !cl.OK() {
					return withCode(ExitRefused, errors.New("pre-flight check failed: fix the FAIL items"))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// reportCommand builds the sign-off report from recorded facts.
func (a *app) reportCommand() *cobra.Command {
	var format, migration string
	cmd := &cobra.Command{
		Use:   "report",
		Short: "The compliance report from recorded facts (md, html, pdf or json); APPROVED only when every item has evidence",
		Long: `report writes the sign-off report of the current plan to stdout: md (Markdown),
html (a self-contained page with a print layout: no script, nothing loaded from
elsewhere), pdf (the HTML page printed by headless Chromium, which must be
installed: Debian's chromium package, or PGPHI_CHROMIUM; else exit 1) or json.
With --migration NAME (or its version), the report of one schema migration:
its history entry, the approvals of the plan id it ran under, its lint
findings and suppressions, and its run's audit records; a name the history
does not hold exits 2.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains([]string{"md", "html", "pdf", "json"}, format) {
				return withCode(ExitUsage, errors.New("usage: --format md, html, pdf or json"))
			}
			var browser *report.Browser
			if format == "pdf" {
				// Before anything is read: a missing browser is known now.
				b, err := report.FindBrowser()
				if err != nil {
					return withCode(ExitFailed, fmt.Errorf("--format pdf: %w", err))
				}
				browser = b
			}
			ctx := cmd.Context()
			if migration != "" {
				return a.migrationReport(ctx, migration, format, browser)
			}
			return a.guarded(ctx, guardSpec{Command: "report", Conns: 2}, "compliance report", func(ctx context.Context, s *session, out *outcome) error {
				f, err := a.wrapper().Facts(ctx, s)
				if err != nil {
					return err
				}
				out.Details["verdict"] = f.Verdict()
				out.Details["format"] = format
				if browser == nil {
					return report.Render(a.stdout, format, f)
				}
				var page bytes.Buffer
				if err := report.Render(&page, "html", f); err != nil {
					return err
				}
				pdf, err := browser.PDF(ctx, page.Bytes())
				if err != nil {
					return withCode(ExitFailed, fmt.Errorf("--format pdf: %w", err))
				}
				_, err = a.stdout.Write(pdf)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", "md", "md, html, pdf (through headless Chromium) or json")
	cmd.Flags().StringVar(&migration, "migration", "", "the sign-off report of one schema migration, by name (005_add_payment_table) or version")
	return cmd
}

// migrationReport is `report --migration NAME`: the sign-off report of one
// schema migration from its history entry and its run's audit records.
func (a *app) migrationReport(ctx context.Context, name, format string, browser *report.Browser) error {
	spec := guardSpec{Command: "report", Conns: 2, NoPlan: true, OptionalConfig: true}
	return a.guarded(ctx, spec, "migration report", func(ctx context.Context, s *session, out *outcome) error {
		f, err := a.wrapper().MigrationFacts(ctx, s, name)
		if errors.Is(err, compliance.ErrUnknownMigration) {
			return withCode(ExitUsage, fmt.Errorf("%w (`pgphi migrate status` lists them)", err))
		}
		if err != nil {
			return err
		}
		out.Details["migration"] = f.Name
		out.Details["verdict"] = f.Verdict()
		out.Details["format"] = format
		if browser == nil {
			return report.RenderMigration(a.stdout, format, f)
		}
		var page bytes.Buffer
		if err := report.RenderMigration(&page, "html", f); err != nil {
			return err
		}
		pdf, err := browser.PDF(ctx, page.Bytes())
		if err != nil {
			return withCode(ExitFailed, fmt.Errorf("--format pdf: %w", err))
		}
		_, err = a.stdout.Write(pdf)
		return err
	})
}
