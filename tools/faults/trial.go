package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// trial is one fresh copy of the data, one fault, the resume and the checks.
type trial struct {
	e        *env
	scenario string
	n        int    // 1-based within the scenario
	name     string // "kill-apply #3"
	tag      string // short and unique: in the writer's keys and values
	seed     uint64
	rng      *rand.Rand
	db, dir  string
	config   string
	w        *writer
	touch    bool // the writer also updates updated_at (-cleanup-touch)

	mu   sync.Mutex
	runs []runResult

	fault    string // what was injected, for the report
	injected int    // faults that landed
	missed   int    // faults scheduled that did not land (the run ended first)
	reruns   int    // runs after the faulted one until success
	writes   writerStats
	endState string // the state checked at the end
	notes    []string
	failures []string
	took     time.Duration
}

func (t *trial) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	t.failures = append(t.failures, msg)
	logf("  %s: FAILURE: %s", t.name, msg)
}

func (t *trial) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	t.notes = append(t.notes, msg)
	logf("  %s: %s", t.name, msg)
}

// trialSeed derives the seed of trial n of a scenario from -seed.
func trialSeed(seed uint64, scenario string, n int) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s#%d", scenario, n)
	return seed ^ h.Sum64()
}

// newTrial copies from into a fresh database and directory.
func (e *env) newTrial(ctx context.Context, scenario string, n int, from *template) (*trial, error) {
	e.copies++
	t := &trial{e: e, scenario: scenario, n: n, name: fmt.Sprintf("%s #%d", scenario, n), tag: fmt.Sprintf("t%d", e.copies)}
	t.seed = trialSeed(e.o.seed, scenario, n)
	t.rng = rand.New(rand.NewPCG(t.seed, 0x6661756c))
	t.db = fmt.Sprintf("faults_%d", e.copies)
	t.dir = filepath.Join(e.dir, t.db)
	logf("%s: fresh copy %s of %s", t.name, t.db, from.name)
	if err := e.copyDB(ctx, from.name, t.db); err != nil {
		return nil, err
	}
	if err := copyDir(from.dir, t.dir); err != nil {
		return nil, err
	}
	t.config = filepath.Join(t.dir, "pgphi.yaml")
	if err := os.WriteFile(t.config, []byte(trialConfig()), 0o644); err != nil {
		return nil, err
	}
	return t, nil
}

// moment draws a uniformly random moment within d.
func (t *trial) moment(d time.Duration) time.Duration {
	return time.Duration(t.rng.Float64() * float64(d))
}

// resume runs args again until it exits 0, at most -max-reruns times, and
// returns the successful run (ok false when none succeeded).
func (t *trial) resume(ctx context.Context, logName string, args ...string) (runResult, bool) {
	var r runResult
	for i := 0; i < t.e.o.maxReruns; i++ {
		t.reruns++
		r = t.run(ctx, logName+"-rerun", nil, args...)
		if r.code == 0 {
			return r, true
		}
		if args[0] == "cleanup" && r.code == 4 && strings.Contains(r.stderr, "run `pgphi verify` again") {
			// The operator's answer to this refusal: verify, then cleanup.
			t.note("rerun %d of pgphi cleanup refused: written since the last verification; running pgphi verify first", i+1)
			if v := t.run(ctx, "verify-before-cleanup", nil, "verify"); v.code != 0 {
				t.note("pgphi verify: %s", v.summary())
			}
			continue
		}
		t.note("rerun %d of pgphi %s: %s", i+1, args[0], r.summary())
		if r.timedOut {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.fail("pgphi %s did not succeed after %d reruns (last: %s)", args[0], t.reruns, r.summary())
	return r, false
}

// stopWriter stops the application and checks what it saw.
func (t *trial) stopWriter() {
	if t.w == nil {
		return
	}
	t.writes = t.w.stop()
	for i, u := range t.writes.unexpected {
		if i == 3 {
			t.fail("... and %d more unexpected application errors", len(t.writes.unexpected)-3)
			break
		}
		t.fail("application write failed unexpectedly: %s", u)
	}
}

// checkOutputs looks for planted values and stack traces in everything
// pgphi printed in this trial and in every file of the trial directory (the
// audit mirror, the config).
func (t *trial) checkOutputs() {
	t.mu.Lock()
	runs := append([]runResult(nil), t.runs...)
	t.mu.Unlock()
	leaks, traces := 0, 0
	for _, r := range runs {
		if strings.Contains(r.stdout, canaryPrefix) || strings.Contains(r.stderr, canaryPrefix) {
			leaks++
			t.fail("a planted value appears in the output of pgphi %s", r.args[0])
		}
		for _, m := range stackTraceMarkers {
			if strings.Contains(r.stdout, m) || strings.Contains(r.stderr, m) {
				traces++
				t.fail("pgphi %s printed a stack trace or internal error (%q)", r.args[0], m)
				break
			}
		}
	}
	_ = filepath.WalkDir(t.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".log") {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && strings.Contains(string(b), canaryPrefix) {
			t.fail("a planted value appears in %s", filepath.Base(path))
		}
		return nil
	})
}

// finish stops the writer, runs the checks of the final state and the
// output checks, and removes the database.
func (t *trial) finish(ctx context.Context, state finalState) {
	t.endState = state.String()
	t.stopWriter()
	if ctx.Err() != nil {
		return
	}
	sabotaged := t.e.o.sabotage && t.scenario == "control" && t.n == 1
	if sabotaged {
		t.sabotage(ctx)
	}
	t.checkState(ctx, state)
	t.checkOutputs()
	if sabotaged {
		logf("%s: sabotaged: the checks reported %d failures (want at least 4: the changed untouched row, the deleted written row, the copied ciphertext, the planted value in a file)", t.name, len(t.failures))
	}
	t.e.drop(ctx, t.db)
	status := "ok"
	if len(t.failures) > 0 {
		status = fmt.Sprintf("FAILED (%d)", len(t.failures))
	}
	logf("%s: %s; fault: %s; injected %d, missed %d, reruns %d; writer %d ops (%d refused by require_encryption, %d expected errors, %d reconnects), +%d -%d rows",
		t.name, status, t.fault, t.injected, t.missed, t.reruns, t.writes.ops, t.writes.refused, t.writes.expectedErr, t.writes.reconnects, t.writes.inserted, t.writes.deleted)
}

// sabotage damages the trial behind pgphi's back (-sabotage): one untouched
// row changed, one row the writer expects deleted, a ciphertext copied to
// another row, a planted value in a file of the trial directory. The checks
// must report each.
func (t *trial) sabotage(ctx context.Context) {
	conn, err := t.e.connect(ctx, t.db)
	if err != nil {
		t.note("sabotage: %v", err)
		return
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		`UPDATE patient SET middle_name = coalesce(middle_name, '') || 'x' WHERE uid = (SELECT uid FROM patient WHERE ` + untouchedWhere + ` ORDER BY uid LIMIT 1)`,
		`DELETE FROM patient WHERE uid = (SELECT uid FROM patient WHERE uid = ANY($1) ORDER BY uid LIMIT 1)`,
		// A ciphertext copied from another row: verify must catch it.
		`UPDATE patient SET last_name_encrypted = (SELECT last_name_encrypted FROM patient WHERE uid = ANY($1) AND last_name_encrypted IS NOT NULL ORDER BY uid DESC LIMIT 1)
			WHERE uid = (SELECT uid FROM patient WHERE uid = ANY($1) AND last_name_encrypted IS NOT NULL ORDER BY uid DESC OFFSET 1 LIMIT 1)`,
	} {
		if _, err := conn.Exec(ctx, q, t.e.base.pool); err != nil {
			t.note("sabotage: %v", err)
		}
	}
	_ = os.WriteFile(filepath.Join(t.dir, "sabotage.txt"), []byte(canaryPrefix+"planted by -sabotage\n"), 0o600)
}
