package engine

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/pgphi/pgphi/internal/metrics"
)

var _ Metrics = (*metrics.Recorder)(nil)

// gatherValue sums the samples of name whose labels include want.
func gatherValue(t *testing.T, m *metrics.Recorder, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, s := range mf.GetMetric() {
			for k, v := range want {
				found := false
				for _, l := range s.GetLabel() {
					found = found || (l.GetName() == k && l.GetValue() == v)
				}
				if !found {
					continue next
				}
			}
			sum += s.GetCounter().GetValue() + s.GetGauge().GetValue()
		}
	}
	return sum
}

func exposition(t *testing.T, m *metrics.Recorder) string {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// TestRunnerReportsToMetrics: an apply that stops at a value it cannot
// encrypt, then finishes once the value is fixed, reports every committed
// row, the failed row, the verification and the throttle to a real
// Recorder, and no value reaches the exposition.
func TestRunnerReportsToMetrics(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `CREATE TABLE public.p (uid varchar PRIMARY KEY, nm text);
		INSERT INTO public.p SELECT 'u' || lpad(g::text, 4, '0'), 'CANARY-nm-' || g FROM generate_series(1, 500) g;
		UPDATE public.p SET nm = 'CANARY-big-' || repeat('x', 5000) WHERE uid = 'u0250';`,
		"version: 1\nencryption: { max_value_bytes: 1000 }\napply: { batch_size: 50, workers: 1 }\ntables:\n  p:\n    columns:\n      nm: { class: pii, search: [exact] }\n")
	m := metrics.New("apply")
	m.SetPlan(f.plan.ID, []string{"public.p"})
	th := &Throttle{MaxRate: 100000}
	m.SetThrottle(func() metrics.ThrottleState {
		s := th.Snapshot()
		return metrics.ThrottleState{State: s.State, Limit: s.Limit, Attempts: s.Attempts, Failures: s.Failures}
	})
	f.runner.Metrics, f.runner.Throttle = m, th
	var re *RowError
	if err := f.runner.Apply(ctx); !errors.As(err, &re) {
		t.Fatalf("want RowError, got %v", err)
	}
	tbl := map[string]string{"table": "public.p"}
	if got := gatherValue(t, m, "pgphi_rows_encrypted_total", tbl); got != 200 {
		t.Errorf("rows encrypted before the bad value: %v, want 200 (4 batches of 50)", got)
	}
	if got := gatherValue(t, m, "pgphi_rows_failed_total", tbl); got != 1 {
		t.Errorf("rows failed: %v, want 1", got)
	}
	if got := gatherValue(t, m, "pgphi_errors_total", map[string]string{"class": "unencryptable value", "scope": "batch"}); got != 1 {
		t.Errorf("errors of class unencryptable value: %v, want 1", got)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE public.p SET nm = 'CANARY-short' WHERE uid = 'u0250'"); err != nil {
		t.Fatal(err)
	}
	f.apply(t)
	for name, want := range map[string]float64{
		"pgphi_rows_encrypted_total":          500,
		"pgphi_rows_verified_total":           500,
		"pgphi_values_verified_total":         500,
		"pgphi_verification_mismatches_total": 0,
	} {
		if got := gatherValue(t, m, name, tbl); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := gatherValue(t, m, "pgphi_batches_total", map[string]string{"phase": "backfill", "result": "ok"}); got != 10 {
		t.Errorf("ok backfill batches: %v, want 10", got)
	}
	if got := gatherValue(t, m, "pgphi_throttle_state", map[string]string{"state": "capped"}); got != 1 {
		t.Errorf("throttle state capped: %v, want 1", got)
	}
	if text := exposition(t, m); strings.Contains(text, "CANARY") || strings.Contains(text, "u0250") {
		t.Fatalf("a value or a key reached the metrics:\n%s", text)
	}
}

func TestThrottleSnapshotStates(t *testing.T) {
	var nilTh *Throttle
	if s := nilTh.Snapshot(); s.State != "full" {
		t.Errorf("nil throttle: %q", s.State)
	}
	for _, c := range []struct {
		th   *Throttle
		want string
	}{
		{&Throttle{}, "full"},
		{&Throttle{MaxRate: 10}, "capped"},
		{&Throttle{MaxRate: 10, paused: true}, "paused"},
		{&Throttle{limit: 20, reason: "throttled to 20 rows/s: canary 3.0x its baseline 1ms"}, "throttled"},
		{&Throttle{limit: 25, reason: "recovering: limit 25 rows/s"}, "recovering"},
	} {
		s := c.th.Snapshot()
		if s.State != c.want {
			t.Errorf("%+v: state %q, want %q", c.th.reason, s.State, c.want)
		}
	}
	th := &Throttle{MaxRate: 100, limit: 40, latency: 3 * time.Millisecond, baseline: time.Millisecond, lag: 2.5, attempts: 20, failures: 1}
	s := th.Snapshot()
	if s.Limit != 40 || s.Latency != 3*time.Millisecond || s.Baseline != time.Millisecond || s.LagSeconds != 2.5 || s.Attempts != 20 || s.Failures != 1 {
		t.Errorf("snapshot %+v", s)
	}
}
