package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashConfig is used by the crash test: small chunks and batches make for
// many checkpoints to interrupt.
const crashConfig = `version: 1
environment: test
apply: { batch_size: 100, chunk_rows: 1000 }
tables:
  patient:
    columns:
      first_name: { class: pii }
      last_name: { class: pii }
      notes: { class: phi }
      date_of_birth: { class: pii }
`

// TestCrashAndResume kills `pgphi apply` with SIGKILL at increasing delays,
// each run resuming where the previous one died, then finishes with a full
// apply and checks that nothing was lost, doubled or left behind.
func TestCrashAndResume(t *testing.T) {
	t.Parallel()
	f := newFixture(t, crashConfig)
	const rows = 40000
	f.exec(`CREATE TABLE patient (id bigint PRIMARY KEY, first_name text, last_name text, notes text, date_of_birth date, ward int)`)
	f.exec(`INSERT INTO patient
		SELECT g, 'First' || g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'Last' || md5(g::text) END,
		       CASE WHEN g % 17 = 0 THEN '' ELSE repeat('note ' || g || ' ', 1 + g % 7) END,
		       date '1940-01-01' + (g % 25000), g % 40
		FROM generate_series(1, $1) g`, rows)
	f.mustRun("keys", "init")
	c := f.conn()

	// Every run after the first resumes the previous one's work. Some runs
	// are killed a moment after apply announces a step (expand DDL, the
	// concurrent index build, the backfill, catch-up, verify), the others at
	// fixed delays after start (key derivation, catalog reads, backfill).
	killed := 0
	progressed := false
	for _, k := range []struct {
		step  string // kill this long after the "==> step" line; "" = after start
		delay time.Duration
	}{
		{"", 150 * time.Millisecond},
		{"expand", 5 * time.Millisecond},
		{"index", 20 * time.Millisecond},
		{"backfill", 0},
		{"", 400 * time.Millisecond},
		{"", 800 * time.Millisecond},
		{"", 1200 * time.Millisecond},
		{"", 1500 * time.Millisecond},
		{"catch up", 50 * time.Millisecond},
		{"verify", 100 * time.Millisecond},
	} {
		wasKilled, stderr := applyAndKill(t, f, k.step, k.delay, "apply", "--batch-size", "50", "--workers", "2")
		if wasKilled {
			killed++
		}
		var done64 int64 = -1
		if queryInt(t, c, `SELECT count(*) FROM pg_tables WHERE schemaname = 'pgphi' AND tablename = 'chunks'`) == 1 {
			done64 = queryInt(t, c, `SELECT COALESCE(sum(rows_done), 0)::bigint FROM pgphi.chunks`)
		}
		when := fmt.Sprintf("%s after start", k.delay)
		if k.step != "" {
			when = fmt.Sprintf("%s after ==> %s", k.delay, k.step)
		}
		t.Logf("run killed %s (killed=%v): last step %q, rows backfilled so far %d", when, wasKilled, lastPhase(stderr), done64)
		if wasKilled && done64 > 0 && done64 < rows {
			progressed = true
		}
	}
	if killed == 0 {
		t.Fatal("no run was killed: the apply is too fast for this test's delays")
	}
	if !progressed {
		t.Log("note: no kill landed in the middle of the backfill on this machine")
	}

	// A final full run finishes the job.
	f.mustRun("apply", "--batch-size", "50", "--workers", "2")
	f.verifyOK(rows)
	st := f.status()
	f.assertFullyEncrypted(st)
	for _, cs := range st.Columns {
		if cs.Total != rows {
			t.Errorf("status %s: total %d, want %d", cs.Column, cs.Total, rows)
		}
	}
	if n := queryInt(t, c, `SELECT count(*) FROM patient`); n != rows {
		t.Errorf("patient has %d rows after the crashes, want %d", n, rows)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM patient WHERE pgphi_pending`); n != 0 {
		t.Errorf("%d rows left marked pending", n)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM pgphi.chunks WHERE NOT done`); n != 0 {
		t.Errorf("%d chunks not done after a successful apply", n)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM pgphi.chunks`); n != rows/1000 {
		t.Errorf("%d chunks, want %d (chunk_rows 1000): the table was chunked more than once", n, rows/1000)
	}
	// Each backfilled row is counted once: a killed batch left no trace, a
	// resumed one did not redo committed work.
	if n := queryInt(t, c, `SELECT sum(rows_done)::bigint FROM pgphi.chunks`); n != rows {
		t.Errorf("chunks count %d rows backfilled, want exactly %d", n, rows)
		logQuery(t, c, `SELECT chunk_no, lower_key::text, upper_key::text, checkpoint::text, rows_done, done, worker FROM pgphi.chunks ORDER BY chunk_no`)
	}
	// An interrupted concurrent index build leaves no invalid index behind.
	if n := queryInt(t, c, `SELECT count(*) FROM pg_index WHERE indrelid = 'patient'::regclass AND NOT indisvalid`); n != 0 {
		t.Errorf("%d invalid indexes left on patient", n)
	}
	// The application's plaintext is untouched.
	if n := queryInt(t, c, `SELECT count(*) FROM patient WHERE first_name = 'First' || id AND ward = id % 40`); n != rows {
		t.Errorf("%d of %d rows keep their plaintext", n, rows)
	}
}

// applyAndKill starts pgphi with args and sends it SIGKILL delay after it
// prints "==> step" (or after its start when step is ""). It reports whether
// the process died of the kill (it may finish first) and returns its stderr.
// A run that exits on its own must exit 0.
func applyAndKill(t *testing.T, f *fixture, step string, delay time.Duration, args ...string) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgphiBin, append(f.globals(), args...)...)
	cmd.Env = append(cleanEnv(), f.env...)
	cmd.Dir = t.TempDir()
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var stderr strings.Builder
	killAt := make(chan struct{}) // closed when the kill delay starts
	var once sync.Once
	startDelay := func() { once.Do(func() { close(killAt) }) }
	readDone := make(chan struct{}) // closed when the process closed stderr
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			mu.Lock()
			stderr.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if step != "" && strings.HasPrefix(sc.Text(), "==> "+step) {
				startDelay()
			}
		}
	}()
	if step == "" {
		startDelay()
	}
	select {
	case <-killAt:
		select {
		case <-time.After(delay):
			_ = cmd.Process.Signal(syscall.SIGKILL)
		case <-readDone:
		}
	case <-readDone:
	}
	<-readDone
	err = cmd.Wait()
	out := stderr.String()
	assertNoStackTrace(t, args, out)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true, out
		}
	}
	if err != nil {
		t.Fatalf("pgphi %s exited on its own with %v before the kill:\n%s", shortArgs(args), err, out)
	}
	return false, out
}

// lastPhase is the last "==> step" line apply printed.
func lastPhase(stderr string) string {
	phase := ""
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "==> ") {
			phase = strings.TrimPrefix(l, "==> ")
			if len(phase) > 40 {
				phase = phase[:40]
			}
		}
	}
	return phase
}
