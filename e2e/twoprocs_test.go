package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

const twoProcsConfig = `version: 1
environment: test
apply: { batch_size: 200, chunk_rows: 2000 }
tables:
  patient:
    columns:
      first_name: { class: pii }
      last_name: { class: pii }
      notes: { class: phi }
`

const twoProcsRows = 50000

func newTwoProcsFixture(t *testing.T) *fixture {
	f := newFixture(t, twoProcsConfig)
	f.exec(`CREATE TABLE patient (id bigint PRIMARY KEY, first_name text, last_name text, notes text)`)
	f.exec(`INSERT INTO patient SELECT g, 'First' || g, 'Last' || g, repeat('n', g % 300) FROM generate_series(1, $1) g`, twoProcsRows)
	f.mustRun("keys", "init")
	return f
}

// TestTwoProcessesShareTheWork starts two `pgphi apply` processes at the same
// time on one database: both must succeed, the chunks must have been shared
// between them, and the result must verify.
func TestTwoProcessesShareTheWork(t *testing.T) {
	t.Parallel()
	t.Run("from scratch", func(t *testing.T) {
		t.Parallel()
		f := newTwoProcsFixture(t)
		twoAppliesShareTheWork(t, f)
	})
	t.Run("after an interrupted run", func(t *testing.T) {
		// A first run is stopped as its backfill starts (schema changes and
		// index done); then two processes share the backfill.
		t.Parallel()
		f := newTwoProcsFixture(t)
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, pgphiBin, append(f.globals(), "apply", "--workers", "1")...)
		cmd.Env = append(cleanEnv(), f.env...)
		cmd.Dir = t.TempDir()
		pipe, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var seen bytes.Buffer
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			seen.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "==> backfill") {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
		_ = cmd.Wait()
		if !strings.Contains(seen.String(), "==> backfill") {
			t.Fatalf("the first apply never reached its backfill:\n%s", seen.String())
		}
		twoAppliesShareTheWork(t, f)
	})
}

func twoAppliesShareTheWork(t *testing.T, f *fixture) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	type proc struct {
		cmd      *exec.Cmd
		out, err *bytes.Buffer
	}
	var procs []proc
	for range 2 {
		cmd, out, errb := f.start(ctx, "apply", "--workers", "2")
		procs = append(procs, proc{cmd, out, errb})
	}
	start := time.Now()
	for i, p := range procs {
		err := p.cmd.Wait()
		if ctx.Err() != nil {
			t.Fatalf("apply %d did not finish in time:\n%s", i, p.err.String())
		}
		assertNoStackTrace(t, []string{"apply"}, p.err.String())
		if err != nil {
			t.Errorf("apply process %d: %v\nstdout:\n%s\nstderr:\n%s", i, err, p.out.String(), p.err.String())
		} else {
			t.Logf("apply process %d: exit 0 (%s)\nstderr:\n%s", i, time.Since(start).Round(time.Millisecond), p.err.String())
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	c := f.conn()
	logQuery(t, c, `SELECT worker, count(*), sum(rows_done)::bigint FROM pgphi.chunks GROUP BY worker ORDER BY worker`)
	if n := queryInt(t, c, `SELECT count(DISTINCT worker) FROM pgphi.chunks`); n < 2 {
		t.Errorf("chunks were done by %d distinct workers, want at least 2 (one per process)", n)
	}
	for i, p := range procs {
		if n := queryInt(t, c, `SELECT count(*) FROM pgphi.chunks WHERE worker LIKE '%:' || $1::int`, p.cmd.Process.Pid); n == 0 {
			t.Errorf("apply process %d (pid %d) did no chunk", i, p.cmd.Process.Pid)
		}
	}
	if n := queryInt(t, c, `SELECT count(*) FROM pgphi.chunks WHERE NOT done`); n != 0 {
		t.Errorf("%d chunks not done", n)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM pgphi.chunks`); n != twoProcsRows/2000 {
		t.Errorf("%d chunks, want %d: the table was chunked more than once", n, twoProcsRows/2000)
	}
	f.verifyOK(twoProcsRows)
	f.assertFullyEncrypted(f.status())
	if n := queryInt(t, c, `SELECT count(*) FROM patient`); n != twoProcsRows {
		t.Errorf("patient has %d rows, want %d", n, twoProcsRows)
	}
}
