package alert

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// An alert fires once per threshold and table; the slow sinks see every
// alert, in order, before Close returns, and are not on the firing
// goroutine (a sink that takes a while does not delay Fire).
func TestFireOncePerThresholdAndTableAndCloseDrains(t *testing.T) {
	m := New(context.Background())
	var mu sync.Mutex
	var quick, slow []string
	m.OnFire(func(_ context.Context, a Alert) { mu.Lock(); quick = append(quick, a.String()); mu.Unlock() })
	m.OnFireAsync(func(_ context.Context, a Alert) {
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		slow = append(slow, string(a.Threshold)+" "+a.Table)
		mu.Unlock()
	})
	start := time.Now()
	fired := 0
	for range 3 {
		for _, a := range []Alert{
			{Threshold: Storage, Measured: 3 << 20, Limit: 2 << 20, Unit: "bytes", Table: "public.a"},
			{Threshold: Storage, Measured: 3 << 20, Limit: 2 << 20, Unit: "bytes", Table: "public.b"},
			{Threshold: SearchAccuracy, Measured: 0.5, Limit: 0.95, Unit: "ratio", Table: "public.a"},
		} {
			if m.Fire(a) {
				fired++
			}
		}
	}
	if fired != 3 {
		t.Fatalf("fired %d times, want 3 (once per threshold and table)", fired)
	}
	if time.Since(start) > 40*time.Millisecond {
		t.Errorf("Fire waited for the slow sink")
	}
	m.Close()
	if len(slow) != 3 || slow[0] != "storage public.a" || slow[2] != "search_accuracy public.a" {
		t.Fatalf("slow sink saw %q", slow)
	}
	if !strings.Contains(quick[0], "ALERT storage public.a: 3.0 MiB > limit 2.0 MiB") || !strings.Contains(quick[2], "50.0% < limit 95.0%") {
		t.Fatalf("lines %q", quick)
	}
	if m.Fire(Alert{Threshold: FailureRate}) {
		t.Fatal("fired after Close")
	}
	if got := m.Summary(); got != "ALERT storage, search_accuracy" {
		t.Errorf("summary %q", got)
	}
	var nilM *Monitor
	nilM.Fire(Alert{Threshold: Storage})
	nilM.Close()
}
