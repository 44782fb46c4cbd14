package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/demo"
	"github.com/pgphi/pgphi/internal/pgcluster"
	"github.com/pgphi/pgphi/keys"
)

// DemoConfig is the pgphi.yaml the demo writes for the Felicity tables (the configuration README.md documents).
const DemoConfig = `version: 1
environment: development
tables:
  patient:
    primary_key: uid
    columns:
      first_name:    { class: pii, search: [exact, prefix, phonetic] }
      middle_name:   { class: pii, search: [exact] }
      last_name:     { class: pii, search: [exact, prefix, contains, phonetic] }
      phone_mobile:  { class: pii, search: [phone] }
      phone_home:    { class: pii, search: [phone] }
      email:         { class: pii, search: [exact] }
      date_of_birth: { class: pii, search: [date] }
  patient_identification:
    columns:
      value: { class: pii, search: [exact], validate: { not_null: true } }
  analysis_result:
    columns: { result: { class: phi } }
  result_mutation:
    columns: { before: { class: phi }, after: { class: phi } }
  clinical_data:
    columns:
      symptoms_raw: { class: phi }
      clinical_indication: { class: phi }
      vitals: { class: phi }
      treatment_notes: { class: phi }
      other_context: { class: phi }
`

func (a *app) demoCommand() *cobra.Command {
	var patients, workers int
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "The whole story on a throwaway local PostgreSQL: data, config, keys, plan, apply under load, verify, status",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runDemo(cmd.Context(), patients, workers, keep)
		},
	}
	cmd.Flags().IntVar(&patients, "patients", 100_000, "synthetic patients to create (related rows scale with it)")
	cmd.Flags().IntVar(&workers, "workers", 2, "apply workers")
	cmd.Flags().BoolVar(&keep, "keep-files", false, "keep the demo's config directory (the cluster is always stopped)")
	return cmd
}

func (a *app) runDemo(ctx context.Context, patients, workers int, keep bool) error {
	if patients <= 0 {
		return withCode(ExitUsage, fmt.Errorf("usage: --patients must be positive"))
	}
	started := time.Now()
	a.logf("== starting a throwaway PostgreSQL cluster")
	cl, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		return withCode(ExitFailed, fmt.Errorf("starting PostgreSQL: %w", err))
	}
	defer func() {
		if err := cl.Stop(); err != nil {
			a.logf("stopping the demo cluster: %v", err)
		} else {
			a.logf("== demo cluster stopped and removed; nothing is left running")
		}
	}()
	a.logf("   listening on 127.0.0.1:%d, data in %s", cl.Port(), cl.DataDir())

	admin, err := dbconn.Conn(ctx, cl.URL("postgres"))
	if err != nil {
		return err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE felicity"); err != nil {
		admin.Close(ctx)
		return err
	}
	admin.Close(ctx)
	url := cl.URL("felicity")

	conn, err := dbconn.Conn(ctx, url)
	if err != nil {
		return err
	}
	a.logf("== creating the Felicity LIMS tables and %d synthetic patients with related rows", patients)
	loadStart := time.Now()
	if err := demo.CreateSchema(ctx, conn); err != nil {
		conn.Close(ctx)
		return err
	}
	counts, err := demo.Populate(ctx, conn, demo.Options{Patients: patients, Seed: 1})
	conn.Close(ctx)
	if err != nil {
		return err
	}
	totalRows := counts.Patients + counts.Identifications + counts.Results + counts.Mutations + counts.ClinicalData
	a.logf("   %d rows loaded in %s (patients %d, identifications %d, results %d, mutations %d, clinical %d)",
		totalRows, time.Since(loadStart).Round(time.Millisecond), counts.Patients, counts.Identifications, counts.Results, counts.Mutations, counts.ClinicalData)

	dir, err := os.MkdirTemp("", "pgphi-demo-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	// The passphrase was read once and taken out of the environment
	// (keys.CaptureSecrets); without any KEK source the demo uses a random
	// passphrase held in memory only, never put in the environment.
	if _, err := keys.ProviderFromEnv(); errors.Is(err, keys.ErrNoKEK) {
		pass := make([]byte, 24)
		if _, err := rand.Read(pass); err != nil {
			return err
		}
		keys.UsePassphrase(hex.EncodeToString(pass))
		defer keys.ForgetPassphrase()
		a.logf("== no PGPHI_PASSPHRASE, PGPHI_PASSPHRASE_FILE, PGPHI_PASSPHRASE_FD or PGPHI_KEY_FILE: using a random passphrase for this demo (not shown)")
	} else if err != nil {
		return withCode(ExitUsage, err)
	}
	suggested := filepath.Join(dir, "pgphi.suggested.yaml")
	cfgPath := filepath.Join(dir, "pgphi.yaml")
	var metricsURL string // where the first apply served its metrics
	runTo := func(out io.Writer, args ...string) error {
		fmt.Fprintf(a.stdout, "\n$ pgphi %s\n", strings.Join(args, " "))
		sub := &app{stdout: out, stderr: a.stderr}
		root := sub.rootCommand()
		root.SetArgs(append(args, "--database-url", url))
		root.SetOut(out)
		root.SetErr(a.stderr)
		err := root.ExecuteContext(ctx)
		if sub.metricsURL != "" && metricsURL == "" {
			metricsURL = sub.metricsURL
		}
		return err
	}
	run := func(args ...string) error { return runTo(a.stdout, args...) }
	if err := run("init", "--suggest", "--config", suggested); err != nil {
		return err
	}
	if body, err := os.ReadFile(suggested); err == nil {
		fmt.Fprint(a.stdout, string(body))
	}
	if err := os.WriteFile(cfgPath, []byte(DemoConfig), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "\n(the demo uses the curated config README.md documents, written to %s)\n", cfgPath)
	if err := run("keys", "init", "--config", cfgPath); err != nil {
		return err
	}
	if err := run("plan", "--config", cfgPath); err != nil {
		return err
	}

	// The application keeps working during apply: a writer inserts, updates
	// and deletes patients the whole time.
	app := &demoApp{url: url}
	appCtx, stopApp := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { app.run(appCtx) })
	applyStart := time.Now()
	// Prometheus metrics while it runs, on a free loopback port (printed).
	err = run("apply", "--config", cfgPath, "--workers", fmt.Sprint(workers), "--reason", "demo: encrypt PHI columns", "--metrics-addr", "127.0.0.1:0")
	applyTook := time.Since(applyStart)
	stopApp()
	wg.Wait()
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "\n(meanwhile the application wrote %d times: %d inserts, %d updates, %d deletes; %d errors)\n",
		app.inserts.Load()+app.updates.Load()+app.deletes.Load(), app.inserts.Load(), app.updates.Load(), app.deletes.Load(), app.errors.Load())
	// Rows the application wrote after apply's last pass are re-encrypted by a
	// second, quick apply: exactly what an operator does before cutover.
	if err := run("apply", "--config", cfgPath, "--reason", "demo: catch up"); err != nil {
		return err
	}
	if err := run("verify", "--config", cfgPath); err != nil {
		return err
	}
	if err := run("status", "--config", cfgPath); err != nil {
		return err
	}
	// Search still works on the encrypted columns; the demo shows how many
	// patients each lookup finds rather than listing them.
	for _, q := range [][]string{
		{"last_name", "--phonetic", "Smith"},
		{"last_name", "--contains", "son"},
		{"first_name", "--prefix", "Jea"},
		{"phone_mobile", "--last4", "0132"},
		{"date_of_birth", "--age-between", "30", "40"},
	} {
		var keys bytes.Buffer
		args := append([]string{"search", "--config", cfgPath, "patient"}, q...)
		args = append(args, "--reason", "demo lookup")
		start := time.Now()
		if err := runTo(&keys, args...); err != nil {
			return err
		}
		lines := strings.Fields(keys.String())
		shown := lines[:min(3, len(lines))]
		fmt.Fprintf(a.stdout, "%d matching patients in %s (first keys: %s)\n", len(lines), time.Since(start).Round(time.Millisecond), strings.Join(shown, ", "))
	}

	// Cutover and the end of the migration: flags, a fresh verification,
	// cleanup (drop and purge the plaintext), search from ciphertext only,
	// the pre-flight evidence, the audit trail and the sign-off report.
	var planJSON bytes.Buffer
	if err := runTo(&planJSON, "plan", "--config", cfgPath, "--json"); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, "(plan JSON not shown)")
	var planOut struct {
		PlanID string `json:"plan_id"`
	}
	if err := json.Unmarshal(planJSON.Bytes(), &planOut); err != nil {
		return err
	}
	for _, step := range [][]string{
		{"check", "--config", cfgPath},
		{"flags", "set", "use_encrypted_search", "on", "--config", cfgPath},
		{"flags", "set", "require_encryption", "on", "--config", cfgPath},
		{"verify", "--config", cfgPath},
		{"cleanup", "--config", cfgPath, "--confirm", planOut.PlanID, "--vacuum-full", "--reason", "demo: cutover complete"},
		{"status", "--config", cfgPath},
		{"audit", "verify", "--config", cfgPath},
		{"report", "--config", cfgPath, "--format", "md"},
	} {
		if err := run(step...); err != nil {
			return err
		}
	}
	// The same report as a page for the compliance officer's browser, kept
	// after the demo (the cluster and its config directory are not).
	var page bytes.Buffer
	if err := runTo(&page, "report", "--config", cfgPath, "--format", "html"); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, "(HTML report written to a file, below)")
	reportFile, err := os.CreateTemp("", "pgphi-demo-report-*.html")
	if err != nil {
		return err
	}
	if _, err := reportFile.Write(page.Bytes()); err != nil {
		reportFile.Close()
		return err
	}
	if err := reportFile.Close(); err != nil {
		return err
	}
	var keys bytes.Buffer
	if err := runTo(&keys, "search", "--config", cfgPath, "patient", "last_name", "--phonetic", "Smith", "--reason", "demo lookup after cleanup"); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "%d matching patients, found from ciphertext and blind indexes only\n", len(strings.Fields(keys.String())))

	fmt.Fprintf(a.stdout, "\n== where to look\n")
	fmt.Fprintf(a.stdout, "metrics:  apply served Prometheus metrics at %s while it ran (your runs: `pgphi apply --metrics-addr 127.0.0.1:9187`; alert rules deploy/prometheus/pgphi-rules.yaml, dashboard deploy/grafana/pgphi-dashboard.json)\n", orNone(metricsURL))
	fmt.Fprintf(a.stdout, "report:   %s (open it in a browser; `pgphi report --format pdf` prints it through headless Chromium)\n", reportFile.Name())
	fmt.Fprintf(a.stdout, "\n== summary: %d rows in 5 tables, 16 PHI columns encrypted with AES-256-GCM while the application wrote; first apply took %s (%.0f rows/s); verified, plaintext dropped and purged; whole demo %s\n",
		totalRows, applyTook.Round(time.Millisecond), float64(totalRows)/applyTook.Seconds(), time.Since(started).Round(time.Second))
	return nil
}

// demoApp plays the lab application during apply.
type demoApp struct {
	url                               string
	inserts, updates, deletes, errors atomic.Int64
}

func (d *demoApp) run(ctx context.Context) {
	conn, err := pgx.Connect(ctx, d.url)
	if err != nil {
		d.errors.Add(1)
		return
	}
	defer conn.Close(context.Background())
	n := 0
	for ctx.Err() == nil {
		n++
		var err error
		switch n % 4 {
		case 0, 1:
			_, err = conn.Exec(ctx, `INSERT INTO patient (uid, first_name, last_name, phone_mobile, date_of_birth, created_at)
				VALUES ($1, 'Zoë', 'Ngũgĩ-Walker', '+254 712 000' || lpad(($2 % 1000)::text, 3, '0'), date '1980-02-29' + $2, now())`,
				fmt.Sprintf("demo-app-%06d", n), n)
			if err == nil {
				d.inserts.Add(1)
			}
		case 2:
			_, err = conn.Exec(ctx, `UPDATE patient SET last_name = last_name || '-Smith', updated_at = now()
				WHERE uid = (SELECT uid FROM patient ORDER BY uid OFFSET $1 LIMIT 1)`, randInt(1000))
			if err == nil {
				d.updates.Add(1)
			}
		case 3:
			_, err = conn.Exec(ctx, `DELETE FROM patient WHERE uid = $1`, fmt.Sprintf("demo-app-%06d", n-3))
			if err == nil {
				d.deletes.Add(1)
			}
		}
		if err != nil && ctx.Err() == nil {
			d.errors.Add(1)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func randInt(n int64) int64 {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		return 0
	}
	return v.Int64()
}

func orNone(s string) string {
	if s == "" {
		return "(not served)"
	}
	return s
}
