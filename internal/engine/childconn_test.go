package engine

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/config"
)

// A client program (pg_dump) gets the connection as arguments and a
// password file, and an environment without pgphi's secrets.
func TestChildConnEnvironment(t *testing.T) {
	const dbPassword = "Canary-dbpass:with\\colon"
	t.Setenv("PGPHI_PASSPHRASE", "Canary-passphrase-51aa")
	t.Setenv("PGPASSWORD", "Canary-pgpassword-9e0f")
	t.Setenv("DATABASE_URL", "postgres://x:Canary-url@h/d")
	pool, err := pgxpool.New(context.Background(), "postgres://alice:"+strings.ReplaceAll(dbPassword, "\\", "%5C")+"@127.0.0.1:5999/clinic?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	c, err := NewChildConn(pool, config.TLS{}, func(s string) string { return s })
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"-h", "127.0.0.1", "-p", "5999", "-U", "alice", "-d", "clinic"}; !slices.Equal(c.Args, want) {
		t.Errorf("args %q, want %q", c.Args, want)
	}
	var passfile string
	for _, kv := range c.Env {
		if strings.Contains(kv, "Canary") || strings.HasPrefix(kv, "PGPHI_") || strings.HasPrefix(kv, "PGPASSWORD=") || strings.HasPrefix(kv, "DATABASE_URL=") {
			t.Errorf("the child's environment holds %q", kv)
		}
		if v, ok := strings.CutPrefix(kv, "PGPASSFILE="); ok {
			passfile = v
		}
	}
	if !slices.Contains(c.Env, "PGSSLMODE=disable") {
		t.Errorf("no PGSSLMODE in %q", c.Env)
	}
	fi, err := os.Stat(passfile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file %q: %v %v", passfile, fi, err)
	}
	data, _ := os.ReadFile(passfile)
	if string(data) != "*:*:*:*:Canary-dbpass\\:with\\\\colon\n" {
		t.Errorf("password file holds %q", data)
	}
	c.Close()
	if _, err := os.Stat(passfile); !os.IsNotExist(err) {
		t.Error("Close left the password file")
	}
}
