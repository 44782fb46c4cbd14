package engine

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestMaxRateCapsRows(t *testing.T) {
	th := &Throttle{MaxRate: 2000}
	start := time.Now()
	for range 10 {
		if err := th.Wait(context.Background(), 100); err != nil {
			t.Fatal(err)
		}
	}
	// 1000 rows at 2000 rows/s: the tenth batch may start after 450ms at the earliest.
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Fatalf("10 batches of 100 rows took %s at 2000 rows/s", el)
	}
	if !strings.Contains(th.Status(), "capped at 2000") {
		t.Fatalf("status %q", th.Status())
	}
}

func TestFailureRateStopsTheRun(t *testing.T) {
	th := &Throttle{MaxFailureRate: 0.05}
	for i := range 19 {
		if err := th.Done(100); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	if err := th.Done(-1); err != nil { // 1 of 20: 5%, not above
		t.Fatalf("stopped at 5%%: %v", err)
	}
	err := th.Done(-1) // 2 of 21: 9.5%
	if err == nil || !strings.Contains(err.Error(), "2 of 21 batches failed") {
		t.Fatalf("want a stop, got %v", err)
	}
}
