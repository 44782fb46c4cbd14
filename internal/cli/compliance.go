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
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/backup"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/report"
	"github.com/pgphi/pgphi/keys"
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
				cl := a.runChecks(ctx, s)
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

func (a *app) runChecks(ctx context.Context, s *session) *report.Checklist {
	cl := &report.Checklist{PlanID: s.Plan.ID}
	add := func(c report.Check) { cl.Items = append(cl.Items, c) }

	// TLS: the connection as it is, and the policy for this environment.
	tlsCheck := report.Check{ID: "tls", Title: "connection encrypted as the environment requires", Required: true, Passed: true}
	if conn, err := s.Pool.Acquire(ctx); err == nil {
		tlsCheck.Evidence = dbconn.DescribeConn(conn.Conn().PgConn())
		conn.Release()
	}
	tlsCheck.Evidence += fmt.Sprintf("; environment %s (production requires verify-full or a pinned key off loopback)", s.Cfg.Environment)
	add(tlsCheck)

	// Audit sink.
	ac := report.Check{ID: "audit", Title: "audit trail writable and chain valid", Required: true}
	if rep, err := audit.Verify(ctx, s.Pool); err != nil {
		ac.Evidence = "cannot verify: " + err.Error()
	} else {
		ac.Passed = len(rep.Problems) == 0
		ac.Evidence = fmt.Sprintf("%d records, head #%d, %d problems; mirror %s", rep.Records, rep.HeadSeq, len(rep.Problems), s.Cfg.Resolve(s.Cfg.Audit.File))
	}
	add(ac)

	// Role.
	rc := report.Check{ID: "role", Title: "connected role may run apply", Required: true}
	if role, err := policy.CheckAccess(ctx, s.Pool, s.Pins.Roles, "apply", s.Pins.AllowSuperuser); err != nil {
		rc.Evidence = err.Error()
	} else {
		rc.Passed, rc.Evidence = true, "acts as "+string(role)
	}
	add(rc)

	// Keys.
	kc := report.Check{ID: "keys", Title: "keys loadable", Required: true}
	if ring, err := loadKeys(ctx, s.Pool); err != nil {
		kc.Evidence = err.Error()
	} else {
		kc.Passed, kc.Evidence = true, fmt.Sprintf("data key %d active (key material not shown)", ring.ActiveKeyID())
	}
	add(kc)
	add(keyUsageCheck(ctx, s))
	add(backupCheck(ctx, s))

	// Approvals.
	apc := report.Check{ID: "approvals", Title: "approvals present for this plan", Required: true}
	if res, err := a.wrapper().ApprovalResult(ctx, s, s.Plan.ID, "apply"); err != nil {
		apc.Evidence = err.Error()
	} else {
		apc.Passed = true
		if len(s.Pins.Approvals[s.Pins.Environment]) == 0 {
			apc.Evidence = "environment " + s.Pins.Environment + " requires no approvals (pinned policy)"
		} else {
			var who []string
			for _, ap := range res.Valid {
				who = append(who, ap.Signer+" ("+string(ap.Role)+")")
			}
			apc.Evidence = "approved by " + strings.Join(who, ", ")
		}
	}
	add(apc)

	// Validation.
	vc := report.Check{ID: "validation", Title: "PHI validation rules hold", Required: s.Cfg.ValidationFails()}
	cl.ValidationRules = -1
	if res, err := engine.Validate(ctx, s.Pool, s.Cfg, s.Plan); err != nil {
		vc.Evidence = err.Error()
	} else {
		vc.Passed = len(res.Violations) == 0
		var v []string
		for _, x := range res.Violations {
			v = append(v, fmt.Sprintf("%s.%s %s: %d rows", x.Table, x.Column, x.Rule, x.Rows))
		}
		cl.ValidationRules, cl.ValidationViolations = len(res.Checked), v
		vc.Evidence = fmt.Sprintf("%d rules checked", len(res.Checked))
		if len(v) > 0 {
			vc.Evidence += "; violations: " + strings.Join(v, "; ")
		}
	}
	add(vc)

	add(report.ServerLogSettings(ctx, s.Pool))
	add(report.Pgaudit(ctx, s.Pool))
	var tables []string
	for _, t := range s.Plan.Tables {
		tables = append(tables, t.QualifiedName())
	}
	add(report.Disk(ctx, s.Pool, tables, freeBytes))
	add(report.Triggers(engine.CheckTriggers(ctx, s.Pool, s.Plan)))
	add(report.Dependencies(s.Plan.CheckBlockers(), s.Plan.Dependencies))
	ownerFindings, ownerErr := engine.OwnerCodeReport(ctx, s.Pool, s.Plan)
	add(report.OwnerCode(ownerFindings, ownerErr, s.Cfg.IsProduction()))
	add(leakageCheck(ctx, s))
	return cl
}

func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// reportCommand builds the sign-off report from recorded facts.
func (a *app) reportCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "report",
		Short: "The compliance report from recorded facts (md, html, pdf or json); APPROVED only when every item has evidence",
		Long: `report writes the sign-off report of the current plan to stdout: md (Markdown),
html (a self-contained page with a print layout: no script, nothing loaded from
elsewhere), pdf (the HTML page printed by headless Chromium, which must be
installed: Debian's chromium package, or PGPHI_CHROMIUM; else exit 1) or json.`,
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
			return a.guarded(ctx, guardSpec{Command: "report", Conns: 2}, "compliance report", func(ctx context.Context, s *session, out *outcome) error {
				f, err := a.gatherFacts(ctx, s)
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
	return cmd
}

// columnLeakage measures the leakage of the blind indexes for the report,
// keyed by (qualified table, column), when the keys are at hand (a dba or
// healthcare_admin with the KEK); without them the report says "not
// measured" and the leakage item of the last check stands as evidence.
func columnLeakage(ctx context.Context, s *session) (map[[2]string][]report.LeakageFact, error) {
	if _, err := keys.ProviderFromEnv(); err != nil {
		return nil, nil
	}
	ring, err := loadKeys(ctx, s.Pool)
	if err != nil {
		return nil, nil
	}
	measured, err := engine.MeasureLeakage(ctx, s.Pool, ring, s.Plan, s.Cfg.IsProduction())
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	out := map[[2]string][]report.LeakageFact{}
	for _, m := range measured {
		k := [2]string{m.Table, m.Column}
		for _, f := range m.Families {
			out[k] = append(out[k], report.LeakageFact{Family: string(f.SubKind), MeanValues: f.MeanValuesPerTerm,
				MinValues: float64(f.MinValuesPerTerm), AcceptedLeakage: m.Accepted != "", MeasuredAt: now})
		}
		out[k] = append(out[k], report.LeakageFact{Family: "whole term set", MeanValues: m.MeanValuesPerArray,
			MinValues: float64(m.MinValuesPerArray), AcceptedLeakage: m.Accepted != "", MeasuredAt: now})
	}
	return out, nil
}

func (a *app) gatherFacts(ctx context.Context, s *session) (*report.Facts, error) {
	f := &report.Facts{PlanID: s.Plan.ID, Environment: s.Cfg.Environment, GeneratedAt: time.Now().UTC()}
	_ = s.Pool.QueryRow(ctx, "SELECT current_database()").Scan(&f.Database)
	_ = s.Pool.QueryRow(ctx, "SELECT created_at, completed_at FROM pgphi.plans WHERE plan_id = $1", s.Plan.ID).Scan(&f.PlanCreated, &f.Completed)
	_ = s.Pool.QueryRow(ctx, "SELECT max(cleaned_at) FROM pgphi.protected_columns").Scan(&f.CleanedUp)
	if bc := backupCheck(ctx, s); bc.Evidence != "" {
		bf := &report.BackupFact{OK: bc.Passed, Required: bc.Required, Evidence: bc.Evidence}
		if st, err := backup.LatestVerified(ctx, s.Pool, s.Pins.MaxBackupAge()); err == nil {
			bf.Format, bf.BackupID = st.Format, st.BackupID
		}
		f.Backup = bf
	}

	st, err := engine.GetStatus(ctx, s.Pool, s.Plan)
	if err != nil {
		return nil, err
	}
	for _, c := range st.Columns {
		cf := report.ColumnFact{Table: c.Table, Column: c.Column, Phase: "planned", Encrypted: c.Encrypted, Pending: c.Pending}
		if st.Applied {
			cf.Phase = "expanded"
		}
		for _, t := range s.Plan.Tables {
			for _, tc := range t.Columns {
				if t.QualifiedName() != c.Table || tc.Name != c.Column {
					continue
				}
				if tc.Cleaned {
					cf.Phase = "cleaned"
				}
				var search []string
				for _, k := range tc.Search {
					search = append(search, string(k))
				}
				cf.Class, cf.Search = tc.Class, strings.Join(search, ", ")
			}
		}
		f.Columns = append(f.Columns, cf)
	}
	measured, err := columnLeakage(ctx, s)
	if err != nil {
		return nil, err
	}
	for i := range f.Columns {
		f.Columns[i].Leakage = measured[[2]string{f.Columns[i].Table, f.Columns[i].Column}]
	}
	if f.Checklist, err = report.Latest(ctx, s.Pool, s.Plan.ID); err != nil {
		return nil, err
	}
	// Approvals: valid ones only (Check re-verifies every signature), under
	// the pinned policy.
	if len(s.Pins.Approvals[s.Pins.Environment]) == 0 {
		f.ApprovalsOK, f.ApprovalNote = true, "environment "+s.Pins.Environment+" requires no approvals"
	} else if res, err := a.wrapper().ApprovalResult(ctx, s, s.Plan.ID, "apply"); err != nil {
		f.ApprovalsOK, f.ApprovalNote = false, err.Error()
	} else {
		f.ApprovalsOK, f.ApprovalNote = true, "the environment's pinned approval policy is met"
		for _, ap := range res.Valid {
			f.Approvals = append(f.Approvals, report.ApprovalFact{Signer: ap.Signer, Role: string(ap.Role), SignedAt: ap.SignedAt, Fingerprint: ap.Fingerprint,
				PlanID: ap.PlanID, Command: ap.Command, Environment: ap.Environment, Database: ap.Database, Expires: ap.Expires})
		}
	}
	// Validation evidence comes from the pre-flight checklist when there is
	// one: after cleanup there is no plaintext left to validate.
	if f.Checklist != nil && f.Checklist.ValidationRules >= 0 {
		vf := &report.ValidationFact{Rules: f.Checklist.ValidationRules, Violations: f.Checklist.ValidationViolations,
			Source: "pre-flight check " + f.Checklist.CheckedAt.UTC().Format(time.RFC3339)}
		f.Validation = vf
	} else if res, err := engine.Validate(ctx, s.Pool, s.Cfg, s.Plan); err == nil {
		vf := &report.ValidationFact{Rules: len(res.Checked), Source: "live"}
		for _, x := range res.Violations {
			vf.Violations = append(vf.Violations, fmt.Sprintf("%s.%s %s: %d rows", x.Table, x.Column, x.Rule, x.Rows))
		}
		f.Validation = vf
	}
	var v report.VerifyFact
	if err := s.Pool.QueryRow(ctx, `SELECT finished_at, ok, rows_checked, values_checked, mismatches, pending FROM pgphi.verifications
		WHERE plan_id = $1 AND recorded_by IS NOT NULL AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1`, s.Plan.ID).Scan(&v.At, &v.OK, &v.Rows, &v.Values, &v.Mismatches, &v.Pending); err == nil {
		f.Verification = &v
	}
	if rep, err := audit.Verify(ctx, s.Pool); err == nil {
		f.Audit = report.AuditFact{Records: rep.Records, HeadSeq: rep.HeadSeq, Head: rep.Head, Valid: len(rep.Problems) == 0, Problems: len(rep.Problems)}
	}
	f.Audit.Checkpoint = latestCheckpoint(ctx, s)
	if f.Alerts, err = report.RecordedAlerts(ctx, s.Pool, s.Plan.ID); err != nil {
		return nil, err
	}
	if f.Migrations, err = report.MigrationHistory(ctx, s.Pool); err != nil {
		return nil, err
	}
	return f, nil
}

// latestCheckpoint is the newest signed checkpoint of the audit trail,
// proven against the pinned audit key (signature, and the chain extends
// the signed record) when one is pinned.
func latestCheckpoint(ctx context.Context, s *session) *report.CheckpointFact {
	var cp audit.Checkpoint
	err := s.Pool.QueryRow(ctx, `SELECT seq, hash, signed_at, key_fingerprint, signature FROM pgphi.audit_checkpoints
		ORDER BY seq DESC, signed_at DESC LIMIT 1`).Scan(&cp.Seq, &cp.Hash, &cp.Time, &cp.KeyFingerprint, &cp.Signature)
	if err != nil {
		return nil
	}
	f := &report.CheckpointFact{Seq: cp.Seq, Hash: cp.Hash, SignedAt: cp.Time, KeyFingerprint: cp.KeyFingerprint}
	if s.Pins.AuditPublicKey == "" {
		f.Note = "no audit public key is pinned to check its signature against"
		return f
	}
	pub, err := policy.ParseAuthorizedKey(s.Pins.AuditPublicKey)
	if err != nil {
		f.Note = "the pinned audit key does not parse"
		return f
	}
	if err := audit.ProveCheckpoint(ctx, s.Pool, &cp, []ed25519.PublicKey{pub}); err != nil {
		f.Note = err.Error()
		return f
	}
	f.Proven = true
	return f
}
