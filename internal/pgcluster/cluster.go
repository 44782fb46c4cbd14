// Package pgcluster starts and stops throwaway local PostgreSQL clusters.
//
// A cluster lives in a fresh temporary directory (data directory, Unix
// socket directory and server log), listens on 127.0.0.1 on a free TCP port,
// and trusts every local connection as superuser "postgres". Stop shuts the
// server down and removes all its directories.
//
// PostgreSQL refuses to run as root: when the calling process is root, the
// server programs run as the "postgres" OS user (created if missing).
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configures Start. The zero value is a usable default.
type Options struct {
	// Settings are extra postgresql.conf settings, e.g.
	// {"max_connections": "300", "log_statement": "all"}. They override the
	// defaults set by this package.
	Settings map[string]string

	// Log receives the server's log output as it is written. When nil the
	// log is only kept in a file inside the cluster directory (and quoted in
	// start errors).
	Log io.Writer

	// Fast turns off durability (fsync, full_page_writes,
	// synchronous_commit) for speed. Only for data you can lose: tests.
	Fast bool

	// BinDir is the directory holding initdb, pg_ctl and postgres. Empty
	// means FindBinDir.
	BinDir string
}

// Cluster is a running throwaway PostgreSQL cluster. Its methods are safe
// for concurrent use.
type Cluster struct {
	binDir   string
	baseDir  string   // everything lives here; removed by Stop
	dirs     []string // directories removed by Stop (baseDir and maybe a separate socket dir)
	dataDir  string
	sockDir  string
	logFile  string
	port     int
	identity *runAs
	tail     *tailer

	mu      sync.Mutex
	stopped bool
}

const (
	superuser    = "postgres"
	startTimeout = 120 // seconds, pg_ctl -t
	stopTimeout  = 30  // seconds, pg_ctl -t
	portAttempts = 5
	logTailLines = 20
)

// pickPort returns a TCP port that is currently free on 127.0.0.1. A
// variable so tests can simulate port collisions.
var pickPort = func() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start creates a new cluster with initdb in a fresh temporary directory
// and starts it, returning once it accepts connections. The caller must
// call Stop.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	binDir := opts.BinDir
	if binDir == "" {
		if binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	} else if err := checkBinDir(binDir); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}

	identity, err := serverIdentity()
	if err != nil {
		return nil, err
	}

	base, err := makeDir(tempParent(identity), "pgphi-pg-", identity)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		binDir:   binDir,
		baseDir:  base,
		dirs:     []string{base},
		dataDir:  filepath.Join(base, "data"),
		sockDir:  filepath.Join(base, "sock"),
		logFile:  filepath.Join(base, "server.log"),
		identity: identity,
	}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()

	if err := os.Mkdir(c.sockDir, 0o755); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if err := identity.chown(c.sockDir); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	// Unix socket paths are limited to ~104 bytes; use a short directory
	// under /tmp when the temp dir path is too long.
	if len(c.sockDir)+len("/.s.PGSQL.65535") >= 100 {
		dir, err := makeDir("/tmp", "pgphi-sock-", identity)
		if err != nil {
			return nil, err
		}
		c.dirs = append(c.dirs, dir)
		c.sockDir = dir
	}

	if err := c.initdb(ctx); err != nil {
		return nil, err
	}
	if err := c.writeConfig(opts); err != nil {
		return nil, err
	}
	if opts.Log != nil {
		c.tail = startTailer(c.logFile, opts.Log)
	}

	for attempt := 1; ; attempt++ {
		port, err := pickPort()
		if err != nil {
			return nil, fmt.Errorf("pgcluster: picking a free port: %w", err)
		}
		c.port = port
		logStart := fileSize(c.logFile)
		out, err := c.pgCtl(ctx, "start", "-D", c.dataDir, "-l", c.logFile,
			"-o", "-p "+strconv.Itoa(port), "-w", "-t", strconv.Itoa(startTimeout))
		if err == nil {
			return c, nil
		}
		if attempt < portAttempts && ctx.Err() == nil && portCollision(readFrom(c.logFile, logStart)) {
			continue
		}
		return nil, c.serverError("starting server", out, err)
	}
}

// URL returns the connection URL of database on this cluster as superuser
// "postgres" over TCP: postgres://postgres@127.0.0.1:PORT/DATABASE?sslmode=disable.
func (c *Cluster) URL(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on (127.0.0.1 only).
func (c *Cluster) Port() int { return c.port }

// DataDir returns the cluster's data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// SocketDir returns the directory holding the server's Unix socket.
func (c *Cluster) SocketDir() string { return c.sockDir }

// LogFile returns the path of the server log file.
func (c *Cluster) LogFile() string { return c.logFile }

// Restart restarts the server (fast shutdown: open sessions are
// terminated) and waits until it accepts connections again.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("pgcluster: Restart called on a stopped cluster")
	}
	out, err := c.pgCtl(ctx, "restart", "-D", c.dataDir, "-l", c.logFile, "-m", "fast",
		"-o", "-p "+strconv.Itoa(c.port), "-w", "-t", strconv.Itoa(startTimeout))
	if err != nil {
		return c.serverError("restarting server", out, err)
	}
	return nil
}

// Stop shuts the server down (fast mode, falling back to immediate mode and
// finally SIGKILL) and removes all of the cluster's directories. It is
// idempotent; only the first call does any work.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true

	var errs []error
	if err := c.shutdown(); err != nil {
		errs = append(errs, err)
	}
	if c.tail != nil {
		c.tail.stop()
	}
	for _, dir := range c.dirs {
		if err := removeAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("pgcluster: removing %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// shutdown makes sure no server process is left for this data directory.
func (c *Cluster) shutdown() error {
	if !c.pidFileExists() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pid := c.postmasterPID()
	if pid > 0 && (!processAlive(pid) || !c.isOurPostmaster(pid)) {
		// Stale postmaster.pid: the server died (its children exit with
		// it) and the PID may now belong to an unrelated process.
		return nil
	}
	// stopped waits (up to d) for the postmaster to exit: pg_ctl -w returns
	// once postmaster.pid is gone, which is just before the process exits.
	stopped := func(d time.Duration) bool {
		for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
			if !c.pidFileExists() && (pid <= 0 || !processAlive(pid)) {
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
		}
	}

	out, err := c.pgCtl(ctx, "stop", "-D", c.dataDir, "-m", "fast", "-w", "-t", strconv.Itoa(stopTimeout))
	if stopped(5 * time.Second) {
		return nil
	}
	firstErr := fmt.Errorf("pg_ctl stop -m fast: %v: %s", err, strings.TrimSpace(string(out)))

	_, _ = c.pgCtl(ctx, "stop", "-D", c.dataDir, "-m", "immediate", "-w", "-t", strconv.Itoa(stopTimeout))
	if stopped(5 * time.Second) {
		return nil
	}

	// Last resort: kill the postmaster; its children exit when it dies.
	if pid > 0 && processAlive(pid) {
		_ = killProcess(pid)
		for i := 0; i < 100 && processAlive(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if processAlive(pid) {
			return fmt.Errorf("pgcluster: could not stop server (pid %d) in %s: %v", pid, c.dataDir, firstErr)
		}
	}
	return nil
}

func (c *Cluster) pidFileExists() bool {
	_, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid"))
	return err == nil
}

// postmasterPID reads the first line of postmaster.pid (0 if unavailable).
func (c *Cluster) postmasterPID() int {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// isOurPostmaster guards against signalling an unrelated process that
// reused a stale PID. Where /proc is available, the process must run in our
// data directory (the postmaster chdirs there) or name it on its command line.
func (c *Cluster) isOurPostmaster(pid int) bool {
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	if _, err := os.Stat(proc); err != nil {
		return processAlive(pid) // no /proc: trust postmaster.pid
	}
	want := c.dataDir
	if r, err := filepath.EvalSymlinks(want); err == nil {
		want = r
	}
	if cwd, err := os.Readlink(filepath.Join(proc, "cwd")); err == nil && (cwd == want || cwd == c.dataDir) {
		return true
	}
	b, err := os.ReadFile(filepath.Join(proc, "cmdline"))
	return err == nil && bytes.Contains(b, []byte(c.dataDir))
}

func (c *Cluster) initdb(ctx context.Context) error {
	var firstOut []byte
	for _, locale := range []string{"C.UTF-8", "C"} {
		cmd := c.command(ctx, "initdb", "-D", c.dataDir, "-U", superuser, "-A", "trust",
			"-E", "UTF8", "--locale="+locale, "--no-sync")
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("pgcluster: initdb: %w", ctx.Err())
		}
		if firstOut == nil {
			firstOut = out
			_ = removeAll(c.dataDir)
			continue
		}
		return fmt.Errorf("pgcluster: initdb failed: %w\n--- output with --locale=C.UTF-8:\n%s\n--- output with --locale=C:\n%s",
			err, strings.TrimSpace(string(firstOut)), strings.TrimSpace(string(out)))
	}
	return nil
}

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

func (c *Cluster) writeConfig(opts Options) error {
	var b strings.Builder
	set := func(k, v string) {
		v = strings.ReplaceAll(v, `\`, `\\`)
		v = strings.ReplaceAll(v, `'`, `''`)
		fmt.Fprintf(&b, "%s = '%s'\n", k, v)
	}
	b.WriteString("\n# Added by pgphi internal/pgcluster (throwaway cluster).\n")
	set("listen_addresses", "127.0.0.1")
	set("unix_socket_directories", c.sockDir)
	set("max_connections", "200")
	set("shared_buffers", "128MB")
	if opts.Fast {
		b.WriteString("# Options.Fast: no durability.\n")
		set("fsync", "off")
		set("full_page_writes", "off")
		set("synchronous_commit", "off")
	}
	if len(opts.Settings) > 0 {
		b.WriteString("# Options.Settings\n")
		keys := make([]string, 0, len(opts.Settings))
		for k := range opts.Settings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v := opts.Settings[k]
			if !settingName.MatchString(k) {
				return fmt.Errorf("pgcluster: invalid setting name %q", k)
			}
			if strings.ContainsAny(v, "\r\n\x00") {
				return fmt.Errorf("pgcluster: setting %s: value contains a newline or NUL", k)
			}
			set(k, v)
		}
	}
	f, err := os.OpenFile(filepath.Join(c.dataDir, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("pgcluster: writing postgresql.conf: %w", err)
	}
	return f.Close()
}

// command builds an exec.Cmd for a server program, running as the server
// identity, in the cluster directory, without PG* client variables.
func (c *Cluster) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, prog), args...)
	cmd.Dir = c.baseDir
	cmd.WaitDelay = 10 * time.Second
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	c.identity.apply(cmd)
	return cmd
}

func (c *Cluster) pgCtl(ctx context.Context, args ...string) ([]byte, error) {
	return c.command(ctx, "pg_ctl", args...).CombinedOutput()
}

// serverError describes a failed pg_ctl start/restart, quoting the end of
// the server log.
func (c *Cluster) serverError(what string, out []byte, err error) error {
	return fmt.Errorf("pgcluster: %s (port %d, data %s) failed: %w\npg_ctl output:\n%s\nlast %d lines of %s:\n%s",
		what, c.port, c.dataDir, err, indent(strings.TrimSpace(string(out))),
		logTailLines, c.logFile, indent(lastLines(c.logFile, logTailLines)))
}

// portCollision reports whether server log text says the port was taken.
func portCollision(log string) bool {
	return strings.Contains(log, "could not bind") ||
		strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "could not create any TCP/IP sockets")
}

// tempParent returns the directory to create the cluster directory in:
// os.TempDir(), or /tmp when the server runs as another user who could not
// reach os.TempDir().
func tempParent(identity *runAs) string {
	dir := os.TempDir()
	if identity == nil {
		return dir
	}
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if traversableByAll(dir) {
		return dir
	}
	return "/tmp"
}

// makeDir creates a fresh mode-0755 directory under parent owned by identity.
func makeDir(parent, pattern string, identity *runAs) (string, error) {
	dir, err := os.MkdirTemp(parent, pattern)
	if err != nil {
		return "", fmt.Errorf("pgcluster: creating temporary directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("pgcluster: %w", err)
	}
	if err := identity.chown(dir); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("pgcluster: giving %s to the server user: %w", dir, err)
	}
	return dir, nil
}

// removeAll retries briefly: a dying server may still be writing files.
func removeAll(dir string) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func parentDir(dir string) string { return filepath.Dir(dir) }

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func readFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// lastLines returns the last n lines of the file at path.
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read server log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indent(s string) string {
	if s == "" {
		return "    (empty)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// tailer copies what is appended to a file to a writer until stopped.
type tailer struct {
	path string
	w    io.Writer
	off  int64
	quit chan struct{}
	done chan struct{}
}

func startTailer(path string, w io.Writer) *tailer {
	t := &tailer{path: path, w: w, quit: make(chan struct{}), done: make(chan struct{})}
	go t.run()
	return t
}

func (t *tailer) run() {
	defer close(t.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-t.quit:
			t.copy()
			return
		case <-tick.C:
			t.copy()
		}
	}
}

func (t *tailer) copy() {
	f, err := os.Open(t.path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(t.off, io.SeekStart); err != nil {
		return
	}
	n, _ := io.Copy(t.w, f)
	t.off += n
}

// stop copies what remains and waits for the tailer to finish.
func (t *tailer) stop() {
	close(t.quit)
	<-t.done
}
