// Package pgtest is the test harness: one throwaway cluster per test binary,
// one fresh database per test.
//
// Use it from a package's tests:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		conn := pgtest.Connect(t, pgtest.NewDatabase(t))
//		...
//	}
//
// Set PGPHI_TEST_DATABASE_URL to a superuser URL of an existing server to
// run against it instead of starting a cluster.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/pgcluster"
)

// EnvDatabaseURL names the environment variable holding a superuser URL
// (postgres://...) of an existing server to use instead of a throwaway
// cluster.
const EnvDatabaseURL = "PGPHI_TEST_DATABASE_URL"

var (
	cluster  *pgcluster.Cluster
	adminURL string // superuser URL of the maintenance database; set by Main
)

// Main starts a cluster (Fast: true) once for the test binary, runs the
// tests, stops the cluster, and exits with m.Run's code. If
// PGPHI_TEST_DATABASE_URL is set (a superuser URL of an existing server), it
// uses that server instead and starts nothing.
func Main(m *testing.M) {
	os.Exit(run(m, nil))
}

// MainSetup is Main with setup run once the server is up, before the tests
// and examples (which have no *testing.T: setup may make their database with
// CreateDatabase); the returned function runs after them.
func MainSetup(m *testing.M, setup func() (teardown func(), err error)) {
	os.Exit(run(m, setup))
}

func run(m *testing.M, setup func() (func(), error)) int {
	runTests := m.Run
	if setup != nil {
		runTests = func() int {
			teardown, err := setup()
			if err != nil {
				fmt.Fprintf(os.Stderr, "pgtest: setup: %v\n", err)
				return 1
			}
			defer teardown()
			return m.Run()
		}
	}
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		if err := checkURL(u); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: $%s: %v\n", EnvDatabaseURL, err)
			return 1
		}
		adminURL = u
		return runTests()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	c, err := pgcluster.Start(ctx, pgcluster.Options{Fast: true})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: starting a throwaway PostgreSQL cluster: %v\n"+
			"(or set %s to a superuser URL of an existing server)\n", err, EnvDatabaseURL)
		return 1
	}
	cluster = c
	adminURL = c.URL("postgres")

	// Interrupted (Ctrl-C, CI cancellation): stop the cluster before dying.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "pgtest: %v: stopping PostgreSQL cluster\n", sig)
		_ = c.Stop()
		os.Exit(1)
	}()

	code := runTests()
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: stopping PostgreSQL cluster: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// lazy is set by MainLazy: the cluster starts when a test first needs it.
var lazy struct {
	sync.Mutex
	on      bool
	started bool
	err     error
}

// MainLazy is Main for a package where few tests need a server: the cluster
// starts when a test first calls NewDatabase, and is stopped after the tests.
func MainLazy(m *testing.M) {
	if os.Getenv(EnvDatabaseURL) != "" {
		Main(m)
		return
	}
	lazy.on = true
	code := m.Run()
	lazy.Lock()
	if cluster != nil {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stopping PostgreSQL cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	lazy.Unlock()
	os.Exit(code)
}

func startLazy(t testing.TB) string {
	lazy.Lock()
	defer lazy.Unlock()
	if !lazy.started {
		lazy.started = true
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		c, err := pgcluster.Start(ctx, pgcluster.Options{Fast: true})
		cancel()
		if err != nil {
			lazy.err = err
		} else {
			cluster = c
			adminURL = c.URL("postgres")
		}
	}
	if lazy.err != nil {
		t.Fatalf("pgtest: starting a throwaway PostgreSQL cluster: %v (or set %s to a superuser URL of an existing server)", lazy.err, EnvDatabaseURL)
	}
	return adminURL
}

// Cluster returns the running cluster (nil when using
// PGPHI_TEST_DATABASE_URL or before Main).
func Cluster() *pgcluster.Cluster { return cluster }

// admin returns the superuser URL, failing t when no server is configured.
func admin(t testing.TB) string {
	t.Helper()
	if lazy.on {
		return startLazy(t)
	}
	if adminURL != "" {
		return adminURL
	}
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		if err := checkURL(u); err != nil {
			t.Fatalf("pgtest: $%s: %v", EnvDatabaseURL, err)
		}
		return u
	}
	t.Fatalf("pgtest: no PostgreSQL server: add `func TestMain(m *testing.M) { pgtest.Main(m) }` to this package's tests, or set %s", EnvDatabaseURL)
	return ""
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("want a postgres:// URL, got %q", s)
	}
	return nil
}

// CreateDatabase creates a fresh database named after name, outside any
// test, and returns its URL and a function that drops it.
func CreateDatabase(name string) (string, func(), error) {
	if adminURL == "" {
		return "", nil, fmt.Errorf("pgtest: no PostgreSQL server (use MainSetup)")
	}
	db := databaseName(name)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{db}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident+" TEMPLATE template0"); err != nil {
		return "", nil, err
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if conn, err := pgx.Connect(ctx, adminURL); err == nil {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)")
			conn.Close(ctx)
		}
	}
	u, _ := url.Parse(adminURL)
	u.Path = "/" + db
	u.RawPath = ""
	return u.String(), drop, nil
}

// NewDatabase creates a fresh database with a unique name for this test
// (CREATE DATABASE ... TEMPLATE template0), registers t.Cleanup to drop it
// (WITH (FORCE)), and returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	adm := admin(t)
	name := databaseName(t.Name())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, adm)
	if err != nil {
		t.Fatalf("pgtest: connecting to the server: %v", err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident+" TEMPLATE template0"); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, adm)
		if err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})

	u, _ := url.Parse(adm) // validated by admin
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// databaseName derives a unique, valid (≤63 bytes, [a-z0-9_]) database name
// from a test name.
func databaseName(testName string) string {
	var b strings.Builder
	underscore := false
	for _, r := range strings.ToLower(testName) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			underscore = false
		} else if !underscore {
			b.WriteByte('_')
			underscore = true
		}
	}
	slug := strings.Trim(b.String(), "_")
	if len(slug) > 40 {
		slug = strings.TrimRight(slug[:40], "_")
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return "pgphi_" + slug + "_" + hex.EncodeToString(rnd[:])
}

// Connect opens a *pgx.Conn to url, registered for close at cleanup.
func Connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("pgtest: connecting to %s: %v", url, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}
