package metrics

import (
	"github.com/pgphi/pgphi/internal/alert"

	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// exercise calls every method of a Recorder, so every metric has a sample.
func exercise(r *Recorder) {
	r.SetPlan("plan-0123abcd", []string{"public.patient"})
	r.SetThrottle(func() ThrottleState {
		return ThrottleState{State: "throttled", Limit: 100, Latency: 30 * time.Millisecond, Baseline: 10 * time.Millisecond, Attempts: 40, Failures: 1, FailureLimit: 0.05}
	})
	r.Batch("backfill", "public.patient", 50, "ok", "")
	r.Batch("catchup", "public.patient", 0, "retried", "SQLSTATE 55P03")
	r.Batch("restore", "public.patient", 7, "ok", "")
	r.Batch("backfill", "public.patient", 0, "unencryptable", "unencryptable value")
	r.Verified("public.patient", 50, 100, 0)
	r.LockRetry(2 * time.Second)
	r.Error("verification mismatch")
	r.AuditRecord("start")
	r.Finished("success")
	r.Alert(alert.Alert{Threshold: alert.Storage, Measured: 3e8, Limit: 2e8, Unit: "bytes", Table: "public.patient"})
	r.TableSize("public.patient", 3e8, 2e8)
	r.DatabaseSize(4e8)
	r.SearchAccuracy("public.patient", 12, 1)
	r.MigrationsPlanned(2)
	r.MigrationStarted(5)
	r.MigrationStatement()
	r.MigrationDone(5)
	r.RunnerLockWait(time.Second)
	f := r.Progress(func(label string, total int64, poll func(context.Context) (int64, error)) interface{ Stop() } {
		poll(context.Background())
		return nopStop{}
	})
	f("backfill public.patient", 100, func(context.Context) (int64, error) { return 40, nil })
}

// exercisedNames is every metric name a Recorder exports once exercised.
func exercisedNames(t *testing.T) []string {
	t.Helper()
	r := New("apply")
	exercise(r)
	mfs, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	return names
}

func TestNamesListsEveryMetric(t *testing.T) {
	var own []string
	for _, n := range exercisedNames(t) {
		if strings.HasPrefix(n, "pgphi_") {
			own = append(own, n)
		}
	}
	if !slices.Equal(own, Names()) {
		t.Fatalf("exported pgphi_* metrics:\n%q\nNames():\n%q", own, Names())
	}
	if !slices.Contains(exercisedNames(t), "process_resident_memory_bytes") {
		t.Error("no process_resident_memory_bytes (pgphi's RSS)")
	}
}

func TestNilRecorderIsSafe(t *testing.T) {
	var r *Recorder
	exercise(r)
}

func TestLabelsNeverTakeArbitraryText(t *testing.T) {
	const secret = "CANARY-Jane-Doe-555-0100"
	r := New("apply")
	r.SetPlan("'"+secret, []string{"public.patient"})
	r.Batch(secret, secret, 1, secret, secret)
	r.Batch("backfill", "public.patient", 0, "failed", "value "+secret+" is bad")
	r.Verified(secret, 1, 1, 1)
	r.Error(secret)
	r.AuditRecord(secret)
	r.Finished(secret)
	r.Progress(func(label string, total int64, poll func(context.Context) (int64, error)) interface{ Stop() } {
		poll(context.Background())
		return nopStop{}
	})(secret+" "+secret, 1, func(context.Context) (int64, error) { return 1, nil })
	body := scrape(t, r)
	if strings.Contains(body, "CANARY") || strings.Contains(body, "Jane") {
		t.Fatalf("arbitrary text reached the exposition:\n%s", body)
	}
	for _, want := range []string{`pgphi_batches_total{phase="other",result="other",table="other"} 1`, `pgphi_errors_total{class="error",scope="batch"} 2`, `pgphi_errors_total{class="error",scope="run"} 1`,
		`pgphi_batches_total{phase="backfill",result="failed",table="public.patient"} 1`, `plan_id="other"`} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s in:\n%s", want, body)
		}
	}
}

func scrape(t *testing.T, r *Recorder) string {
	t.Helper()
	addr, err := ParseAddr("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := r.Serve(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	resp, err := http.Get(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", srv.URL(), resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want the text exposition format", ct)
	}
	other, err := http.Get(strings.TrimSuffix(srv.URL(), "/metrics") + "/debug/pprof/")
	if err == nil {
		other.Body.Close()
		if other.StatusCode != 404 {
			t.Errorf("another path answered %d, want 404", other.StatusCode)
		}
	}
	return string(b)
}

func TestServeExposition(t *testing.T) {
	r := New("apply")
	exercise(r)
	body := scrape(t, r)
	for _, want := range []string{
		"pgphi_up 1",
		`pgphi_rows_encrypted_total{phase="backfill",table="public.patient"} 50`,
		`pgphi_rows_restored_total{table="public.patient"} 7`,
		`pgphi_rows_failed_total{table="public.patient"} 1`,
		`pgphi_errors_total{class="SQLSTATE 55P03",scope="batch"} 1`,
		`pgphi_rows_planned{phase="backfill",table="public.patient"} 100`,
		`pgphi_rows_done{phase="backfill",table="public.patient"} 40`,
		`pgphi_throttle_state{state="throttled"} 1`,
		`pgphi_throttle_state{state="paused"} 0`,
		"pgphi_canary_latency_seconds 0.03",
		"pgphi_batch_failure_ratio 0.025",
		"pgphi_lock_retries_total 1",
		`pgphi_audit_records_total{event="start"} 1`,
		`pgphi_info{command="apply",plan_id="plan-0123abcd",version="`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q in:\n%s", want, body)
		}
	}
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]Addr{
		"127.0.0.1:9187": {Host: "127.0.0.1", Port: 9187, Loopback: true},
		"localhost:0":    {Host: "127.0.0.1", Port: 0, Loopback: true},
		"[::1]:9187":     {Host: "::1", Port: 9187, Loopback: true},
		"0.0.0.0:9187":   {Host: "0.0.0.0", Port: 9187},
		"10.1.2.3:80":    {Host: "10.1.2.3", Port: 80},
	} {
		got, err := ParseAddr(in)
		if err != nil || got != want {
			t.Errorf("ParseAddr(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "9187", ":9187", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", "127.0.0.1:-1", "metrics.example.com:9187", "[::1]"} {
		if _, err := ParseAddr(in); !errors.Is(err, ErrAddr) {
			t.Errorf("ParseAddr(%q): %v, want ErrAddr", in, err)
		}
	}
}

func TestWindowRateAndETA(t *testing.T) {
	var w window
	t0 := time.Unix(1000, 0)
	if _, eta := w.observe(t0, 0, 100); eta != -1 {
		t.Errorf("eta with no rate = %v, want -1", eta)
	}
	rate, eta := w.observe(t0.Add(2*time.Second), 20, 100)
	if rate != 10 || eta != 8 {
		t.Errorf("rate, eta = %v, %v; want 10, 8", rate, eta)
	}
	if _, eta := w.observe(t0.Add(3*time.Second), 100, 100); eta != 0 {
		t.Errorf("eta when done = %v, want 0", eta)
	}
}

// Scrapes run on the server's goroutines while the engine records from its
// workers (run with -race).
func TestConcurrentRecordAndScrape(t *testing.T) {
	r := New("apply")
	r.SetPlan("plan-01", []string{"public.patient"})
	addr, _ := ParseAddr("127.0.0.1:0")
	srv, err := r.Serve(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			exercise(r)
		}
	}()
	for range 5 {
		resp, err := http.Get(srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	<-done
}
