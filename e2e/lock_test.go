package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestApplyBehindALockFailsInsteadOfWaiting holds an ACCESS EXCLUSIVE lock on
// the table, which blocks even reads, while apply starts: apply must give up
// within its lock_timeout and retries with a clear message and exit 1 (not
// wait without end, not print a stack), and succeed once the lock is gone.
func TestApplyBehindALockFailsInsteadOfWaiting(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
environment: test
apply: { batch_size: 100, lock_timeout: 200ms, ddl_retries: 2 }
tables:
  patient:
    columns:
      name: { class: pii }
`)
	f.exec(`CREATE TABLE patient (id bigint PRIMARY KEY, name text);
		INSERT INTO patient SELECT g, 'name ' || g FROM generate_series(1, 500) g;
		ANALYZE patient;`)
	f.mustRun("keys", "init")

	ctx := context.Background()
	holder, err := pgx.Connect(ctx, f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE patient IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := f.run("apply", "--reason", "lock test")
	took := time.Since(start)
	if r.code != 1 || !strings.Contains(r.stderr, "lock") {
		t.Fatalf("apply behind an ACCESS EXCLUSIVE lock: want exit 1 naming the lock, got %s", r)
	}
	if took > 45*time.Second {
		t.Fatalf("apply took %s to give up behind the lock", took)
	}
	assertNoStackTrace(t, r.args, r.stdout+r.stderr)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	f.mustRun("apply", "--reason", "lock test")
	f.verifyOK(500)
}
