package policy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/state"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// setup returns a fresh database with pgphi's schema, its superuser URL and a
// superuser pool.
func setup(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	ctx := testContext(t)
	u := pgtest.NewDatabase(t)
	pool, err := dbconn.Open(ctx, u, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := state.Ensure(ctx, conn); err != nil {
		t.Fatal(err)
	}
	return u, pool
}

// uniqueNames returns group role names private to this test (roles are
// cluster-wide, tests run in parallel) and drops them, and the extra login
// roles, at cleanup.
func uniqueNames(t *testing.T, pool *pgxpool.Pool, logins ...string) RoleNames {
	t.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	sfx := "_" + hex.EncodeToString(rnd[:])
	names := RoleNames{}
	for _, r := range Roles() {
		names[r] = DefaultRoleNames()[r] + sfx
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var all []string
		for _, g := range names {
			all = append(all, g)
		}
		all = append(all, logins...)
		for _, r := range all {
			var exists bool
			_ = pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", r).Scan(&exists)
			if !exists {
				continue
			}
			if _, err := pool.Exec(ctx, "DROP OWNED BY "+pgx.Identifier{r}.Sanitize()); err != nil {
				t.Errorf("cleanup: drop owned by %s: %v", r, err)
			}
			if _, err := pool.Exec(ctx, "DROP ROLE "+pgx.Identifier{r}.Sanitize()); err != nil {
				t.Errorf("cleanup: drop role %s: %v", r, err)
			}
		}
	})
	return names
}

// loginName returns a login role name private to this test.
func loginName(prefix string) string {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return prefix + "_" + hex.EncodeToString(rnd[:])
}

// poolAs connects to the database of dbURL as user (trust authentication).
func poolAs(t *testing.T, dbURL, user string) *pgxpool.Pool {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	pool, err := dbconn.Open(testContext(t), u.String(), 2)
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	t.Cleanup(pool.Close)
	return pool
}
