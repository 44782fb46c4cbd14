// Package hooks owns lifecycle hooks: operator executables run at fixed
// phases of a pgphi operation with a JSON context on stdin.
//
// A hook is a path to an executable, optionally followed by arguments
// separated by spaces (no shell, no quoting: wrap anything fancier in a
// script). The path is never looked up on PATH: an absolute path is used as
// is, a relative one (`hook.sh`, `./hooks/notify`) is resolved against
// Config.Dir, the config file's directory, and without Dir it is refused, so
// an executable planted in a directory on PATH or in the working directory
// is never run in its place.
//
// A hook runs with a minimal environment built from scratch (PATH=/usr/bin:/bin,
// LANG=C, LC_ALL=C, HOME and TZ as pgphi has them, PGPHI_PHASE,
// PGPHI_PLAN_ID): nothing else of pgphi's environment, such as a key
// passphrase (PGPHI_*), PGPASSWORD or DATABASE_URL, reaches it. pgphi
// itself is non-dumpable (keys.ProtectProcess), so a hook, which runs as the
// same OS user, cannot read them from /proc/PPID/environ either. It gets the JSON encoding
// of Context on stdin and must finish within the timeout, after which its
// whole process group is killed.
//
// A failing pre_* hook vetoes the operation; post_*, on_error and on_alert
// hooks are notifications whose failures are reported but do not change the outcome.
package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	// OnAlert runs when a long command crosses an alert threshold, with the
	// alert in Context.Alert; a notification, like on_error.
	OnAlert Phase = "on_alert"
)

// Phases lists every phase.
var Phases = []Phase{PreValidate, PreExecute, PostExecute, OnError, PreCleanup, PostCleanup, PreRollback, PostRollback, OnAlert}

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
	// Dir is the directory relative command paths are resolved against:
	// the config file's directory. Made absolute against the working
	// directory when relative. Empty: relative paths are refused.
	Dir string
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
	Alert       *Alert   `json:"alert,omitempty"` // for on_alert
}

// Alert is the threshold an on_alert hook is told about, e.g.
//
//	{"threshold":"storage","measured":3.1e8,"limit":2e8,"unit":"bytes","table":"public.patient"}
//
// Numbers and names only: never a value.
type Alert struct {
	Threshold string  `json:"threshold"` // failure_rate, response_time, storage, search_accuracy
	Measured  float64 `json:"measured"`
	Limit     float64 `json:"limit"`
	Unit      string  `json:"unit"` // ratio, seconds, bytes
	Table     string  `json:"table,omitempty"`
}

// Result is the record of one hook run.
type Result struct {
	Phase Phase
	// Command is the hook's absolute path, as run. Its arguments are not
	// recorded: they may hold secrets.
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
// encoding of hc on stdin, the minimal environment described in the package
// documentation and the timeout; on timeout or cancellation of ctx the
// hook's process group is killed. Only absolute paths are executed: a
// relative one is joined to c.Dir, and refused (as a hook that cannot
// start) when c.Dir is empty.
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
		return nil, fmt.Errorf("hooks: unknown phase `%s`", hc.Phase)
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
		r, err := runOne(ctx, hc.Phase, i, c.Dir, command, input, env, timeout, redact)
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

// ChildPath is the PATH of every child process pgphi starts: system
// directories only, never pgphi's own PATH.
const ChildPath = "/usr/bin:/bin"

// MinimalEnv is the environment pgphi gives a child process, built from
// scratch: PATH=ChildPath, LANG=C, LC_ALL=C, and HOME and TZ as pgphi has
// them, followed by extra. Nothing else of pgphi's environment (PGPHI_*,
// PGPASSWORD, DATABASE_URL, PG*) is passed on.
func MinimalEnv(extra ...string) []string {
	env := []string{"PATH=" + ChildPath, "LANG=C", "LC_ALL=C"}
	for _, k := range []string{"HOME", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, extra...)
}

// environment is the whole environment of a hook.
func environment(hc Context) []string {
	return MinimalEnv("PGPHI_PHASE="+string(hc.Phase), "PGPHI_PLAN_ID="+hc.PlanID)
}

// ErrRelativePath is wrapped by the error of a hook whose relative path
// cannot be resolved because no config file directory is known.
var ErrRelativePath = errors.New("hook path is not absolute")

// ResolvePath returns the absolute path a hook command's path stands for:
// path itself when absolute, else path joined to dir (made absolute against
// the working directory if needed). It never searches PATH. Without dir a
// relative path is an error wrapping ErrRelativePath.
func ResolvePath(dir, path string) (string, error) {
	if filepath.IsAbs(path) {
		return filepath.Clean(path), nil
	}
	if dir == "" {
		return "", fmt.Errorf("%w: `%s` is relative and there is no config file directory to resolve it against; give an absolute path (hooks are never looked up on PATH)", ErrRelativePath, path)
	}
	abs, err := filepath.Abs(filepath.Join(dir, path))
	if err != nil {
		return "", fmt.Errorf("resolving hook path `%s`: %w", path, err)
	}
	return abs, nil
}

func runOne(ctx context.Context, phase Phase, index int, dir, command string, input []byte, env []string,
	timeout time.Duration, redact func(string) string) (Result, error) {
	fields := strings.Fields(command)
	r := Result{Phase: phase, ExitCode: -1}
	if len(fields) == 0 {
		return r, fmt.Errorf("%w: %s hook #%d is empty", ErrHookFailed, phase, index+1)
	}
	path, err := ResolvePath(dir, fields[0])
	if err != nil {
		r.Command = fields[0]
		return r, fmt.Errorf("%w: %s hook: %w", ErrHookFailed, phase, err)
	}
	r.Command = path
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s hook %s: %s", ErrHookFailed, phase, path, fmt.Sprintf(format, args...))
	}

	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// path is absolute: exec.Command does not search PATH for it.
	cmd := exec.CommandContext(hctx, path, fields[1:]...)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(input)
	out := &capture{}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = 2 * time.Second // pipes held open by a stray child
	ownProcessGroup(cmd)

	start := time.Now()
	err = cmd.Run()
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
