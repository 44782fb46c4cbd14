package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
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
// rows advance, and that no planted value ever appears in a scrape.
func TestMetricsDuringApply(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
environment: test
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

	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	args := append(f.globals(), "apply", "--batch-size", "20", "--max-rate", "150",
		"--metrics-addr", "127.0.0.1:0", "--metrics-linger", "60s")
	cmd := exec.CommandContext(ctx, pgphiBin, args...)
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
	var exited bool
	defer func() {
		if !exited {
			cmd.Process.Kill()
			<-lines.done
			cmd.Wait()
		}
	}()

	// The bound address is printed on stderr before the work begins.
	var url string
	for url == "" {
		if l, ok := lines.find("metrics: serving "); ok {
			url = strings.TrimPrefix(l, "metrics: serving ")
			break
		}
		select {
		case <-lines.done:
			t.Fatalf("apply ended without serving metrics:\n%s", lines.text())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") || strings.HasSuffix(url, ":0/metrics") {
		t.Fatalf("metrics URL %q: want the bound loopback port", url)
	}

	// Scrape while it runs, until it says the command ended.
	var bodies []string
	var seenDone []float64
	sawRate, sawETA := false, false
	for {
		_, ended := lines.find("metrics: command ended")
		mfs, body, err := scrapeMetrics(t, url)
		if err != nil {
			select {
			case <-lines.done:
				t.Fatalf("apply ended before its final scrape:\n%s", lines.text())
			default:
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		bodies = append(bodies, body)
		if ended {
			// The final values.
			checkFinalApplyMetrics(t, mfs, rows)
			break
		}
		if v, ok := metricValue(mfs, "pgphi_rows_done", map[string]string{"phase": "backfill", "table": "public.patient"}); ok {
			if len(seenDone) == 0 || seenDone[len(seenDone)-1] != v {
				seenDone = append(seenDone, v)
			}
			if r, _ := metricValue(mfs, "pgphi_rate_rows_per_second", map[string]string{"phase": "backfill"}); r > 0 && v < rows {
				sawRate = true
				if e, _ := metricValue(mfs, "pgphi_eta_seconds", map[string]string{"phase": "backfill"}); e > 0 {
					sawETA = true
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	advancing := 0
	for _, v := range seenDone {
		if v > 0 && v < rows {
			advancing++
		}
	}
	if advancing == 0 || !sawRate || !sawETA {
		t.Errorf("during the run: rows_done went %v (want a value between 0 and %d), a positive rate %v, a positive ETA %v", seenDone, rows, sawRate, sawETA)
	}

	// The command ended; stop the linger early (SIGTERM) and expect success.
	cmd.Process.Signal(syscall.SIGTERM)
	<-lines.done
	err = cmd.Wait()
	exited = true
	if err != nil {
		t.Fatalf("apply: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), lines.text())
	}
	if !strings.Contains(stdout.String(), "every configured column is encrypted and verified") {
		t.Errorf("apply did not finish its work:\n%s", stdout.String())
	}
	for _, b := range append(bodies, lines.text(), stdout.String()) {
		if strings.Contains(b, canaryPrefix) {
			t.Fatalf("a planted value appeared in a scrape or in the output:\n%s", b)
		}
	}
	t.Logf("%d scrapes; rows_done seen: %v", len(bodies), seenDone)
}

func checkFinalApplyMetrics(t *testing.T, mfs map[string]*dto.MetricFamily, rows float64) {
	t.Helper()
	tbl := map[string]string{"table": "public.patient"}
	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
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
	}
	for _, w := range want {
		got, ok := metricValue(mfs, w.name, w.labels)
		if !ok || got != w.value {
			t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, got, ok, w.value)
		}
	}
	if _, ok := metricValue(mfs, "pgphi_rows_failed_total", nil); ok {
		t.Error("pgphi_rows_failed_total has samples, but no row failed")
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
