package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgphi/pgphi/internal/audit"
)

// alertHook is what the on_alert hook received on stdin.
type alertHook struct {
	Phase   string `json:"phase"`
	Command string `json:"command"`
	PlanID  string `json:"plan_id"`
	Alert   *struct {
		Threshold string  `json:"threshold"`
		Measured  float64 `json:"measured"`
		Limit     float64 `json:"limit"`
		Unit      string  `json:"unit"`
		Table     string  `json:"table"`
	} `json:"alert"`
}

func readAlertHooks(t *testing.T, path string) (map[string]alertHook, string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]alertHook{}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var h alertHook
		if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
			t.Fatalf("on_alert hook context is not JSON: %v", err)
		}
		if h.Alert != nil {
			out[h.Alert.Threshold] = h
		}
	}
	return out, string(raw)
}

func alertRecords(t *testing.T, f *fixture) map[string]audit.Record {
	t.Helper()
	rows, err := f.conn().Query(context.Background(), `SELECT record::text FROM pgphi.audit_log WHERE record->>'event' = 'alert' ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]audit.Record{}
	for rows.Next() {
		var text string
		if err := rows.Scan(&text); err != nil {
			t.Fatal(err)
		}
		rec, err := audit.ParseRecord([]byte(text))
		if err != nil {
			t.Fatalf("alert record: %v", err)
		}
		out[rec.Details["threshold"]] = rec
	}
	return out
}

// TestAlertThresholds triggers each of the four alert thresholds against a
// real PostgreSQL and finds each in the on_alert hook's JSON context, in
// the audit trail (event alert, value-free details) and in the metrics
// scraped over HTTP:
//   - response time: the configured canary query slows down (a control
//     row makes it sleep) while apply runs;
//   - storage: rows with large unprotected data arrive during the apply,
//     beyond 150 % of the plan's estimate;
//   - search accuracy: after apply, the blind index terms of the rows are
//     exchanged between rows (as a superuser could), and verify samples
//     searches whose encrypted answers now miss the plaintext answers;
//   - failure rate: the table owner's trigger fails half of the backfill's
//     updates with a serialization failure, and apply stops.
//
// The planted values appear nowhere: not in the hook contexts, the audit
// records, the scrapes, nor the JSON logs.
func TestAlertThresholds(t *testing.T) {
	t.Parallel()
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	canary := canaryPrefix + hex.EncodeToString(rnd[:])
	dir := t.TempDir()
	hookOut := filepath.Join(dir, "alerts.jsonl")
	hook := filepath.Join(dir, "on-alert.sh")
	writeFile(t, hook, "#!/bin/sh\ncat >> '"+hookOut+"'\necho >> '"+hookOut+"'\n")
	if err := os.Chmod(hook, 0o755); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, `version: 1
environment: test
apply: { batch_size: 20, canary_query: "SELECT pg_sleep(s) FROM public.slowdown" }
hooks:
  on_alert: [`+hook+`]
tables:
  patient:
    columns:
      first_name: { class: pii, search: [exact] }
      notes: { class: phi }
`)
	// The response-time test needs the adaptive throttle that the other
	// tests turn off.
	f.env = append(f.env, "PGPHI_ADAPTIVE=on")
	const rows = 600
	f.exec(`CREATE TABLE slowdown (s float8 NOT NULL); INSERT INTO slowdown VALUES (0)`)
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, first_name text, notes text, pad text)`)
	f.exec(`INSERT INTO patient SELECT g, $1 || '-fn-' || (g % 50), $1 || '-nt-' || g FROM generate_series(1, $2) g`, canary, rows)
	f.exec(`ANALYZE patient`)
	f.mustRun("keys", "init")

	// 1 and 2: response time and storage, during one apply.
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := f.conn()
		for !stop.Load() {
			var n int64
			if err := c.QueryRow(ctx, `SELECT count(*) FROM pgphi.chunks WHERE rows_done > 0`).Scan(&n); err == nil && n > 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if stop.Load() {
			return
		}
		if _, err := c.Exec(ctx, `UPDATE slowdown SET s = 0.3`); err != nil {
			t.Errorf("slowing the canary: %v", err)
		}
		// 300 rows of about 20 kB each, of random text (TOAST cannot
		// compress it away), and no protected value.
		if _, err := c.Exec(ctx, `INSERT INTO patient (id, pad)
			SELECT 100000 + g, (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 640) i)
			FROM generate_series(1, 300) g`); err != nil {
			t.Errorf("growing the table: %v", err)
		}
	}()
	run := runScrapedExit(t, f, 0, "--log-format", "json", "apply", "--max-rate", "120")
	stop.Store(true)
	<-done
	f.exec(`UPDATE slowdown SET s = 0`)
	outputs := []string{run.stdout, run.stderr}
	outputs = append(outputs, run.bodies...)
	for _, th := range []string{"response_time", "storage"} {
		if v, _ := metricValue(run.final, "pgphi_alert", map[string]string{"threshold": th}); v != 1 {
			t.Errorf("apply: pgphi_alert{threshold=%q} = %v, want 1\n%s", th, v, run.stderr)
		}
	}
	if v, _ := metricValue(run.final, "pgphi_alert", map[string]string{"threshold": "failure_rate"}); v != 0 {
		t.Errorf("apply: failure_rate alert fired without failures")
	}
	size, _ := metricValue(run.final, "pgphi_table_size_bytes", map[string]string{"table": "public.patient"})
	expected, _ := metricValue(run.final, "pgphi_table_expected_size_bytes", map[string]string{"table": "public.patient"})
	if expected <= 0 || size <= 1.5*expected {
		t.Errorf("apply: table size %v against expected %v: want above 150 %%", size, expected)
	}
	if v, ok := metricValue(run.final, "pgphi_search_accuracy_ratio", map[string]string{"table": "public.patient"}); !ok || v != 1 {
		t.Errorf("apply: search accuracy %v (present %v), want 1", v, ok)
	}
	// The JSON log: one record per line, alerts as warnings with numbers.
	sawAlert := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(run.stderr), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("--log-format json: a line is not a JSON record: %q", l)
		}
		if rec["msg"] == "alert" && rec["level"] == "WARN" {
			sawAlert[rec["threshold"].(string)] = true
		}
	}
	if !sawAlert["response_time"] || !sawAlert["storage"] {
		t.Errorf("--log-format json: alert records %v, want response_time and storage", sawAlert)
	}

	// 3: search accuracy, after the terms were exchanged between rows.
	f.exec(`UPDATE patient p SET first_name_bidx = q.first_name_bidx FROM patient q
		WHERE p.id <= $1 AND q.id = p.id % $1 + 1 AND p.first_name IS DISTINCT FROM q.first_name`, rows)
	vrun := runScrapedExit(t, f, 1, "verify")
	outputs = append(outputs, vrun.stdout, vrun.stderr)
	outputs = append(outputs, vrun.bodies...)
	if v, _ := metricValue(vrun.final, "pgphi_alert", map[string]string{"threshold": "search_accuracy"}); v != 1 {
		t.Errorf("verify: pgphi_alert{search_accuracy} = %v, want 1", v)
	}
	if v, _ := metricValue(vrun.final, "pgphi_search_accuracy_ratio", map[string]string{"table": "public.patient"}); v >= 0.95 {
		t.Errorf("verify: accuracy %v, want below 0.95", v)
	}
	if !strings.Contains(vrun.stderr, "ALERT search_accuracy public.patient") {
		t.Errorf("verify: no accuracy alert or failure on stderr:\n%s", vrun.stderr)
	}

	// 4: failure rate: the owner's trigger refuses half of the updates.
	g := newFixture(t, `version: 1
environment: test
apply: { batch_size: 10 }
hooks:
  on_alert: [`+hook+`]
tables:
  patient:
    columns:
      first_name: { class: pii }
`)
	g.exec(`CREATE TABLE patient (id int PRIMARY KEY, first_name text)`)
	g.exec(`INSERT INTO patient SELECT g, $1 || '-g-' || g FROM generate_series(1, 400) g`, canary)
	g.exec(`CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF random() < 0.5 THEN
				RAISE EXCEPTION 'could not serialize' USING ERRCODE = '40001';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER a_flaky BEFORE UPDATE ON patient FOR EACH ROW EXECUTE FUNCTION flaky()`)
	g.mustRun("keys", "init")
	frun := runScrapedExit(t, g, 1, "apply")
	outputs = append(outputs, frun.stdout, frun.stderr)
	outputs = append(outputs, frun.bodies...)
	if v, _ := metricValue(frun.final, "pgphi_alert", map[string]string{"threshold": "failure_rate"}); v != 1 {
		t.Errorf("apply: pgphi_alert{failure_rate} = %v, want 1\n%s", v, frun.stderr)
	}
	if !strings.Contains(frun.stderr, "batches failed") || !strings.Contains(frun.stderr, "ALERT failure_rate") {
		t.Errorf("apply did not stop on the failure rate with an alert:\n%s", frun.stderr)
	}

	// The hook saw all four, with numbers only.
	hooks, hookText := readAlertHooks(t, hookOut)
	outputs = append(outputs, hookText)
	for _, th := range []string{"response_time", "storage", "search_accuracy", "failure_rate"} {
		h, ok := hooks[th]
		if !ok {
			t.Errorf("on_alert hook: no %s alert; got:\n%s", th, hookText)
			continue
		}
		if h.Phase != "on_alert" || h.PlanID == "" || h.Alert.Unit == "" {
			t.Errorf("on_alert hook context for %s: %+v", th, h)
		}
		if th == "search_accuracy" && !(h.Alert.Measured < h.Alert.Limit) || th != "search_accuracy" && !(h.Alert.Measured > h.Alert.Limit) {
			t.Errorf("on_alert %s: measured %v against limit %v", th, h.Alert.Measured, h.Alert.Limit)
		}
	}
	// The audit trail of each database holds its alerts.
	recs := alertRecords(t, f)
	for k, v := range alertRecords(t, g) {
		recs[k] = v
	}
	for _, th := range []string{"response_time", "storage", "search_accuracy", "failure_rate"} {
		rec, ok := recs[th]
		if !ok {
			t.Errorf("audit trail: no alert record for %s", th)
			continue
		}
		if rec.Details["measured"] == "" || rec.Details["limit"] == "" || rec.RunID == "" {
			t.Errorf("audit alert record %s: %+v", th, rec.Details)
		}
		b, _ := json.Marshal(rec)
		outputs = append(outputs, string(b))
	}
	if r := f.mustRun("audit", "verify"); !strings.Contains(r.stdout, "audit trail verified") {
		t.Errorf("audit verify after alerts: %s", r)
	}
	for _, o := range outputs {
		if strings.Contains(o, canaryPrefix) {
			t.Fatalf("a planted value reached an output:\n%s", o)
		}
	}
}
