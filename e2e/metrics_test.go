package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeMetrics GETs url and parses the text exposition format.
func scrapeMetrics(t testing.TB, url string) (map[string]*dto.MetricFamily, string, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("%s: not the text exposition format: %v\n%s", url, err, b)
	}
	return mfs, string(b), nil
}

// metricValue sums the samples of name whose labels include want.
func metricValue(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum, found
}

// lineWatcher collects a process's stderr lines and reports the first line
// containing a prefix.
type lineWatcher struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func watchLines(r io.Reader) *lineWatcher {
	w := &lineWatcher{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			w.mu.Lock()
			w.lines = append(w.lines, sc.Text())
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *lineWatcher) find(prefix string) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		// With --log-format json each line is a record; its msg is the line.
		var rec struct{ Msg string }
		if strings.HasPrefix(l, "{") && json.Unmarshal([]byte(l), &rec) == nil && rec.Msg != "" {
			l = rec.Msg
		}
		if strings.HasPrefix(l, prefix) {
			return l, true
		}
	}
	return "", false
}

func (w *lineWatcher) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// TestMetricsDuringApply runs apply with --metrics-addr on an ephemeral
// port, scrapes /metrics over HTTP while it runs and after it ends, and
// checks the counters against the table's rows, the rate and ETA while
// rows advance; then verify (rows and values verified), cleanup (its own
// verification) and rollback after cleanup behind a lock (rows restored,
// lock retries counted). No planted value ever appears in a scrape
// or in the output.
func TestMetricsDuringApply(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
environment: test
apply: { lock_timeout: 100ms }
tables:
  patient:
    columns:
      first_name: { class: pii, search: [exact] }
      notes: { class: phi }
`)
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	canary := canaryPrefix + hex.EncodeToString(rnd[:])
	const rows = 400
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, first_name text, notes text)`)
	f.exec(`INSERT INTO patient SELECT g, $1 || '-fn-' || g, $1 || '-nt-' || g FROM generate_series(1, $2) g`, canary, rows)
	f.mustRun("keys", "init")

	run := runScraped(t, f, "apply", "--batch-size", "20", "--max-rate", "150")
	checkFinalApplyMetrics(t, run.final, rows)
	var seenDone []float64
	// Distinct values seen while rows advance: the rate and the ETA are
	// recomputed as the run goes, not set once.
	rates, etas := map[float64]bool{}, map[float64]bool{}
	for _, mfs := range run.during {
		if v, ok := metricValue(mfs, "pgphi_rows_done", map[string]string{"phase": "backfill", "table": "public.patient"}); ok {
			if len(seenDone) == 0 || seenDone[len(seenDone)-1] != v {
				seenDone = append(seenDone, v)
			}
			if r, _ := metricValue(mfs, "pgphi_rate_rows_per_second", map[string]string{"phase": "backfill"}); r > 0 && v < rows {
				rates[r] = true
				if e, _ := metricValue(mfs, "pgphi_eta_seconds", map[string]string{"phase": "backfill"}); e > 0 {
					etas[e] = true
				}
			}
		}
	}
	advancing := 0
	for _, v := range seenDone {
		if v > 0 && v < rows {
			advancing++
		}
	}
	if advancing < 2 || len(rates) < 2 || len(etas) < 2 {
		t.Errorf("during the run: rows_done went %v (want two values between 0 and %d), %d distinct positive rates and %d distinct positive ETAs (want two of each)", seenDone, rows, len(rates), len(etas))
	}
	if !strings.Contains(run.stdout, "every configured column is encrypted and verified") {
		t.Errorf("apply did not finish its work:\n%s", run.stdout)
	}
	t.Logf("apply: %d scrapes; rows_done seen: %v", len(run.bodies), seenDone)
	outputs := []scrapedRun{run}

	// verify: every row and value counted, no mismatch.
	run = runScraped(t, f, "verify")
	outputs = append(outputs, run)
	expectMetrics(t, "verify", run.final, []expected{
		{"pgphi_rows_verified_total", map[string]string{"table": "public.patient"}, rows},
		{"pgphi_values_verified_total", map[string]string{"table": "public.patient"}, 2 * rows},
		{"pgphi_verification_mismatches_total", map[string]string{"table": "public.patient"}, 0},
		{"pgphi_run_finished", map[string]string{"result": "success"}, 1},
		{"pgphi_audit_records_total", map[string]string{"event": "success"}, 1},
	})

	// cleanup verifies every value itself before it drops the plaintext.
	lcCutOver(f)
	run = runScraped(t, f, "cleanup", "--confirm", lcPlanID(f), "--purge", "vacuum-full")
	outputs = append(outputs, run)
	expectMetrics(t, "cleanup", run.final, []expected{
		{"pgphi_rows_verified_total", map[string]string{"table": "public.patient"}, rows},
		{"pgphi_verification_mismatches_total", map[string]string{"table": "public.patient"}, 0},
		{"pgphi_run_finished", map[string]string{"result": "success"}, 1},
	})

	// rollback after cleanup, while a reader holds the table: its DDL waits
	// at most lock_timeout (100ms here), retries, and the retries are
	// counted; then every row's plaintext is restored from the ciphertext.
	c := f.conn()
	lctx, lcancel := context.WithTimeout(context.Background(), time.Minute)
	defer lcancel()
	tx, err := c.Begin(lctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(lctx, "LOCK TABLE patient IN ACCESS SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(2500 * time.Millisecond)
		tx.Rollback(lctx)
	}()
	run = runScraped(t, f, "rollback")
	<-released
	outputs = append(outputs, run)
	expectMetrics(t, "rollback", run.final, []expected{
		{"pgphi_run_finished", map[string]string{"result": "success"}, 1},
		{"pgphi_audit_records_total", map[string]string{"event": "start"}, 1},
		{"pgphi_rows_restored_total", map[string]string{"table": "public.patient"}, rows},
	})
	if v, _ := metricValue(run.final, "pgphi_lock_retries_total", nil); v < 1 {
		t.Errorf("rollback behind a lock: pgphi_lock_retries_total = %v, want at least 1\n%s", v, run.stderr)
	}
	if v, _ := metricValue(run.final, "pgphi_lock_wait_seconds_total", nil); v <= 0 {
		t.Errorf("rollback behind a lock: pgphi_lock_wait_seconds_total = %v, want > 0", v)
	}

	for _, o := range outputs {
		for _, b := range append(o.bodies, o.stdout, o.stderr) {
			if strings.Contains(b, canaryPrefix) {
				t.Fatalf("a planted value appeared in a scrape or in the output:\n%s", b)
			}
		}
	}
}

// scrapedRun is one pgphi command run with --metrics-addr: every scrape
// made while it ran, and the last one, made after the command ended.
type scrapedRun struct {
	during         []map[string]*dto.MetricFamily
	final          map[string]*dto.MetricFamily
	bodies         []string
	stdout, stderr string
}

// runScraped runs a pgphi command with --metrics-addr 127.0.0.1:0 and
// --metrics-linger, finds the bound address on stderr, scrapes /metrics
// every 50ms until the command says it ended, scrapes once more, then ends
// the linger with SIGTERM and expects exit 0.
func runScraped(t *testing.T, f *fixture, args ...string) scrapedRun {
	t.Helper()
	return runScrapedExit(t, f, 0, args...)
}

// runScrapedExit is runScraped expecting exit code want.
func runScrapedExit(t *testing.T, f *fixture, want int, args ...string) scrapedRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	all := append(append(f.globals(), args...), "--metrics-addr", "127.0.0.1:0", "--metrics-linger", "60s")
	cmd := exec.CommandContext(ctx, pgphiBin, all...)
	cmd.Env = append(cleanEnv(), f.env...)
	cmd.Dir = t.TempDir()
	var stdout strings.Builder
	cmd.Stdout = &stdout
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := watchLines(errPipe)
	exited := false
	defer func() {
		if !exited {
			cmd.Process.Kill()
			<-lines.done
			cmd.Wait()
		}
	}()
	var url string
	for url == "" {
		if l, ok := lines.find("metrics: serving "); ok {
			url = strings.TrimPrefix(l, "metrics: serving ")
			break
		}
		select {
		case <-lines.done:
			t.Fatalf("pgphi %s ended without serving metrics:\n%s", strings.Join(args, " "), lines.text())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") || strings.HasSuffix(url, ":0/metrics") {
		t.Fatalf("metrics URL %q: want the bound loopback port", url)
	}
	var run scrapedRun
	for {
		_, ended := lines.find("metrics: command ended")
		mfs, body, err := scrapeMetrics(t, url)
		if err != nil {
			select {
			case <-lines.done:
				t.Fatalf("pgphi %s ended before its final scrape:\n%s", strings.Join(args, " "), lines.text())
			default:
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		run.bodies = append(run.bodies, body)
		if ended {
			run.final = mfs
			break
		}
		run.during = append(run.during, mfs)
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	<-lines.done
	err = cmd.Wait()
	exited = true
	run.stdout, run.stderr = stdout.String(), lines.text()
	if code := cmd.ProcessState.ExitCode(); code != want {
		t.Fatalf("pgphi %s: exit %d (%v), want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, err, want, run.stdout, run.stderr)
	}
	t.Logf("pgphi %s: %d scrapes", strings.Join(args, " "), len(run.bodies))
	return run
}

type expected struct {
	name   string
	labels map[string]string
	value  float64
}

func expectMetrics(t *testing.T, what string, mfs map[string]*dto.MetricFamily, want []expected) {
	t.Helper()
	for _, w := range want {
		got, ok := metricValue(mfs, w.name, w.labels)
		if !ok || got != w.value {
			t.Errorf("%s: %s%v = %v (present %v), want %v", what, w.name, w.labels, got, ok, w.value)
		}
	}
}

func checkFinalApplyMetrics(t *testing.T, mfs map[string]*dto.MetricFamily, rows float64) {
	t.Helper()
	tbl := map[string]string{"table": "public.patient"}
	expectMetrics(t, "apply", mfs, []expected{
		{"pgphi_up", nil, 1},
		{"pgphi_rows_encrypted_total", tbl, rows}, // backfill plus catch-up: every row once (no application writes)
		{"pgphi_rows_encrypted_total", map[string]string{"phase": "backfill", "table": "public.patient"}, rows},
		{"pgphi_rows_verified_total", tbl, rows},
		{"pgphi_values_verified_total", tbl, 2 * rows},
		{"pgphi_verification_mismatches_total", tbl, 0},
		{"pgphi_rows_done", map[string]string{"phase": "backfill", "table": "public.patient"}, rows},
		{"pgphi_rows_planned", map[string]string{"phase": "backfill", "table": "public.patient"}, rows},
		{"pgphi_eta_seconds", map[string]string{"phase": "backfill", "table": "public.patient"}, 0},
		{"pgphi_batches_total", map[string]string{"phase": "backfill", "result": "ok"}, rows / 20},
		{"pgphi_throttle_state", map[string]string{"state": "capped"}, 1},
		{"pgphi_throttle_limit_rows_per_second", nil, 150},
		{"pgphi_batch_failure_ratio", nil, 0},
		{"pgphi_audit_records_total", map[string]string{"event": "start"}, 1},
		{"pgphi_audit_records_total", map[string]string{"event": "success"}, 1},
		{"pgphi_run_finished", map[string]string{"result": "success"}, 1},
	})
	if _, ok := metricValue(mfs, "pgphi_rows_failed_total", nil); ok {
		t.Error("pgphi_rows_failed_total has samples, but no row failed")
	}
	if _, ok := metricValue(mfs, "pgphi_errors_total", nil); ok {
		t.Error("pgphi_errors_total has samples, but nothing failed")
	}
	info := mfs["pgphi_info"].GetMetric()
	if len(info) != 1 {
		t.Fatalf("pgphi_info: %d samples", len(info))
	}
	labels := map[string]string{}
	for _, l := range info[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["command"] != "apply" || len(labels["plan_id"]) < 8 || labels["version"] == "" {
		t.Errorf("pgphi_info labels %v: want command apply, the plan id and a version", labels)
	}
	if _, ok := mfs["process_resident_memory_bytes"]; !ok {
		t.Error("no process_resident_memory_bytes (pgphi's RSS)")
	}
}

// TestMetricsAddrUsage: a bad --metrics-addr is a usage error (exit 2)
// with a message that says what to write, before anything is done.
func TestMetricsAddrUsage(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
environment: test
tables:
  patient:
    columns:
      first_name: { class: pii }
`)
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, first_name text)`)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"apply", "--metrics-addr", ":9187"}, []string{"--metrics-addr", "127.0.0.1:9187", "0.0.0.0:9187"}},
		{[]string{"apply", "--metrics-addr", "9187"}, []string{"--metrics-addr", "HOST:PORT"}},
		{[]string{"verify", "--metrics-addr", "metrics.example.com:9187"}, []string{"--metrics-addr", "IP address or localhost"}},
		{[]string{"rollback", "--metrics-addr", "127.0.0.1:99999"}, []string{"--metrics-addr", "0 to 65535"}},
		{[]string{"cleanup", "--confirm", "x", "--metrics-addr", busy.Addr().String()}, []string{"--metrics-addr", "in use"}},
		{[]string{"apply", "--metrics-linger", "5s"}, []string{"--metrics-linger needs --metrics-addr"}},
		{[]string{"--log-format", "xml", "apply"}, []string{"--log-format is text or json"}},
	} {
		r := f.run(c.args...)
		if r.code != 2 {
			t.Errorf("want exit 2, got %s", r)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%v: stderr does not say %q:\n%s", c.args, w, r.stderr)
			}
		}
	}
	// Nothing ran: no pgphi schema was created.
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgphi'"); n != 0 {
		t.Errorf("a usage error still created schema pgphi")
	}
}
