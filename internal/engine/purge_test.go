//go:build unix

package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/dbconn"
)

// withRepackDirs makes dirs the only places pg_repack is looked for.
func withRepackDirs(t *testing.T, dirs ...string) {
	t.Helper()
	old := repackDirs
	repackDirs = func(int) []string { return dirs }
	t.Cleanup(func() { repackDirs = old })
}

func writeExec(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func plaintextColumns(t *testing.T, f *fixture) int {
	t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.patient'::regclass
		AND attname IN ('first_name', 'last_name', 'dob', 'notes', 'vitals') AND NOT attisdropped`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Without a usable pg_repack, cleanup no longer falls back to VACUUM FULL
// (which locks the table for the whole rewrite) on its own: it refuses
// before dropping anything, unless the operator said --vacuum-full.
func TestCleanupRefusesSilentVacuumFull(t *testing.T) {
	ctx := context.Background()
	withRepackDirs(t, t.TempDir()) // no pg_repack here
	f := setup(t, lifecycleDDL, lifecycleConfig)
	f.apply(t)
	f.cutOver(t)
	for _, opt := range []CleanupOptions{{}, {Purge: "auto"}, {Purge: "repack", VacuumFull: true}} {
		err := f.runner.Cleanup(ctx, f.plan.ID, opt)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "pg_repack is not installed") {
			t.Fatalf("%+v: cleanup without pg_repack: %v", opt, err)
		}
		if opt.Purge != "repack" && !strings.Contains(err.Error(), "--vacuum-full") {
			t.Errorf("the refusal does not say how to proceed: %v", err)
		}
		if n := plaintextColumns(t, f); n != 5 {
			t.Fatalf("%+v: a refused cleanup dropped plaintext columns (%d left)", opt, n)
		}
	}
	if strings.Contains(f.log.String(), "VACUUM FULL:") {
		t.Fatalf("VACUUM FULL ran:\n%s", f.log.String())
	}
	if err := f.runner.Cleanup(ctx, f.plan.ID, CleanupOptions{VacuumFull: true}); err != nil {
		t.Fatalf("cleanup --vacuum-full: %v\n%s", err, f.log.String())
	}
	if !strings.Contains(f.log.String(), "with VACUUM FULL") || plaintextColumns(t, f) != 0 {
		t.Fatalf("cleanup --vacuum-full did not purge with VACUUM FULL:\n%s", f.log.String())
	}
	if m, err := f.runner.ChoosePurge(ctx, CleanupOptions{}); err != nil || m != PurgeNone {
		t.Fatalf("after the purge: %q, %v", m, err)
	}
}

// A pg_repack planted on PATH, or one in a trusted directory that others
// could have replaced, is never run (it would receive the database password).
func TestRepackBinaryNotFromPath(t *testing.T) {
	ctx := context.Background()
	f := setup(t, lifecycleDDL, lifecycleConfig)
	evil := t.TempDir()
	marker := filepath.Join(t.TempDir(), "owned")
	writeExec(t, filepath.Join(evil, "pg_repack"), "echo owned > '"+marker+"'", 0o755)
	t.Setenv("PATH", evil+":"+os.Getenv("PATH"))
	trusted := t.TempDir()
	withRepackDirs(t, trusted)
	if bin, err := repackBinary(ctx, f.runner); err == nil {
		t.Fatalf("pg_repack taken from PATH: %s", bin)
	}

	// Variant: a writable-by-others binary in a trusted directory.
	p := filepath.Join(trusted, "pg_repack")
	writeExec(t, p, "echo owned > '"+marker+"'", 0o777)
	if _, err := repackBinary(ctx, f.runner); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("a world-writable pg_repack: %v", err)
	}
	// Variant: a binary owned by another user.
	if os.Geteuid() == 0 {
		writeExec(t, p, "echo owned > '"+marker+"'", 0o755)
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := repackBinary(ctx, f.runner); err == nil || !strings.Contains(err.Error(), "owned by another user") {
			t.Fatalf("a pg_repack owned by another user: %v", err)
		}
		os.Chown(p, 0, 0)
	}
	writeExec(t, p, "exit 0", 0o755)
	if bin, err := repackBinary(ctx, f.runner); err != nil || bin != p {
		t.Fatalf("trusted pg_repack: %q, %v", bin, err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a planted pg_repack ran")
	}
}

// pg_repack gets a minimal environment: no passphrase, PGPASSWORD or
// DATABASE_URL of pgphi's, the password in a 0600 file that is removed
// afterwards (never in argv or the environment), and the TLS settings.
func TestRepackCommandEnvironment(t *testing.T) {
	const (
		canaryPass = "Canary-passphrase-0d4b"
		canaryPG   = "Canary-pgpassword-77aa"
		dbPassword = "Canary-dbpass:with\\colon"
	)
	ctx := context.Background()
	f := setup(t, lifecycleDDL, lifecycleConfig)
	u, err := url.Parse(f.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), dbPassword) // the test cluster trusts: any password connects
	pool, err := dbconn.Open(ctx, u.String(), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	r := &Runner{Pool: pool, Config: f.cfg, Plan: f.plan, Log: f.runner.Log}
	t.Setenv("PGPHI_PASSPHRASE", canaryPass)
	t.Setenv("PGPASSWORD", canaryPG)
	t.Setenv("DATABASE_URL", "postgres://x:"+canaryPG+"@h/d")

	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	bin := filepath.Join(dir, "pg_repack")
	writeExec(t, bin, `{ echo "ARGS $*"; env; printf 'PASSFILE %s %s\n' "$(stat -c %a "$PGPASSFILE")" "$(cat "$PGPASSFILE")"; } > '`+out+`'`, 0o755)
	cmd, done, err := r.repackCommand(ctx, bin, f.plan.Tables[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	passfile := ""
	for _, kv := range cmd.Env {
		if v, ok := strings.CutPrefix(kv, "PGPASSFILE="); ok {
			passfile = v
		}
	}
	done()
	if _, err := os.Stat(passfile); passfile == "" || err == nil {
		t.Errorf("the password file %q is left behind", passfile)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, s := range []string{canaryPass, canaryPG, "PGPHI_", "PGPASSWORD", "DATABASE_URL"} {
		if strings.Contains(got, s) {
			t.Errorf("pg_repack's environment holds %q:\n%s", s, got)
		}
	}
	args, _, _ := strings.Cut(got, "\n")
	if strings.Contains(args, "Canary-dbpass") {
		t.Errorf("the password is in pg_repack's arguments: %s", args)
	}
	if !strings.Contains(got, `PASSFILE 600 *:*:*:*:Canary-dbpass\:with\\colon`) {
		t.Errorf("password file:\n%s", got)
	}
	for _, want := range []string{"PATH=/usr/bin:/bin\n", "LC_ALL=C\n", "PGSSLMODE="} {
		if !strings.Contains(got, want) {
			t.Errorf("pg_repack's environment lacks %q:\n%s", want, got)
		}
	}
}

// pgphi's TLS policy reaches pg_repack; a pin, which libpq cannot check,
// refuses pg_repack (and with it a cleanup that would purge without TLS
// protection), unless VACUUM FULL is accepted.
func TestRepackTLS(t *testing.T) {
	id := func(s string) string { return filepath.Join("/etc/pgphi", s) }
	tcp := func(tc *tls.Config) *pgconn.Config {
		return &pgconn.Config{Host: "db1.example", Port: 5432, TLSConfig: tc}
	}
	for _, tc := range []struct {
		name    string
		cc      *pgconn.Config
		conn    string
		tls     config.TLS
		want    []string
		refused bool
	}{
		{"verify-full from the config", tcp(&tls.Config{ServerName: "db1.example"}), "postgres://app@db1.example/lims",
			config.TLS{Mode: "verify-full", CA: "ca.pem", Cert: "client.pem", Key: "client.key"},
			[]string{"PGSSLMODE=verify-full", "PGSSLROOTCERT=/etc/pgphi/ca.pem", "PGSSLCERT=/etc/pgphi/client.pem", "PGSSLKEY=/etc/pgphi/client.key"}, false},
		{"verify-ca from the URL", tcp(&tls.Config{InsecureSkipVerify: true, VerifyPeerCertificate: func([][]byte, [][]*x509.Certificate) error { return nil }}),
			"postgres://app@db1.example/lims?sslmode=verify-ca&sslrootcert=/srv/ca.pem", config.TLS{},
			[]string{"PGSSLMODE=verify-ca", "PGSSLROOTCERT=/srv/ca.pem"}, false},
		{"verify-full, system roots", tcp(&tls.Config{ServerName: "db1.example"}), "host=db1.example sslmode=verify-full", config.TLS{},
			[]string{"PGSSLMODE=verify-full", "PGSSLROOTCERT=system"}, false},
		{"key=value with quotes", tcp(&tls.Config{ServerName: "db1.example"}), "host=db1.example sslmode=verify-full sslrootcert='/srv/my ca.pem'", config.TLS{},
			[]string{"PGSSLMODE=verify-full", "PGSSLROOTCERT=/srv/my ca.pem"}, false},
		{"no TLS", tcp(nil), "postgres://app@127.0.0.1/lims?sslmode=disable", config.TLS{}, []string{"PGSSLMODE=disable"}, false},
		{"unix socket", &pgconn.Config{Host: "/var/run/postgresql", Port: 5432}, "host=/var/run/postgresql", config.TLS{PinSHA256: []string{"sha256/x"}}, nil, false},
		{"pinned", tcp(&tls.Config{InsecureSkipVerify: true}), "postgres://app@db1.example/lims",
			config.TLS{Mode: "require", PinSHA256: []string{"sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}, nil, true},
		{"pinned verify-full", tcp(&tls.Config{ServerName: "db1.example"}), "postgres://app@db1.example/lims",
			config.TLS{Mode: "verify-full", CA: "ca.pem", PinSHA256: []string{"sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}, nil, true},
	} {
		env, err := repackTLSEnv(tc.cc, tc.conn, tc.tls, id)
		if tc.refused {
			if err == nil || !strings.Contains(err.Error(), "pin") {
				t.Errorf("%s: pg_repack not refused: %v %v", tc.name, env, err)
			}
			continue
		}
		if err != nil || !slices.Equal(env, tc.want) {
			t.Errorf("%s: got %q, %v; want %q", tc.name, env, err, tc.want)
		}
	}

	// Through ChoosePurge: with a trusted pg_repack present, a pinned policy
	// over TCP still refuses it, before anything is dropped.
	ctx := context.Background()
	f := setup(t, lifecycleDDL, lifecycleConfig)
	if h := f.pool.Config().ConnConfig.Host; strings.HasPrefix(h, "/") {
		t.Skipf("the test server is reached over a Unix socket (%s): no TLS policy applies", h)
	}
	dir := t.TempDir()
	writeExec(t, filepath.Join(dir, "pg_repack"), "exit 0", 0o755)
	withRepackDirs(t, dir)
	f.cfg.Database.TLS.PinSHA256 = []string{"sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
	f.apply(t)
	f.cutOver(t)
	for _, opt := range []CleanupOptions{{}, {Purge: "repack"}} {
		err := f.runner.Cleanup(ctx, f.plan.ID, opt)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "pin") {
			t.Fatalf("%+v: cleanup under a pin: %v", opt, err)
		}
		if n := plaintextColumns(t, f); n != 5 {
			t.Fatalf("a refused cleanup dropped plaintext columns (%d left)", n)
		}
	}
	if m, err := f.runner.ChoosePurge(ctx, CleanupOptions{VacuumFull: true}); err != nil || m != PurgeVacuumFull {
		t.Fatalf("under a pin with --vacuum-full: %q, %v", m, err)
	}
}
