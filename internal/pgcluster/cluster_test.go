package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// syncBuffer is a bytes.Buffer safe for the log tailer goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := FindBinDir(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

func queryOne(t *testing.T, ctx context.Context, url, sql string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestLifecycle(t *testing.T) {
	requireBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var log syncBuffer
	c, err := Start(ctx, Options{
		Settings: map[string]string{"work_mem": "8MB", "application_name": "it's \\ quoted"},
		Log:      &log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })

	wantURL := "postgres://postgres@127.0.0.1:" + itoa(c.Port()) + "/postgres?sslmode=disable"
	if got := c.URL("postgres"); got != wantURL {
		t.Errorf("URL = %q, want %q", got, wantURL)
	}
	if !strings.HasPrefix(c.DataDir(), c.baseDir) || !strings.HasPrefix(c.SocketDir(), c.baseDir) {
		t.Errorf("DataDir %q / SocketDir %q not under %q", c.DataDir(), c.SocketDir(), c.baseDir)
	}

	url := c.URL("postgres")
	if got := queryOne(t, ctx, url, "select 1::text"); got != "1" {
		t.Errorf("select 1 = %q", got)
	}
	for setting, want := range map[string]string{
		"work_mem":                "8MB",
		"application_name":        `it's \ quoted`,
		"max_connections":         "200",
		"shared_buffers":          "128MB",
		"fsync":                   "on",
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": c.SocketDir(),
		"server_encoding":         "UTF8",
	} {
		if got := queryOne(t, ctx, url, "select current_setting('"+setting+"')"); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(c.SocketDir(), ".s.PGSQL."+itoa(c.Port()))); err != nil {
		t.Errorf("unix socket: %v", err)
	}
	pid := c.postmasterPID()
	if !processAlive(pid) || !c.isOurPostmaster(pid) {
		t.Fatalf("postmaster pid %d not alive or not recognized", pid)
	}
	if uid, ok := processUID(pid); ok {
		want := os.Getuid()
		if c.identity != nil {
			want = c.identity.uid
		}
		if uid == 0 || uid != want {
			t.Errorf("postmaster runs as uid %d, want %d", uid, want)
		}
	}
	if c.isOurPostmaster(os.Getpid()) {
		t.Errorf("isOurPostmaster(test process) = true")
	}

	// Restart terminates open sessions and comes back on the same port.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Error("old connection still works after Restart")
	}
	if got := queryOne(t, ctx, url, "select 1::text"); got != "1" {
		t.Errorf("select 1 after restart = %q", got)
	}
	newPID := c.postmasterPID()
	if newPID == pid || !processAlive(newPID) {
		t.Errorf("postmaster pid after restart = %d (before %d)", newPID, pid)
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{pid, newPID} {
		if processAlive(p) {
			t.Errorf("postmaster pid %d still alive after Stop", p)
		}
	}
	for _, dir := range c.dirs {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Stop (stat: %v)", dir, err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+itoa(c.Port()))
	if err != nil {
		t.Errorf("port %d not free after Stop: %v", c.Port(), err)
	} else {
		l.Close()
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := c.Restart(ctx); err == nil {
		t.Error("Restart after Stop succeeded")
	}
	if s := log.String(); !strings.Contains(s, "database system is ready to accept connections") ||
		!strings.Contains(s, "database system is shut down") {
		t.Errorf("Options.Log did not receive the server log; got:\n%s", s)
	}
}

func TestFastAndPortCollision(t *testing.T) {
	requireBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The first port handed out is already taken; Start must retry.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	orig := pickPort
	calls := 0
	pickPort = func() (int, error) {
		calls++
		if calls == 1 {
			return busyPort, nil
		}
		return orig()
	}
	defer func() { pickPort = orig }()

	c, err := Start(ctx, Options{Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if calls < 2 || c.Port() == busyPort {
		t.Errorf("port collision not retried: calls=%d port=%d busy=%d", calls, c.Port(), busyPort)
	}
	for _, s := range []string{"fsync", "full_page_writes", "synchronous_commit"} {
		if got := queryOne(t, ctx, c.URL("postgres"), "select current_setting('"+s+"')"); got != "off" {
			t.Errorf("Fast: %s = %q, want off", s, got)
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestStartFailureReportsLog(t *testing.T) {
	requireBinaries(t)
	tmp := privateTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, err := Start(ctx, Options{Settings: map[string]string{"shared_buffers": "not-a-size"}})
	if err == nil {
		t.Fatal("Start with an invalid setting succeeded")
	}
	if !strings.Contains(err.Error(), "shared_buffers") {
		t.Errorf("error does not quote the server log:\n%v", err)
	}
	if _, err := Start(ctx, Options{Settings: map[string]string{"bad name": "x"}}); err == nil {
		t.Error("Start with an invalid setting name succeeded")
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("failed Start left %s behind in $TMPDIR", e.Name())
	}
}

// privateTempDir returns a fresh directory set as $TMPDIR, reachable by the
// server user when running as root.
func privateTempDir(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	for _, d := range []string{tmp, filepath.Dir(tmp)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("TMPDIR", tmp)
	return tmp
}

func TestTempParent(t *testing.T) {
	tmp := privateTempDir(t)
	if got := tempParent(&runAs{}); got != tmp {
		t.Errorf("tempParent with reachable TMPDIR = %q, want %q", got, tmp)
	}
	if got := tempParent(nil); got != tmp {
		t.Errorf("tempParent(nil) = %q, want %q", got, tmp)
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if got := tempParent(&runAs{}); got != "/tmp" {
		t.Errorf("tempParent with unreachable TMPDIR = %q, want /tmp", got)
	}
	if got := tempParent(nil); got != tmp {
		t.Errorf("tempParent(nil) with private TMPDIR = %q, want %q", got, tmp)
	}
}

func TestFindBinDir(t *testing.T) {
	requireBinaries(t)
	dir, err := FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkBinDir(dir); err != nil {
		t.Fatal(err)
	}

	t.Setenv(EnvBinDir, t.TempDir())
	if _, err := FindBinDir(); !errors.Is(err, ErrNoServerBinaries) || !strings.Contains(err.Error(), EnvBinDir) {
		t.Errorf("bogus $%s: err = %v", EnvBinDir, err)
	}

	// Nothing on PATH, nothing in the Debian location: clear error.
	t.Setenv(EnvBinDir, "")
	t.Setenv("PATH", t.TempDir())
	origGlob := debianGlob
	debianGlob = filepath.Join(t.TempDir(), "*", "bin")
	defer func() { debianGlob = origGlob }()
	_, err = FindBinDir()
	if !errors.Is(err, ErrNoServerBinaries) || !strings.Contains(err.Error(), "apt-get install postgresql") {
		t.Errorf("no binaries: err = %v", err)
	}

	// Debian layout only (not on PATH): highest version wins.
	root := t.TempDir()
	for _, v := range []string{"9.6", "13", "15"} {
		bin := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if v == "15" {
			continue // incomplete installation: skipped
		}
		for _, name := range serverBinaries {
			if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	debianGlob = filepath.Join(root, "*", "bin")
	if got, err := FindBinDir(); err != nil || got != filepath.Join(root, "13", "bin") {
		t.Errorf("FindBinDir = %q, %v; want %s", got, err, filepath.Join(root, "13", "bin"))
	}

	// PATH (through a symlink) wins over the Debian location.
	link := t.TempDir()
	if err := os.Symlink(filepath.Join(root, "9.6", "bin", "initdb"), filepath.Join(link, "initdb")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", link)
	if got, err := FindBinDir(); err != nil || got != filepath.Join(root, "9.6", "bin") {
		t.Errorf("FindBinDir via PATH = %q, %v; want %s", got, err, filepath.Join(root, "9.6", "bin"))
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
