package progress

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type buf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *buf) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *buf) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func run(t *testing.T, tty bool) string {
	var rows atomic.Int64
	var out buf
	d := Start(&out, "backfill public.patient", 1000, func(context.Context) (int64, error) { return rows.Load(), nil },
		Options{Interval: 5 * time.Millisecond, PlainEvery: 20 * time.Millisecond, ForceTTY: &tty})
	for i := 0; i < 10; i++ {
		rows.Add(50)
		time.Sleep(10 * time.Millisecond)
	}
	d.Stop()
	return out.String()
}

func TestTerminalShowsABarRateAndETA(t *testing.T) {
	out := run(t, true)
	if !strings.Contains(out, "\r\033[K") || !strings.Contains(out, "[") || !strings.Contains(out, "rows/s") || !strings.Contains(out, "ETA") {
		t.Fatalf("no bar with rate and ETA: %q", out)
	}
	if !strings.HasSuffix(out, "backfill public.patient: 500 rows in "+strings.SplitN(strings.SplitN(out, "500 rows in ", 2)[1], "\n", 2)[0]+"\n") {
		t.Fatalf("no final line: %q", out)
	}
}

func TestPlainOutputIsLinesWithoutControlCodes(t *testing.T) {
	out := run(t, false)
	if strings.ContainsAny(out, "\r\033") {
		t.Fatalf("control codes in plain output: %q", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 {
		t.Fatalf("want periodic lines and a final line, got %q", out)
	}
	if !strings.Contains(lines[0], "/1000 rows") || !strings.Contains(lines[0], "rows/s") {
		t.Fatalf("periodic line lacks progress: %q", lines[0])
	}
}

// With a logger, the display writes structured records (progress, then
// progress done) with the numbers as attributes, and no text line.
func TestStructuredRecords(t *testing.T) {
	var text, records strings.Builder
	log := slog.New(slog.NewJSONHandler(&records, nil))
	var n atomic.Int64
	d := Start(&text, "backfill public.patient", 100, func(context.Context) (int64, error) { return n.Add(10), nil },
		Options{Interval: 5 * time.Millisecond, PlainEvery: time.Millisecond, Log: log, StatusSuffix: func() string { return "ALERT storage" }})
	time.Sleep(60 * time.Millisecond)
	d.Stop()
	if text.Len() != 0 {
		t.Errorf("text written with a logger: %q", text.String())
	}
	out := records.String()
	for _, want := range []string{`"msg":"progress"`, `"label":"backfill public.patient"`, `"rows_total":100`, `"eta_seconds"`, `"status":"ALERT storage"`, `"msg":"progress done"`} {
		if !strings.Contains(out, want) {
			t.Errorf("records lack %s:\n%s", want, out)
		}
	}
}
