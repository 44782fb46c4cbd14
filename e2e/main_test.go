package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/pgtest"
)

// pgphiBin is the binary under test, built once by TestMain.
var pgphiBin string

const testPassphrase = "some-test-passphrase"

// commandTimeout bounds every pgphi invocation so that a hung process fails
// its test instead of hanging the suite.
const commandTimeout = 2 * time.Minute

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pgphi-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	pgphiBin = filepath.Join(dir, "pgphi")
	build := exec.Command("go", "build", "-o", pgphiBin, "./cmd/pgphi")
	build.Dir = ".." // the module root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building pgphi: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// pgtest.Main exits the process, so this run's binary stays in TMPDIR;
	// earlier runs' binaries (older than any test run) are removed here.
	removeStaleBinaries(dir)
	pgtest.Main(m)
}

func removeStaleBinaries(keep string) {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgphi-e2e-bin-*"))
	for _, d := range old {
		if fi, err := os.Stat(d); err == nil && d != keep && time.Since(fi.ModTime()) > time.Hour {
			os.RemoveAll(d)
		}
	}
}

// cleanEnv is the process environment without anything that would change
// which config, database or key pgphi uses: each test says so explicitly.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "PGPHI_"), name == "DATABASE_URL", strings.HasPrefix(name, "PG"):
			continue
		}
		out = append(out, kv)
	}
	// Long operations need a reason for the audit trail; pipelines give it here.
	// The adaptive throttle reacts to the load of tests running in parallel
	// on a small machine; these tests are about correctness (the throttle has
	// tests of its own in package engine).
	return append(out, "PGPHI_REASON=e2e test", "PGPHI_ADAPTIVE=off")
}

// stackTraceMarkers never appear in pgphi's output: they mean a Go panic
// (recovered or not) reached the user.
var stackTraceMarkers = []string{"goroutine ", "panic:", "internal error"}

// runPgphi runs the binary with args and env (added to a clean environment)
// in a scratch working directory, and returns its output and exit code. It
// fails t if the process cannot be run, times out, or prints a Go stack trace.
func runPgphi(t testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return runPgphiContext(ctx, t, env, args...)
}

func runPgphiContext(ctx context.Context, t testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, pgphiBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Dir = t.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	stdout, stderr = out.String(), errb.String()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		code = 0
	case ctx.Err() != nil:
		t.Fatalf("pgphi %s: did not finish within its deadline (%v)\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), stdout, stderr)
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		t.Fatalf("pgphi %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("pgphi %s -> exit %d (%s)", shortArgs(args), code, time.Since(start).Round(time.Millisecond))
	assertNoStackTrace(t, args, stderr)
	assertNoStackTrace(t, args, stdout)
	return stdout, stderr, code
}

func assertNoStackTrace(t testing.TB, args []string, output string) {
	t.Helper()
	for _, m := range stackTraceMarkers {
		if strings.Contains(output, m) {
			t.Errorf("pgphi %s printed a Go stack trace or internal detail (%q):\n%s", strings.Join(args, " "), m, output)
			return
		}
	}
}

// fixture is one test's database, working directory and config.
type fixture struct {
	t      *testing.T
	url    string
	dir    string
	config string
	env    []string
}

// newFixture creates a fresh database and writes configYAML to DIR/pgphi.yaml.
func newFixture(t *testing.T, configYAML string) *fixture {
	t.Helper()
	f := &fixture{
		t:   t,
		url: pgtest.NewDatabase(t),
		dir: t.TempDir(),
		env: []string{"PGPHI_PASSPHRASE=" + testPassphrase},
	}
	f.config = filepath.Join(f.dir, "pgphi.yaml")
	if configYAML != "" {
		f.writeConfig(configYAML)
	}
	return f
}

func (f *fixture) writeConfig(yaml string) {
	f.t.Helper()
	if err := os.WriteFile(f.config, []byte(yaml), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// result is one pgphi run.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("pgphi %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// globals are the flags every fixture run passes.
func (f *fixture) globals() []string {
	return []string{"--config", f.config, "--database-url", f.url}
}

// run runs pgphi with the fixture's config, database and passphrase.
func (f *fixture) run(args ...string) result {
	f.t.Helper()
	all := append(f.globals(), args...)
	out, errOut, code := runPgphi(f.t, f.env, all...)
	return result{args: all, stdout: out, stderr: errOut, code: code}
}

// mustRun runs pgphi and fails the test unless it exits 0.
func (f *fixture) mustRun(args ...string) result {
	f.t.Helper()
	r := f.run(args...)
	if r.code != 0 {
		f.t.Fatalf("want exit 0, got %s", r)
	}
	return r
}

// expectCode runs pgphi and fails the test unless it exits with want.
func (f *fixture) expectCode(want int, args ...string) result {
	f.t.Helper()
	r := f.run(args...)
	if r.code != want {
		f.t.Fatalf("want exit %d, got %s", want, r)
	}
	return r
}

// start starts pgphi in the background (for kills and concurrency).
func (f *fixture) start(ctx context.Context, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	f.t.Helper()
	all := append(f.globals(), args...)
	cmd := exec.CommandContext(ctx, pgphiBin, all...)
	cmd.Env = append(cleanEnv(), f.env...)
	cmd.Dir = f.t.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		f.t.Fatalf("starting pgphi %s: %v", strings.Join(all, " "), err)
	}
	return cmd, &out, &errb
}

// conn opens a connection to the fixture's database.
func (f *fixture) conn() *pgx.Conn {
	f.t.Helper()
	return pgtest.Connect(f.t, f.url)
}

func (f *fixture) exec(sql string, args ...any) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := f.conn()
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		f.t.Fatalf("%s: %v", firstLine(sql), err)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// queryInt runs a query returning one integer.
func queryInt(t testing.TB, c *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var n int64
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", firstLine(sql), err)
	}
	return n
}

// columnStatus mirrors one entry of `pgphi status --json`.
type columnStatus struct {
	Table     string `json:"table"`
	Column    string `json:"column"`
	Total     int64  `json:"total"`
	Encrypted int64  `json:"encrypted"`
	Pending   int64  `json:"pending"`
	Null      int64  `json:"null"`
	Failed    int64  `json:"failed"`
}

type statusJSON struct {
	PlanID   string         `json:"plan_id"`
	Applied  bool           `json:"applied"`
	Complete bool           `json:"complete"`
	Columns  []columnStatus `json:"columns"`
	Failures []struct {
		Table      string   `json:"table"`
		Column     string   `json:"column"`
		PrimaryKey []string `json:"primary_key"`
		Reason     string   `json:"reason"`
	} `json:"failures"`
}

// status runs `pgphi status --json` and decodes it.
func (f *fixture) status() statusJSON {
	f.t.Helper()
	r := f.mustRun("status", "--json")
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		f.t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
	}
	if len(st.Columns) == 0 {
		f.t.Fatalf("status --json lists no columns:\n%s", r.stdout)
	}
	return st
}

// assertFullyEncrypted checks what an operator checks after apply: every
// column of the status has nothing pending or failed, and every row is
// either encrypted or NULL.
func (f *fixture) assertFullyEncrypted(st statusJSON) {
	f.t.Helper()
	if !st.Complete {
		f.t.Errorf("status: plan %s not complete", st.PlanID)
	}
	for _, c := range st.Columns {
		if c.Pending != 0 || c.Failed != 0 || c.Encrypted+c.Null != c.Total {
			f.t.Errorf("status %s.%s: total %d, encrypted %d, null %d, pending %d, failed %d; want encrypted+null == total and nothing pending or failed",
				c.Table, c.Column, c.Total, c.Encrypted, c.Null, c.Pending, c.Failed)
		}
	}
}

// verifyOK runs `pgphi verify` and requires exit 0, zero mismatches and that
// it read every one of the rows rows of the protected tables.
func (f *fixture) verifyOK(rows int64) result {
	f.t.Helper()
	r := f.mustRun("verify")
	if strings.Contains(r.stdout, "MISMATCH") || !strings.Contains(r.stdout, " 0 mismatches") {
		f.t.Errorf("verify exited 0 but reported problems:\n%s", r.stdout)
	}
	m := verifiedRe.FindStringSubmatch(r.stdout)
	if m == nil {
		f.t.Errorf("verify does not say how many rows it checked:\n%s", r.stdout)
	} else if n, _ := strconv.ParseInt(m[1], 10, 64); n != rows {
		f.t.Errorf("verify checked %d rows, but the protected tables hold %d: rows were skipped\n%s", n, rows, r.stdout)
	}
	return r
}

var verifiedRe = regexp.MustCompile(`verified \d+ values in (\d+) rows`)

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// shortArgs renders args for logs without the per-test --config and
// --database-url values.
func shortArgs(args []string) string {
	var out []string
	for i := 0; i < len(args); i++ {
		if (args[i] == "--config" || args[i] == "--database-url") && i+1 < len(args) {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return strings.Join(out, " ")
}

// logQuery logs the rows of a diagnostic query, one line per row.
func logQuery(t testing.TB, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		t.Logf("%s: %v", firstLine(sql), err)
		return
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Logf("%s: %v", firstLine(sql), err)
			return
		}
		fmt.Fprintln(&b, vals...)
	}
	t.Logf("%s:\n%s", firstLine(sql), b.String())
}
