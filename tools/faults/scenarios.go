package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pgphi/pgphi/internal/machine"
)

// run is the whole campaign.
func run(ctx context.Context, o options) (*results, error) {
	res := &results{machine: machine.Read()}
	e, err := newEnv(ctx, o)
	if err != nil {
		return nil, err
	}
	defer e.close()
	res.machine.ReadServer(ctx, e.admin, e.cl.DataDir(), []string{"fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "max_wal_size"})
	if err := e.makeT0(ctx); err != nil {
		return nil, err
	}
	res.base = &e.base
	res.binInfo = e.binInfo
	needT1 := o.wants("kill-cleanup") || o.wants("kill-rollback")
	if needT1 {
		if err := e.makeT1(ctx); err != nil {
			return nil, err
		}
	}
	if o.wants("kill-rollback") {
		if err := e.makeT2(ctx); err != nil {
			return nil, err
		}
	}
	if o.wants("kill-reencrypt") {
		if err := e.makeTA(ctx); err != nil {
			return nil, err
		}
	}

	// Control runs: no fault, the same checks; they measure the durations
	// the random moments are drawn from.
	add := func(t *trial) {
		if t != nil {
			res.add(t)
		}
	}
	add(e.control(ctx, 1, "apply", e.t0))
	if o.wants("kill-cleanup") {
		add(e.control(ctx, 2, "cleanup", e.t1))
	}
	if o.wants("kill-rollback") {
		add(e.control(ctx, 3, "rollback", e.t1))
		add(e.control(ctx, 4, "rollback-cleaned", e.t2))
	}
	if o.wants("kill-reencrypt") {
		add(e.control(ctx, 5, "reencrypt", e.tA))
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	logf("measured durations: %s", e.durationSummary())

	for _, s := range o.scenarios {
		switch s {
		case "kill-apply":
			for i := 1; i <= o.killApply && ctx.Err() == nil; i++ {
				add(e.killTrial(ctx, s, i, "apply"))
			}
		case "kill-cleanup":
			for i := 1; i <= o.killCleanup && ctx.Err() == nil; i++ {
				add(e.killTrial(ctx, s, i, "cleanup"))
			}
		case "kill-rollback":
			for i := 1; i <= o.killRollback && ctx.Err() == nil; i++ {
				which := "rollback"
				if i%2 == 0 {
					which = "rollback-cleaned"
				}
				add(e.killTrial(ctx, s, i, which))
			}
		case "kill-reencrypt":
			for i := 1; i <= o.killReencrypt && ctx.Err() == nil; i++ {
				add(e.killTrial(ctx, s, i, "reencrypt"))
			}
		case "restart":
			for i := 1; i <= o.restarts && ctx.Err() == nil; i++ {
				add(e.restartTrial(ctx, i))
			}
		case "conn-drop":
			for i := 1; i <= o.connDrops && ctx.Err() == nil; i++ {
				add(e.connDropTrial(ctx, i))
			}
		case "lock":
			for i, k := range []lockKind{lockLong, lockShort, lockReads} {
				if ctx.Err() == nil {
					add(e.lockTrial(ctx, i+1, k))
				}
			}
		case "disk-full":
			if os.Geteuid() != 0 {
				res.skip(s, "skipped: mounting a small file system needs root (run the campaign as root)")
				continue
			}
			for i := 1; i <= o.diskFull && ctx.Err() == nil; i++ {
				t, skipped := e.diskFullTrial(ctx, i)
				if skipped != "" {
					res.skip(s, skipped)
					break
				}
				add(t)
			}
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	res.durations = e.durationSummary()
	res.machine.LoadEnd = machine.Loadavg()
	return res, nil
}

// command is one of the lifecycle commands a trial interrupts: where it
// starts from, how the application writes meanwhile, and what the end state
// must be.
type command struct {
	from    func(e *env) *template
	setup   [][]string // runs before the writer starts
	args    func(e *env) []string
	mode    writerMode
	allowed []string // SQLSTATEs the application may see
	final   finalState
}

var commands = map[string]command{
	"apply": {
		from:  func(e *env) *template { return e.t0 },
		setup: [][]string{{"keys", "init"}},
		args:  func(*env) []string { return []string{"apply"} },
		mode:  plainWrites, final: stateApplied,
	},
	// After cutover the application's plaintext writes are refused; once
	// cleanup dropped the plaintext columns they name a missing column.
	"cleanup": {
		from:    func(e *env) *template { return e.t1 },
		args:    func(e *env) []string { return []string{"cleanup", "--confirm", e.planID, "--vacuum-full"} },
		mode:    plainWrites,
		allowed: []string{"42703"},
		final:   stateCleaned,
	},
	// Rollback before cleanup: refused plaintext writes until the trigger
	// is gone, then ordinary ones.
	"rollback": {
		from:  func(e *env) *template { return e.t1 },
		args:  func(*env) []string { return []string{"rollback"} },
		mode:  plainWrites,
		final: stateRolledBack,
	},
	// Rollback after cleanup: the application writes no protected column
	// (it has none in plaintext while the rollback runs). Its inserts
	// without first and last name, which are NOT NULL in the demo schema as
	// in Felicity's, are refused: by the ciphertexts' NOT NULL after
	// cleanup (23502), by the CHECK rollback validates (23514), then by the
	// plaintext's NOT NULL again (23502).
	"rollback-cleaned": {
		from:    func(e *env) *template { return e.t2 },
		args:    func(*env) []string { return []string{"rollback"} },
		mode:    noPHIWrites,
		allowed: []string{"23502", "23514"},
		final:   stateRolledBack,
	},
	// A new data key and every ciphertext sealed again under it, while the
	// application writes plaintext (not cut over): its changes are marked
	// for apply's catch-up, which the final checks run.
	"reencrypt": {
		from:  func(e *env) *template { return e.tA },
		args:  func(*env) []string { return []string{"keys", "rotate", "--reencrypt"} },
		mode:  plainWrites,
		final: stateReencrypted,
	},
}

// begin makes a trial of cmd: a fresh copy, the setup runs, the writer.
func (e *env) begin(ctx context.Context, scenario string, n int, cmd command, extraAllowed ...string) *trial {
	t, err := e.newTrial(ctx, scenario, n, cmd.from(e))
	if err != nil {
		t = &trial{e: e, scenario: scenario, n: n, name: fmt.Sprintf("%s #%d", scenario, n)}
		t.fail("creating the trial database: %v", err)
		return t
	}
	t.touch = e.o.touchWrites && cmd.final == stateCleaned
	for _, args := range cmd.setup {
		if r := t.run(ctx, args[0], nil, args...); r.code != 0 {
			t.fail("setup pgphi %s: %s", strings.Join(args, " "), r.summary())
			return t
		}
	}
	if err := t.startWriter(ctx, cmd.mode, append(slices.Clone(cmd.allowed), extraAllowed...)...); err != nil {
		t.fail("starting the application writer: %v", err)
	}
	return t
}

// control runs cmd once without a fault and records its duration.
func (e *env) control(ctx context.Context, n int, name string, from *template) *trial {
	if from == nil {
		return nil
	}
	cmd := commands[name]
	start := time.Now()
	t := e.begin(ctx, "control", n, cmd)
	t.fault = "none (" + name + ")"
	if len(t.failures) == 0 {
		r := t.run(ctx, name, nil, cmd.args(e)...)
		if r.code != 0 {
			t.fail("uninterrupted pgphi %s: %s", r.args[0], r.summary())
		}
		e.durations[name] = r.took
		if name == "apply" {
			e.durations["backfill"] = r.stepDuration("backfill")
		}
	}
	t.finish(ctx, cmd.final)
	t.took = time.Since(start)
	return t
}

func (e *env) durationSummary() string {
	var parts []string
	for _, k := range []string{"apply", "backfill", "cleanup", "rollback", "rollback-cleaned", "reencrypt"} {
		if d, ok := e.durations[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %s", k, d.Round(10*time.Millisecond)))
		}
	}
	return strings.Join(parts, ", ")
}

// duration is the measured duration of name (2 s when its control run
// failed, so there are still moments to draw from).
func (e *env) duration(name string) time.Duration {
	if d := e.durations[name]; d > 0 {
		return d
	}
	return 2 * time.Second
}

// killTrial SIGKILLs pgphi `name` at a uniformly random moment within its
// measured duration, then reruns it until it succeeds.
func (e *env) killTrial(ctx context.Context, scenario string, n int, name string) *trial {
	cmd := commands[name]
	start := time.Now()
	t := e.begin(ctx, scenario, n, cmd)
	defer func() { t.took = time.Since(start) }()
	if len(t.failures) > 0 {
		t.finish(ctx, cmd.final)
		return t
	}
	args := cmd.args(e)
	d := t.moment(e.duration(name))
	t.fault = fmt.Sprintf("SIGKILL of %s at %s of %s", name, d.Round(time.Millisecond), e.duration(name).Round(10*time.Millisecond))
	p, err := t.start(ctx, name, nil, args...)
	if err != nil {
		t.fail("starting pgphi: %v", err)
		t.finish(ctx, cmd.final)
		return t
	}
	select {
	case <-time.After(d):
		p.kill()
	case <-p.done:
	}
	r := p.wait()
	switch {
	case r.killed:
		t.injected++
		t.note("killed at %s during %q", d.Round(time.Millisecond), lastStep(r))
		t.resume(ctx, name, args...)
	case r.code == 0:
		t.missed++
		t.note("pgphi %s finished in %s, before the kill", name, r.took.Round(time.Millisecond))
		// A faster uninterrupted run is a measured duration too: later
		// trials draw within the shortest one, so fewer kills come too late.
		e.durations[name] = min(e.durations[name], r.took)
	default:
		t.fail("pgphi %s failed on its own before the kill: %s", name, r.summary())
		t.resume(ctx, name, args...)
	}
	t.finish(ctx, cmd.final)
	return t
}

// lastStep is the last "==> " step a run announced, without its details
// (table and column names only, never values).
func lastStep(r runResult) string {
	if len(r.marks) == 0 {
		return "start-up"
	}
	s := r.marks[len(r.marks)-1].step
	if i := strings.Index(s, ":"); i > 0 {
		s = s[:i]
	}
	return s
}

// restartTrial restarts the server (pg_ctl restart -m fast) at a random
// moment of apply's backfill.
func (e *env) restartTrial(ctx context.Context, n int) *trial {
	cmd := commands["apply"]
	start := time.Now()
	t := e.begin(ctx, "restart", n, cmd, "57P01", "57P03")
	defer func() { t.took = time.Since(start) }()
	if len(t.failures) > 0 {
		t.finish(ctx, cmd.final)
		return t
	}
	inBackfill := make(chan struct{})
	var once sync.Once
	p, err := t.start(ctx, "apply", func(line string) {
		if strings.HasPrefix(strings.TrimSpace(line), "==> backfill") {
			once.Do(func() { close(inBackfill) })
		}
	}, "apply")
	if err != nil {
		t.fail("starting pgphi: %v", err)
		t.finish(ctx, cmd.final)
		return t
	}
	d := t.moment(e.duration("backfill"))
	t.fault = fmt.Sprintf("pg_ctl restart -m fast at %s into the backfill (%s)", d.Round(time.Millisecond), e.duration("backfill").Round(10*time.Millisecond))
	restarted := false
	select {
	case <-inBackfill:
		select {
		case <-time.After(d):
		case <-p.done:
		}
		if p.running() {
			t0 := time.Now()
			if err := e.restartServer(ctx); err != nil {
				t.fail("restarting the server: %v", err)
			} else {
				restarted = true
				t.note("server restarted in %s, %s into the backfill", time.Since(t0).Round(time.Millisecond), d.Round(time.Millisecond))
			}
		}
	case <-p.done:
	}
	r := p.wait()
	switch {
	case restarted && r.code != 0:
		t.injected++
		t.note("apply exited: %s", r.summary())
		t.resume(ctx, "apply", "apply")
	case restarted:
		t.injected++
		t.note("apply rode out the restart and succeeded")
	case r.code == 0:
		t.missed++
		t.note("apply left the backfill before the restart moment")
	default:
		t.fail("apply failed before the restart: %s", r.summary())
		t.resume(ctx, "apply", "apply")
	}
	t.finish(ctx, cmd.final)
	return t
}

// restartServer restarts PostgreSQL and reconnects the campaign's session.
func (e *env) restartServer(ctx context.Context) error {
	if err := e.cl.Restart(ctx); err != nil {
		return err
	}
	e.admin.Close(context.Background())
	var err error
	e.admin, err = e.connect(ctx, "postgres")
	return err
}

// connDropTrial terminates pgphi's backends at -drops-per-trial random
// moments of apply (across reruns), then lets apply finish.
func (e *env) connDropTrial(ctx context.Context, n int) *trial {
	cmd := commands["apply"]
	start := time.Now()
	t := e.begin(ctx, "conn-drop", n, cmd)
	defer func() { t.took = time.Since(start) }()
	if len(t.failures) > 0 {
		t.finish(ctx, cmd.final)
		return t
	}
	var moments []time.Duration
	for i := 0; i < e.o.dropsPerRun; i++ {
		moments = append(moments, t.moment(e.duration("apply")))
	}
	slices.Sort(moments)
	var ms []string
	for _, m := range moments {
		ms = append(ms, m.Round(time.Millisecond).String())
	}
	t.fault = fmt.Sprintf("pg_terminate_backend of pgphi's sessions at %s of %s", strings.Join(ms, ", "), e.duration("apply").Round(10*time.Millisecond))
	conn, err := e.connect(ctx, "postgres")
	if err != nil {
		t.fail("connecting: %v", err)
		t.finish(ctx, cmd.final)
		return t
	}
	defer conn.Close(context.Background())
	stop := make(chan struct{})
	injDone := make(chan struct{})
	var mu sync.Mutex
	begin := time.Now()
	go func() {
		defer close(injDone)
		for _, m := range moments {
			select {
			case <-stop:
				mu.Lock()
				t.missed++
				mu.Unlock()
				continue
			case <-time.After(time.Until(begin.Add(m))):
			}
			killed, err := queryInt(ctx, conn, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = $1 AND application_name LIKE 'pgphi%' AND pid <> pg_backend_pid()`, t.db)
			mu.Lock()
			switch {
			case err != nil:
				t.note("pg_terminate_backend: %v", err)
				t.missed++
			case killed > 0:
				t.injected++
				t.note("terminated %d pgphi sessions at %s", killed, time.Since(begin).Round(time.Millisecond))
			default:
				t.missed++
			}
			mu.Unlock()
		}
	}()
	r := t.run(ctx, "apply", nil, "apply")
	for tries := 0; r.code != 0 && tries < e.o.maxReruns && !r.timedOut; tries++ {
		mu.Lock()
		t.note("apply exited: %s", r.summary())
		t.reruns++
		mu.Unlock()
		r = t.run(ctx, "apply-rerun", nil, "apply")
	}
	close(stop)
	<-injDone
	if r.code != 0 {
		t.fail("apply did not succeed after %d reruns (last: %s)", t.reruns, r.summary())
	}
	t.finish(ctx, cmd.final)
	return t
}

// lockKind is a lock trial.
type lockKind int

const (
	lockLong  lockKind = iota // SHARE ROW EXCLUSIVE past lock_timeout × ddl_retries: apply must fail cleanly
	lockShort                 // SHARE ROW EXCLUSIVE released 0.5 s into expand: apply must retry and succeed
	lockReads                 // ACCESS EXCLUSIVE held 8 s from before the start: apply waits or fails cleanly
)

// lockTrial holds a lock on patient from another session while apply
// starts.
func (e *env) lockTrial(ctx context.Context, n int, kind lockKind) *trial {
	cmd := commands["apply"]
	start := time.Now()
	t := e.begin(ctx, "lock", n, cmd)
	defer func() { t.took = time.Since(start) }()
	if len(t.failures) > 0 {
		t.finish(ctx, cmd.final)
		return t
	}
	mode := "SHARE ROW EXCLUSIVE"
	if kind == lockReads {
		mode = "ACCESS EXCLUSIVE"
	}
	allow := lockTimeout * ddlRetries
	switch kind {
	case lockLong:
		t.fault = fmt.Sprintf("%s lock held until apply exits (lock_timeout %s × ddl_retries %d)", mode, lockTimeout, ddlRetries)
	case lockShort:
		t.fault = fmt.Sprintf("%s lock released 0.5 s after apply starts expand (lock_timeout %s × ddl_retries %d)", mode, lockTimeout, ddlRetries)
	case lockReads:
		t.fault = fmt.Sprintf("%s lock (blocks reads too) held for 8 s from before apply starts", mode)
	}
	conn, err := e.connect(ctx, t.db)
	if err != nil {
		t.fail("connecting: %v", err)
		t.finish(ctx, cmd.final)
		return t
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err == nil {
		_, err = tx.Exec(ctx, "LOCK TABLE patient IN "+mode+" MODE")
	}
	if err != nil {
		t.fail("taking the lock: %v", err)
		t.finish(ctx, cmd.final)
		return t
	}
	released := false
	release := func() {
		if !released {
			released = true
			if err := tx.Commit(ctx); err != nil {
				t.fail("releasing the lock: %v", err)
			}
		}
	}
	inExpand := make(chan struct{})
	var once sync.Once
	p, err := t.start(ctx, "apply", func(line string) {
		if strings.HasPrefix(strings.TrimSpace(line), "==> expand") {
			once.Do(func() { close(inExpand) })
		}
	}, "apply")
	if err != nil {
		release()
		t.fail("starting pgphi: %v", err)
		t.finish(ctx, cmd.final)
		return t
	}
	safety := time.After(90 * time.Second)
	switch kind {
	case lockLong:
		select {
		case <-p.done:
		case <-safety:
			t.fail("apply still running 90 s after it started against a held lock (lock_timeout %s × %d retries should end it)", lockTimeout, ddlRetries)
		}
	case lockShort:
		select {
		case <-inExpand:
			time.Sleep(500 * time.Millisecond)
		case <-p.done:
		case <-safety:
			t.fail("apply did not reach expand within 90 s")
		}
	case lockReads:
		select {
		case <-time.After(8 * time.Second):
		case <-p.done:
		}
	}
	release()
	r := p.wait()
	busy := strings.Contains(r.stderr, "table busy")
	switch kind {
	case lockLong:
		switch {
		case r.code == 0:
			t.missed++
			t.fail("apply succeeded although the table was locked for longer than lock_timeout × ddl_retries (%s)", allow)
		case r.code == 1 && strings.Contains(r.stderr, "lock not granted"):
			t.injected++
			t.note("apply gave up after %s as it should: %s", r.took.Round(time.Millisecond), r.summary())
		default:
			t.injected++
			t.fail("apply against a held lock did not fail with exit 1 and \"lock not granted\": %s", r.summary())
		}
		if r.code != 0 {
			t.resume(ctx, "apply", "apply")
		}
	case lockShort:
		if busy {
			t.injected++
		} else {
			t.missed++
		}
		if r.code != 0 {
			t.fail("apply failed although the lock was released within what lock_timeout × ddl_retries allow: %s", r.summary())
			t.resume(ctx, "apply", "apply")
		} else {
			t.note("apply waited for the lock (retried: %v) and succeeded in %s", busy, r.took.Round(time.Millisecond))
		}
	case lockReads:
		t.injected++
		if r.code != 0 {
			t.note("apply under an ACCESS EXCLUSIVE lock: %s", r.summary())
			t.resume(ctx, "apply", "apply")
		} else {
			t.note("apply waited behind the ACCESS EXCLUSIVE lock (retried DDL: %v) and succeeded in %s", busy, r.took.Round(time.Millisecond))
		}
	}
	t.finish(ctx, cmd.final)
	return t
}
