package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/internal/dbconn"
)

// applyRun is one run of the pgphi binary (apply or cleanup) under the
// concurrent writer.
type applyRun struct {
	name    string
	db      string
	config  string
	rows    int
	took    time.Duration
	maxRSS  int64         // KiB
	cpu     time.Duration // pgphi's CPU time (user + system)
	server  time.Duration // the server's CPU time during the run (0: unknown)
	steps   []step
	writer  writerStats
	err     error
	logTail string
}

func (a *applyRun) rate() float64 {
	if a == nil || a.err != nil || a.took <= 0 {
		return 0
	}
	return float64(a.rows) / a.took.Seconds()
}

// step is one "==> ..." phase pgphi logged, timed by when its line arrived.
type step struct {
	name string
	took time.Duration
}

// Search configurations of the apply runs.
const (
	searchNone    = ""        // the seven columns encrypted, no search kinds
	searchDefault = "default" // the default indexes: exact, prefix, phonetic on names; phone; date
	searchDemo    = "demo"    // cli.DemoConfig: the default plus contains on last_name and exact on email
	searchUnique  = "unique"  // as searchNone, with email unique and under a UNIQUE constraint (a digest column)
	searchRows    = "rows"    // demo kinds with the earlier row planner's bits, leakage accepted: the speed side of the trade
)

// uniqueDDL makes the copy's email unique and constrains it, before apply.
const uniqueDDL = `UPDATE public.patient SET email = uid || '@bench.example';
ALTER TABLE public.patient ADD CONSTRAINT patient_email_key UNIQUE (email); VACUUM ANALYZE public.patient`

// rowsHint is the row count searchRows sizes for (set from -patients).
var rowsHint = 1

func parseKinds(list string) []blindindex.Kind {
	var out []blindindex.Kind
	for _, k := range strings.Split(strings.Trim(list, "[]"), ",") {
		out = append(out, blindindex.Kind(strings.TrimSpace(k)))
	}
	return out
}

// benchConfig is the patient section of the configuration of a search mode.
func benchConfig(mode string) string {
	kinds := map[string]string{
		"first_name":    "[exact, prefix, phonetic]",
		"middle_name":   "[exact, prefix, phonetic]",
		"last_name":     "[exact, prefix, phonetic]",
		"phone_mobile":  "[phone]",
		"phone_home":    "[phone]",
		"date_of_birth": "[date]",
	}
	if mode == searchDemo || mode == searchRows {
		kinds["middle_name"] = "[exact]"
		kinds["last_name"] = "[exact, prefix, contains, phonetic]"
		kinds["email"] = "[exact]"
	}
	var b strings.Builder
	b.WriteString("version: 1\nenvironment: test\ntables:\n  patient:\n    primary_key: uid\n    columns:\n")
	for _, c := range phiColumns {
		if k := kinds[c]; mode == searchRows && k != "" {
			// The sizing of the earlier row planner, as a column that
			// trades privacy for speed would configure it.
			var bits []string
			for _, sub := range blindindex.SubKinds(parseKinds(k), blindindex.Defaults()) {
				bits = append(bits, fmt.Sprintf("%s: %d", sub, blindindex.Bits(int64(rowsHint), blindindex.TermsPerRow(sub, 8, blindindex.Defaults()))))
			}
			fmt.Fprintf(&b, "      %s: { class: pii, search: %s, search_options: { bits: { %s }, accept_leakage: \"benchmark: row-planner sizing\" } }\n", c, k, strings.Join(bits, ", "))
		} else if mode != searchNone && mode != searchUnique && k != "" {
			fmt.Fprintf(&b, "      %s: { class: pii, search: %s }\n", c, k)
		} else {
			fmt.Fprintf(&b, "      %s: { class: pii }\n", c)
		}
	}
	return b.String()
}

// pgphiEnv is the environment of every pgphi process: the key file, the
// adaptive throttle off, and nothing that could point it elsewhere.
func (e *env) pgphiEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if (strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "PGPHI_CPUPROFILE=")) || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "PGPHI_KEY_FILE="+e.keyFile, "PGPHI_ADAPTIVE=off", "PGPHI_REASON=benchmark")
}

// pgphiResult is what one pgphi process did.
type pgphiResult struct {
	took   time.Duration
	maxRSS int64
	cpu    time.Duration
	server time.Duration
	steps  []step
	output string
}

// runPgphi runs the pgphi binary against db, timing each "==> " step line as
// it arrives; onLine sees every output line.
func (e *env) runPgphi(ctx context.Context, db, logName string, onLine func(string), args ...string) (pgphiResult, error) {
	var res pgphiResult
	args = append(args, "--database-url", e.cl.URL(db))
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = e.pgphiEnv()
	cmd.Dir = filepath.Join(e.dir, db)
	cmd.WaitDelay = 10 * time.Second
	logFile, err := os.Create(filepath.Join(e.dir, db, logName+".log"))
	if err != nil {
		return res, err
	}
	defer logFile.Close()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var (
		mu     sync.Mutex
		lines  []string
		marks  []time.Time
		names  []string
		readWG sync.WaitGroup
	)
	readWG.Add(1)
	go func() {
		defer readWG.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			mu.Lock()
			lines = append(lines, line)
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "==> "); ok {
				marks = append(marks, time.Now())
				// "backfill public.patient: encrypt every row ..." -> "backfill public.patient"
				name, _, _ := strings.Cut(rest, ": ")
				names = append(names, name)
			}
			mu.Unlock()
			if onLine != nil {
				onLine(line)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	cpu0, cpuOK := serverCPU(e.cl.DataDir())
	start := time.Now()
	runErr := cmd.Run()
	end := time.Now()
	pw.Close()
	readWG.Wait()
	res.took = end.Sub(start)
	res.maxRSS = maxRSS(cmd.ProcessState)
	if cmd.ProcessState != nil {
		res.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if cpuOK {
		// pgphi's backends exit just after it does; let the postmaster reap
		// them so their time is counted.
		time.Sleep(300 * time.Millisecond)
		if cpu1, ok := serverCPU(e.cl.DataDir()); ok {
			res.server = cpu1 - cpu0
		}
	}
	if len(marks) > 0 {
		res.steps = append(res.steps, step{name: "start: connect, checks, audit record, keys", took: marks[0].Sub(start)})
	}
	for i := range marks {
		next := end
		if i+1 < len(marks) {
			next = marks[i+1]
		}
		res.steps = append(res.steps, step{name: names[i], took: next.Sub(marks[i])})
	}
	res.output = strings.Join(lines, "\n")
	if runErr != nil {
		return res, fmt.Errorf("pgphi %s: %v\n%s", args[0], runErr, tail(res.output, 25))
	}
	return res, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// apply runs keys init and apply on a fresh copy of template with the
// writer running during apply; the copy is dropped after unless its
// search mode is measured further (demo, rows).
func (e *env) apply(ctx context.Context, res *results, name, template, mode string) *applyRun {
	a := e.applyKeep(ctx, res, name, template, mode)
	if mode != searchDemo && mode != searchRows && a.db != "" {
		e.drop(ctx, a.db)
	}
	return a
}

// applyKeep is apply without dropping the copy: the caller measures more
// on it and drops it.
func (e *env) applyKeep(ctx context.Context, res *results, name, template, mode string) *applyRun {
	a := &applyRun{name: name}
	a.err = func() error {
		db, err := e.copyOf(ctx, template, name)
		if err != nil {
			return err
		}
		a.db = db
		conn, err := e.connect(ctx, db)
		if err != nil {
			return err
		}
		if mode == searchUnique {
			for _, st := range strings.Split(uniqueDDL, ";") {
				if _, err := conn.Exec(ctx, st); err != nil {
					conn.Close(context.Background())
					return err
				}
			}
		}
		err = conn.QueryRow(ctx, "SELECT count(*) FROM public.patient").Scan(&a.rows)
		conn.Close(context.Background())
		if err != nil {
			return err
		}
		// One directory per database: the audit mirror file lives beside
		// the config and belongs to one database's audit log.
		if err := os.MkdirAll(filepath.Join(e.dir, db), 0o755); err != nil {
			return err
		}
		a.config = filepath.Join(e.dir, db, "pgphi.yaml")
		if err := os.WriteFile(a.config, []byte(benchConfig(mode)), 0o644); err != nil {
			return err
		}
		if _, err := e.runPgphi(ctx, db, "keys", nil, "keys", "init", "--config", a.config); err != nil {
			return err
		}
		w, err := startWriter(ctx, e.cl.URL(db), e.o.writerEvery)
		if err != nil {
			return err
		}
		args := []string{"apply", "--config", a.config, "--reason", "benchmark"}
		if e.o.workers > 0 {
			args = append(args, "--workers", fmt.Sprint(e.o.workers))
		}
		if e.o.batchSize > 0 {
			args = append(args, "--batch-size", fmt.Sprint(e.o.batchSize))
		}
		logf("%s: %d rows, concurrent writer every %s", name, a.rows, e.o.writerEvery)
		r, err := e.runPgphi(ctx, db, "apply", nil, args...)
		a.writer = w.stop()
		a.took, a.maxRSS, a.steps, a.cpu, a.server = r.took, r.maxRSS, r.steps, r.cpu, r.server
		a.logTail = tail(r.output, 25)
		if err != nil {
			return err
		}
		logf("%s: %s (%.0f rows/s), max RSS %d MiB, writer max stall %s over %d updates",
			name, a.took.Round(time.Millisecond), a.rate(), a.maxRSS/1024, a.writer.max.Round(time.Millisecond), a.writer.n)
		return nil
	}()
	if a.err != nil {
		res.note("%s failed: %v", name, a.err)
	}
	return a
}

// cleanupRun cuts over (flags), verifies and runs pgphi cleanup on the
// database of an apply; the writer starts as soon as cleanup has passed its
// checks (a write before that would, rightly, make it refuse).
func (e *env) cleanupRun(ctx context.Context, res *results, from *applyRun) *applyRun {
	c := &applyRun{name: "pgphi cleanup (final catch-up, drop plaintext, purge)", db: from.db, rows: from.rows}
	c.err = func() error {
		planID, err := e.planID(ctx, from)
		if err != nil {
			return err
		}
		for _, f := range []string{"use_encrypted_search", "require_encryption"} {
			if _, err := e.runPgphi(ctx, from.db, "flags-"+f, nil, "flags", "set", f, "on", "--config", from.config); err != nil {
				return err
			}
		}
		if _, err := e.runPgphi(ctx, from.db, "verify", nil, "verify", "--config", from.config); err != nil {
			return err
		}
		var (
			once   sync.Once
			w      *writer
			wErr   error
			wReady = make(chan struct{})
		)
		startW := func() {
			once.Do(func() {
				w, wErr = startWriter(ctx, e.cl.URL(from.db), e.o.writerEvery)
				close(wReady)
			})
		}
		logf("%s", c.name)
		r, err := e.runPgphi(ctx, from.db, "cleanup", func(line string) {
			if strings.Contains(line, "==> cleanup") {
				startW()
			}
		}, "cleanup", "--confirm", planID, "--vacuum-full", "--reason", "benchmark", "--config", from.config)
		startW() // no-op if it started
		<-wReady
		if wErr == nil {
			c.writer = w.stop()
		}
		c.took, c.maxRSS, c.steps = r.took, r.maxRSS, r.steps
		c.logTail = tail(r.output, 25)
		if err != nil {
			return err
		}
		if wErr != nil {
			return wErr
		}
		if strings.Contains(r.output, "pg_repack") {
			res.note("cleanup purged with pg_repack (online rewrite)")
		} else if strings.Contains(r.output, "VACUUM FULL") {
			res.note("cleanup purged with VACUUM FULL (pg_repack not available): writes wait for the whole rewrite")
		}
		logf("cleanup: %s, max RSS %d MiB, writer max stall %s over %d updates",
			c.took.Round(time.Millisecond), c.maxRSS/1024, c.writer.max.Round(time.Millisecond), c.writer.n)
		return nil
	}()
	if c.err != nil {
		res.note("cleanup failed: %v", c.err)
	}
	return c
}

// planID asks pgphi for the plan id (the first token that looks like one in
// `pgphi plan --json`).
func (e *env) planID(ctx context.Context, from *applyRun) (string, error) {
	r, err := e.runPgphi(ctx, from.db, "plan", nil, "plan", "--json", "--config", from.config)
	if err != nil {
		return "", err
	}
	const key = `"plan_id":"`
	i := strings.Index(r.output, key)
	if i < 0 {
		return "", fmt.Errorf("no plan_id in pgphi plan --json output")
	}
	rest := r.output[i+len(key):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return "", fmt.Errorf("malformed pgphi plan --json output")
	}
	return rest[:j], nil
}

// writer is the application during a pgphi run: single-row UPDATEs of an
// unprotected column of random patients, one every interval, each timed.
type writer struct {
	quit chan struct{}
	done chan struct{}
	st   writerStats
}

type writerStats struct {
	n, errors int
	firstErr  string
	lat       []time.Duration
	max       time.Duration
	maxAt     time.Duration // since the writer started
}

func (s writerStats) pct(p float64) time.Duration { return percentile(s.lat, p) }

func startWriter(ctx context.Context, url string, every time.Duration) (*writer, error) {
	conn, err := dbconn.Conn(ctx, url)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT uid FROM public.patient ORDER BY md5(uid) LIMIT 10000")
	if err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	uids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(uids) == 0 {
		conn.Close(context.Background())
		return nil, fmt.Errorf("writer: no patients (%v)", err)
	}
	w := &writer{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer conn.Close(context.Background())
		rng := rand.New(rand.NewPCG(1, 2))
		begin := time.Now()
		for {
			select {
			case <-w.quit:
				return
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
			uid := uids[rng.IntN(len(uids))]
			qctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			t := time.Now()
			_, err := conn.Exec(qctx, "UPDATE public.patient SET updated_at = now() WHERE uid = $1", uid)
			d := time.Since(t)
			cancel()
			w.st.n++
			w.st.lat = append(w.st.lat, d)
			if d > w.st.max {
				w.st.max, w.st.maxAt = d, t.Sub(begin)
			}
			if err != nil {
				w.st.errors++
				if w.st.firstErr == "" {
					w.st.firstErr = err.Error()
				}
				if conn.IsClosed() {
					return
				}
			}
		}
	}()
	return w, nil
}

func (w *writer) stop() writerStats {
	close(w.quit)
	<-w.done
	slices.Sort(w.st.lat)
	return w.st
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
