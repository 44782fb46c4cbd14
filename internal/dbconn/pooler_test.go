package dbconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/pgcluster"
)

// A direct connection passes; the same server behind a real PgBouncer in
// transaction mode is refused, in session mode it passes.
func TestDetectPooler(t *testing.T) {
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Fast: true})
	if err != nil {
		if errors.Is(err, pgcluster.ErrNoServerBinaries) && os.Getenv("CI") == "" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	direct, err := Open(ctx, c.URL("postgres"), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if err := DetectPooler(ctx, direct); err != nil {
		t.Fatalf("direct connection: %v", err)
	}
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/pgbouncer"); serr == nil {
			bin = "/usr/sbin/pgbouncer"
		} else if os.Getenv("CI") == "" {
			t.Skip("pgbouncer is not installed (apt-get install pgbouncer)")
		} else {
			t.Fatal("pgbouncer is not installed")
		}
	}
	for _, mode := range []string{"transaction", "statement", "session"} {
		t.Run(mode, func(t *testing.T) {
			url := startBouncer(t, bin, c.Port(), mode)
			pool, err := pgxpool.New(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			err = DetectPooler(ctx, pool)
			if mode == "session" {
				if err != nil {
					t.Fatalf("session pooling: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrPooler) {
				t.Fatalf("%s pooling not detected: %v", mode, err)
			}
		})
	}
}

// startBouncer runs pgbouncer in front of the server on port (as the
// postgres user when root: pgbouncer refuses root) and returns its URL.
func startBouncer(t *testing.T, bin string, port int, mode string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgphi-bouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bport := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ini := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
default_pool_size = 4
logfile = %s
`, port, bport, filepath.Join(dir, "users.txt"), mode, filepath.Join(dir, "bouncer.log"))
	os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"postgres" ""`+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "bouncer.ini"), []byte(ini), 0o644)
	cmd := exec.Command(bin, filepath.Join(dir, "bouncer.ini"))
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root and no postgres user for pgbouncer")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		os.Chmod(dir, 0o777)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	out, _ := os.Create(filepath.Join(dir, "stdout"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", bport)); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres", bport)
}
