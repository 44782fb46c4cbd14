package migrate

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Behind PgBouncer in transaction mode, session advisory locks and session
// settings do not hold: the runner refuses, saying why. The pool uses the
// simple protocol so that the refusal, not a prepared-statement error, is
// what is tested.
func TestTransactionPoolerIsRefused(t *testing.T) {
	bouncer, err := exec.LookPath("pgbouncer")
	if err != nil {
		t.Skip("pgbouncer is not installed")
	}
	ctx := testContext(t)
	a, _, _ := setupSuper(t)
	u, _ := url.Parse(a.URL(a.DBA))
	host, port, _ := net.SplitHostPort(u.Host)
	dbName := strings.TrimPrefix(u.Path, "/")
	// pgbouncer drops root for postgres, which must reach the directory
	// (t.TempDir's parent is private).
	dir, err := os.MkdirTemp("", "pgphi-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bport := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ini := fmt.Sprintf(`[databases]
%s = host=%s port=%s dbname=%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
default_pool_size = 4
logfile = %s
pidfile = %s
`, dbName, host, port, dbName, bport, filepath.Join(dir, "users.txt"), filepath.Join(dir, "bouncer.log"), filepath.Join(dir, "bouncer.pid"))
	os.WriteFile(filepath.Join(dir, "users.txt"), []byte(fmt.Sprintf("%q \"\"\n", a.DBA)), 0o644)
	os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644)
	args := []string{filepath.Join(dir, "pgbouncer.ini")}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "postgres"}, args...) // it refuses to run as root
	}
	cmd := exec.Command(bouncer, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	bu := *u
	bu.Host = net.JoinHostPort("127.0.0.1", fmt.Sprint(bport))
	cfg, err := pgxpool.ParseConfig(bu.String())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cfg.MaxConns = 4
	var pool *pgxpool.Pool
	deadline := time.Now().Add(15 * time.Second)
	for {
		pool, err = pgxpool.NewWithConfig(ctx, cfg)
		if err == nil {
			if err = pool.Ping(ctx); err == nil {
				break
			}
			pool.Close()
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "bouncer.log"))
			t.Fatalf("pgbouncer did not answer: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(pool.Close)
	d := writeDir(t, map[string]string{"001_a.up.sql": "CREATE TABLE a (id int);\n"})
	_, err = Open(ctx, pool, d, Options{Logf: t.Logf, LockWait: time.Second})
	if !errors.Is(err, ErrPooler) || !strings.Contains(err.Error(), "PgBouncer") {
		t.Fatalf("got %v, want ErrPooler", err)
	}
}
