package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runResult is one pgphi process.
type runResult struct {
	args     []string
	code     int  // exit code; -1 when killed by a signal
	killed   bool // died of our SIGKILL
	timedOut bool // ran past -command-timeout: a hang
	stdout   string
	stderr   string
	took     time.Duration
	marks    []mark // "==> " step lines and when they arrived
}

// mark is a "==> step" line of pgphi and its time since the start.
type mark struct {
	step string
	at   time.Duration
}

// stepDuration is how long the first step whose line starts with prefix
// ran (until the next step line or the end).
func (r runResult) stepDuration(prefix string) time.Duration {
	for i, m := range r.marks {
		if strings.HasPrefix(m.step, prefix) {
			end := r.took
			if i+1 < len(r.marks) {
				end = r.marks[i+1].at
			}
			return end - m.at
		}
	}
	return 0
}

// lastLine is the last non-empty line of stderr (pgphi's error), shortened.
func (r runResult) lastLine() string {
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 200 {
		l = l[:200] + "..."
	}
	return l
}

// summary describes the outcome without any value: pgphi's own last line,
// unless it contains a planted value.
func (r runResult) summary() string {
	switch {
	case r.timedOut:
		return "did not finish (hang)"
	case r.killed:
		return "killed"
	}
	line := r.lastLine()
	if strings.Contains(line, canaryPrefix) {
		line = "[withheld: contains a planted value]"
	}
	return fmt.Sprintf("exit %d: %s", r.code, line)
}

// proc is a running pgphi process.
type proc struct {
	cmd    *exec.Cmd
	start  time.Time
	done   chan struct{} // closed when the process has exited and its output is read
	res    runResult
	killMu sync.Mutex
	killed bool
	cancel context.CancelFunc
}

// stackTraceMarkers never appear in pgphi's output (as in the e2e tests).
var stackTraceMarkers = []string{"goroutine ", "panic:", "internal error"}

// start runs pgphi with the trial's config and database; onLine sees every
// line of stderr (progress and step lines) as it arrives.
func (t *trial) start(ctx context.Context, logName string, onLine func(string), args ...string) (*proc, error) {
	all := append(append([]string{}, args...), "--config", t.config, "--database-url", t.e.cl.URL(t.db))
	cctx, cancel := context.WithTimeout(ctx, t.e.o.cmdTimeout)
	cmd := exec.CommandContext(cctx, t.e.bin, all...)
	cmd.Env = t.e.pgphiEnv()
	cmd.Dir = t.dir
	cmd.WaitDelay = 10 * time.Second
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), cancel: cancel}
	p.res.args = args
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	p.start = time.Now()
	var stdout, stderr strings.Builder
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		b, _ := io.ReadAll(outPipe)
		stdout.Write(b)
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(errPipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			stderr.WriteString(line + "\n")
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "==> "); ok {
				p.res.marks = append(p.res.marks, mark{step: rest, at: time.Since(p.start)})
			}
			mu.Unlock()
			if onLine != nil {
				onLine(line)
			}
		}
		_, _ = io.Copy(io.Discard, errPipe)
	}()
	go func() {
		wg.Wait()
		err := cmd.Wait()
		p.res.took = time.Since(p.start)
		p.res.stdout, p.res.stderr = stdout.String(), stderr.String()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case cctx.Err() == context.DeadlineExceeded:
			p.res.timedOut = true
			p.res.code = -1
		case errors.As(err, &ee):
			p.res.code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				p.killMu.Lock()
				p.res.killed = p.killed && ws.Signal() == syscall.SIGKILL
				p.killMu.Unlock()
			}
		default:
			p.res.code = -1
		}
		cancel()
		t.record(logName, p.res)
		close(p.done)
	}()
	return p, nil
}

// kill sends SIGKILL to the pgphi process (only that process) if it is
// still running, and reports whether it was.
func (p *proc) kill() bool {
	select {
	case <-p.done:
		return false
	default:
	}
	p.killMu.Lock()
	p.killed = true
	p.killMu.Unlock()
	return p.cmd.Process.Signal(syscall.SIGKILL) == nil
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) wait() runResult {
	<-p.done
	return p.res
}

// run runs pgphi to its end.
func (t *trial) run(ctx context.Context, logName string, onLine func(string), args ...string) runResult {
	p, err := t.start(ctx, logName, onLine, args...)
	if err != nil {
		r := runResult{args: args, code: -1, stderr: "starting pgphi: " + err.Error()}
		t.record(logName, r)
		return r
	}
	return p.wait()
}

// record keeps a run's output for the leak and stack trace checks, and in
// the trial directory's log.
func (t *trial) record(logName string, r runResult) {
	t.mu.Lock()
	t.runs = append(t.runs, r)
	n := len(t.runs)
	t.mu.Unlock()
	if t.dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(t.dir, fmt.Sprintf("%02d-%s.log", n, logName)))
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "$ pgphi %s\n# exit %d killed=%v timed_out=%v took=%s\n--- stdout\n%s--- stderr\n%s",
		strings.Join(r.args, " "), r.code, r.killed, r.timedOut, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// planID reads the plan id from `pgphi plan --json`.
func (t *trial) planID(ctx context.Context) (string, error) {
	r := t.run(ctx, "plan", nil, "plan", "--json")
	if r.code != 0 {
		return "", fmt.Errorf("pgphi plan --json: %s", r.summary())
	}
	var p struct {
		PlanID string `json:"plan_id"`
	}
	if err := json.NewDecoder(strings.NewReader(r.stdout)).Decode(&p); err != nil || !strings.HasPrefix(p.PlanID, "plan-") {
		return "", fmt.Errorf("pgphi plan --json gives no plan id (%v)", err)
	}
	return p.PlanID, nil
}
