package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// migrate up and down with --metrics-addr: migrations done and planned,
// statements, the version, lock-timeout retries behind a reader, and no
// literal of a migration file in any scrape.
func TestMetricsDuringMigrate(t *testing.T) {
	t.Parallel()
	const canary = "CanaryMetricLiteral5521"
	f := newFixture(t, complYAML("environment: test\n", ""))
	complCreatePatient(f, 5, 0)
	dir := filepath.Join(f.dir, "migrations")
	os.MkdirAll(dir, 0o755)
	for n, s := range map[string]string{
		"001_visit.up.sql":        "CREATE TABLE visit (id bigint PRIMARY KEY, note text);\nINSERT INTO visit VALUES (1, '" + canary + "');\n",
		"001_visit.down.sql":      "DROP TABLE visit;\n",
		"002_visit_kind.up.sql":   "SELECT pg_sleep(0.5);\nALTER TABLE visit ADD COLUMN kind int;\n",
		"002_visit_kind.down.sql": "ALTER TABLE visit DROP COLUMN kind;\n",
	} {
		os.WriteFile(filepath.Join(dir, n), []byte(s), 0o644)
	}
	complExpect(t, f.run("migrate", "--dir", dir, "hash"), 0)
	run := runScraped(t, f, "migrate", "--dir", dir, "up", "--reason", "metrics")
	expectMetrics(t, "migrate up", run.final, []expected{
		{"pgphi_migrations_planned", nil, 2},
		{"pgphi_migrations_done", nil, 2},
		{"pgphi_migration_version", nil, 2},
		{"pgphi_migration_statements_total", nil, 4},
		{"pgphi_lock_retries_total", nil, 0},
		{"pgphi_run_finished", map[string]string{"result": "success"}, 1},
		{"pgphi_audit_records_total", map[string]string{"event": "success"}, 1},
	})
	if v, ok := metricValue(run.final, "pgphi_migration_runner_lock_wait_seconds", nil); !ok || v < 0 || v > 5 {
		t.Errorf("pgphi_migration_runner_lock_wait_seconds = %v (%v)", v, ok)
	}
	if v, ok := metricValue(run.final, "pgphi_info", map[string]string{"command": "migrate"}); !ok || v != 1 {
		t.Errorf("pgphi_info{command=migrate} = %v (%v)", v, ok)
	}
	runs := []scrapedRun{run}

	// down behind a reader: the DROP COLUMN waits at most its lock
	// timeout, retries, and the retries are counted.
	c := f.conn()
	lctx, lcancel := context.WithTimeout(context.Background(), time.Minute)
	defer lcancel()
	tx, err := c.Begin(lctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(lctx, "LOCK TABLE visit IN ACCESS SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(1500 * time.Millisecond)
		tx.Rollback(lctx)
	}()
	run = runScraped(t, f, "migrate", "--dir", dir, "--lock-timeout", "200ms", "down", "--steps", "1", "--reason", "metrics")
	<-released
	runs = append(runs, run)
	expectMetrics(t, "migrate down", run.final, []expected{
		{"pgphi_migrations_planned", nil, 1},
		{"pgphi_migrations_done", nil, 1},
		{"pgphi_migration_version", nil, 1},
		{"pgphi_migration_statements_total", nil, 1},
	})
	if v, _ := metricValue(run.final, "pgphi_lock_retries_total", nil); v < 1 {
		t.Errorf("down behind a lock: pgphi_lock_retries_total = %v, want at least 1\n%s", v, run.stderr)
	}
	if v, _ := metricValue(run.final, "pgphi_lock_wait_seconds_total", nil); v < 0.2 {
		t.Errorf("down behind a lock: pgphi_lock_wait_seconds_total = %v, want at least the lock timeout", v)
	}
	for _, o := range runs {
		for _, b := range append(o.bodies, o.stdout, o.stderr) {
			if strings.Contains(b, canary) {
				t.Fatalf("a literal of a migration file appeared in a scrape or in the output:\n%s", b)
			}
		}
		for _, b := range o.bodies {
			if strings.Contains(b, "visit") {
				t.Fatalf("a migration's or a table's name appeared in a scrape:\n%s", b)
			}
		}
	}
}
