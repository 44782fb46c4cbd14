// Package hooks owns lifecycle hooks: operator executables run at fixed
// phases of a pgphi operation with a JSON context on stdin.
//
// A hook is a path to an executable, optionally followed by arguments
// separated by spaces (no shell, no quoting: wrap anything fancier in a
// script). It runs with a clean environment (PATH, HOME, LANG, PGPHI_PHASE,
// PGPHI_PLAN_ID): nothing of pgphi's own environment, such as a key
// passphrase or a database password, reaches it. It gets the JSON encoding
// of Context on stdin and must finish within the timeout, after which its
// whole process group is killed.
//
// A failing pre_* hook vetoes the operation; post_* and on_error hooks are
// notifications whose failures are reported but do not change the outcome.
package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Phase names a point in an operation's lifecycle.
type Phase string

// The phases, in pgphi.yaml's spelling.
const (
	PreValidate  Phase = "pre_validate"
	PreExecute   Phase = "pre_execute"
	PostExecute  Phase = "post_execute"
	OnError      Phase = "on_error"
	PreCleanup   Phase = "pre_cleanup"
	PostCleanup  Phase = "post_cleanup"
	PreRollback  Phase = "pre_rollback"
	PostRollback Phase = "post_rollback"
)

// Phases lists every phase.
var Phases = []Phase{PreValidate, PreExecute, PostExecute, OnError, PreCleanup, PostCleanup, PreRollback, PostRollback}

// Valid reports whether p is one of Phases.
func (p Phase) Valid() bool {
	for _, q := range Phases {
		if p == q {
			return true
		}
	}
	return false
}

// Vetoes reports whether a failing hook of phase p stops the operation
// (the pre_* phases).
func (p Phase) Vetoes() bool { return strings.HasPrefix(string(p), "pre_") }

// DefaultTimeout is the time a hook may run when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// MaxOutput is the length limit of Result.Output in bytes.
const MaxOutput = 4 << 10

// captureLimit bounds the output kept for redaction; the rest is discarded.
const captureLimit = 64 << 10

// Config holds the configured hooks.
type Config struct {
	// Hooks maps a phase to its commands, run in order. A command is a path
	// or a path with arguments split on spaces; there is no shell.
	Hooks map[Phase][]string
	// Timeout is the limit of each hook run; zero means DefaultTimeout.
	Timeout time.Duration
}

// Context is what a hook receives on stdin, JSON-encoded, e.g.
//
//	{"phase":"pre_execute","command":"apply","plan_id":"...","environment":"production",
//	 "database":"host=db1 port=5432 dbname=lims","actor":"alice","reason":"CHG-1234",
//	 "tables":["patient"]}
//
// It must hold no secrets and no PHI: Database is a description without
// credentials, Error only an error class.
type Context struct {
	Phase       Phase    `json:"phase"`
	Command     string   `json:"command"`
	PlanID      string   `json:"plan_id"`
	Environment string   `json:"environment"`
	Database    string   `json:"database"`
	Actor       string   `json:"actor"`
	Reason      string   `json:"reason"`
	Tables      []string `json:"tables"`
	Error       string   `json:"error,omitempty"` // error class only, for on_error
}

// Result is the record of one hook run.
type Result struct {
	Phase Phase
	// Command is the hook's path. Its arguments are not recorded: they may
	// hold secrets.
	Command string
	// ExitCode is the exit status, or -1 when the hook could not start,
	// timed out, was interrupted or was killed by a signal.
	ExitCode int
	Duration time.Duration
	// Output is the hook's combined stdout and stderr, passed through the
	// redact function given to Run and truncated to MaxOutput bytes.
	Output string
}

// ErrHookFailed is wrapped by the errors of failing hooks: a non-zero exit,
// a timeout, an interruption, or a hook that cannot start.
var ErrHookFailed = errors.New("hook failed")

// Run runs every hook configured for hc.Phase, in order, each with the JSON
// encoding of hc on stdin, a clean environment (PATH, HOME and LANG from
// pgphi's environment, plus PGPHI_PHASE and PGPHI_PLAN_ID) and the timeout;
// on timeout or cancellation of ctx the hook's process group is killed.
//
// For the pre_* phases the first failing hook stops the run: Run returns the
// results so far (the failed one last) and an error wrapping ErrHookFailed
// that names the hook by its path (not its arguments) and its exit code. For
// post_* and on_error all hooks run and their failures are returned joined;
// callers log them, and the operation's own outcome stands.
//
// Each hook's output passes through redact before it is stored in Result;
// with a nil redact the output is withheld (Output is empty). The stdin
// context is never logged. An unknown phase is an error not wrapping
// ErrHookFailed; a phase without hooks returns nil, nil.
func (c Config) Run(ctx context.Context, hc Context, redact func(string) string) ([]Result, error) {
	if !hc.Phase.Valid() {
		return nil, fmt.Errorf("hooks: unknown phase %q", hc.Phase)
	}
	cmds := c.Hooks[hc.Phase]
	if len(cmds) == 0 {
		return nil, nil
	}
	if hc.Tables == nil {
		hc.Tables = []string{}
	}
	input, err := json.Marshal(hc)
	if err != nil {
		return nil, fmt.Errorf("hooks: encoding the context: %w", err)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	env := environment(hc)

	var results []Result
	var errs []error
	for i, command := range cmds {
		r, err := runOne(ctx, hc.Phase, i, command, input, env, timeout, redact)
		results = append(results, r)
		if err != nil {
			if hc.Phase.Vetoes() {
				return results, err
			}
			errs = append(errs, err)
		}
	}
	return results, errors.Join(errs...)
}

// environment is the whole environment of a hook.
func environment(hc Context) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		} else if k == "PATH" {
			env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
		}
	}
	return append(env, "PGPHI_PHASE="+string(hc.Phase), "PGPHI_PLAN_ID="+hc.PlanID)
}

func runOne(ctx context.Context, phase Phase, index int, command string, input []byte, env []string,
	timeout time.Duration, redact func(string) string) (Result, error) {
	fields := strings.Fields(command)
	r := Result{Phase: phase, ExitCode: -1}
	if len(fields) == 0 {
		return r, fmt.Errorf("%w: %s hook #%d is empty", ErrHookFailed, phase, index+1)
	}
	path := fields[0]
	r.Command = path
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s hook %s: %s", ErrHookFailed, phase, path, fmt.Sprintf(format, args...))
	}

	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, path, fields[1:]...)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(input)
	out := &capture{}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = 2 * time.Second // pipes held open by a stray child
	ownProcessGroup(cmd)

	start := time.Now()
	err := cmd.Run()
	r.Duration = time.Since(start)
	if cmd.ProcessState != nil {
		r.ExitCode = cmd.ProcessState.ExitCode()
	}
	if redact != nil {
		r.Output = truncate(redact(out.String()), MaxOutput)
	}

	var exitErr *exec.ExitError
	switch {
	case err != nil && cmd.Process == nil:
		// The error names the path and the reason (not found, permission).
		return r, fail("cannot start: %v", err)
	case ctx.Err() != nil && (err != nil || r.ExitCode != 0):
		r.ExitCode = -1
		return r, fail("interrupted: %v", ctx.Err())
	case hctx.Err() != nil && (err != nil || r.ExitCode != 0):
		r.ExitCode = -1
		return r, fail("timed out after %s and was killed", timeout)
	case errors.As(err, &exitErr) && r.ExitCode == -1:
		return r, fail("%v", exitErr.ProcessState) // "signal: killed"
	case r.ExitCode != 0:
		return r, fail("exited with code %d", r.ExitCode)
	case err != nil && !errors.Is(err, exec.ErrWaitDelay):
		return r, fail("%v", err)
	}
	return r, nil
}

// capture keeps the first captureLimit bytes written to it.
type capture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := captureLimit - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

const truncatedMark = "\n[output truncated]"

// truncate cuts s to at most n bytes on a UTF-8 boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len(truncatedMark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncatedMark
}
