package migrate

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/state"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// setup returns a fresh database with pgphi's schema and its roles, the
// actors, and a pool connected as the dba actor (not a superuser).
func setup(t *testing.T) (*pgtest.Actors, *pgxpool.Pool) {
	t.Helper()
	a, pool, _ := setupSuper(t)
	return a, pool
}

// setupSuper is setup that also returns the superuser's URL.
func setupSuper(t *testing.T) (*pgtest.Actors, *pgxpool.Pool, string) {
	t.Helper()
	ctx := testContext(t)
	u := pgtest.NewDatabase(t)
	su, err := dbconn.Open(ctx, u, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(su.Close)
	conn, err := su.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = state.Ensure(ctx, conn)
	conn.Release()
	if err != nil {
		t.Fatal(err)
	}
	a := pgtest.NewActors(t, u)
	if _, err := policy.InitRoles(ctx, su, policy.DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	pool, err := dbconn.Open(ctx, a.URL(a.DBA), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return a, pool, u
}

// writeDir writes files (name -> SQL) into a new directory with a sum file.
func writeDir(t *testing.T, files map[string]string) *Dir {
	t.Helper()
	dir := t.TempDir()
	for n, s := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteSum(); err != nil {
		t.Fatal(err)
	}
	return d
}

func reread(t *testing.T, d *Dir) *Dir {
	t.Helper()
	n, err := ReadDir(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func open(t *testing.T, ctx context.Context, pool *pgxpool.Pool, d *Dir, opt Options) *Runner {
	t.Helper()
	if opt.Logf == nil {
		opt.Logf = t.Logf
	}
	opt.Actor = "tester"
	r, err := Open(ctx, pool, d, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

// felicity is a small history with every kind of step the runner treats
// differently: plain DDL, an index built concurrently, an enum value used in
// the same file, a data backfill and a foreign key NOT VALID + VALIDATE.
var felicity = map[string]string{
	"001_patients.up.sql":   "CREATE TABLE patients (id bigint PRIMARY KEY, last_name text NOT NULL, status text);\n",
	"001_patients.down.sql": "DROP TABLE patients;\n",
	"002_status.up.sql":     "CREATE TYPE visit_status AS ENUM ('open');\nCREATE TABLE visits (id bigint PRIMARY KEY, patient_id bigint, status visit_status);\n",
	"002_status.down.sql":   "DROP TABLE visits;\nDROP TYPE visit_status;\n",
	"003_index.up.sql":      "SET lock_timeout = '2s';\nCREATE INDEX CONCURRENTLY visits_patient_idx ON visits (patient_id);\n",
	"003_index.down.sql":    "DROP INDEX CONCURRENTLY visits_patient_idx;\n",
	"004_enum.up.sql":       "ALTER TYPE visit_status ADD VALUE 'closed';\nUPDATE visits SET status = 'closed' WHERE status = 'open';\n",
	"005_backfill.up.sql":   "INSERT INTO patients SELECT g, 'n' || g, NULL FROM generate_series(1, 20) g;\nUPDATE patients SET status = 'active';\n",
	"005_backfill.down.sql": "DELETE FROM patients;\n",
	"006_fk.up.sql":         "ALTER TABLE visits ADD CONSTRAINT visits_patient_fk FOREIGN KEY (patient_id) REFERENCES patients (id) NOT VALID;\nALTER TABLE visits VALIDATE CONSTRAINT visits_patient_fk;\n",
	"006_fk.down.sql":       "ALTER TABLE visits DROP CONSTRAINT visits_patient_fk;\n",
	"004_enum.down.sql":     "SELECT 1;\n",
}

func states(t *testing.T, r *Runner) map[string]string {
	out := map[string]string{}
	for _, h := range r.History() {
		out[h.Name] = h.State
	}
	return out
}

func TestUpDownUpAsTheDBA(t *testing.T) {
	ctx := testContext(t)
	a, pool := setup(t)
	d := writeDir(t, felicity)
	r := open(t, ctx, pool, d, Options{})
	res, err := r.Up(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Migrations) != 3 {
		t.Fatalf("applied %d migrations up to 3, want 3", len(res.Migrations))
	}
	if res, err = r.Up(ctx, -1); err != nil {
		t.Fatal(err)
	}
	if got := res.Rows(); got != 40 {
		t.Errorf("rows affected = %d, want 40 (20 inserted, 20 updated)", got)
	}
	for name, st := range states(t, r) {
		if st != "applied" {
			t.Errorf("%s: %s, want applied", name, st)
		}
	}
	var h Record
	for _, x := range r.History() {
		if x.Name == "003_index" {
			h = x
		}
	}
	if h.Transactional || h.StatementsDone != 2 || h.AppliedByRole != a.DBA || h.AppliedByActor != "tester" || h.DurationMS == nil {
		t.Errorf("history of 003_index = %+v", h)
	}
	// What reports read, through any connection a reader has.
	if rec, err := HistoryOf(ctx, a.Connect(t, a.AuditOfficer), "005_backfill"); err != nil || rec == nil || rec.State != "applied" || rec.RowsAffected != 40 || rec.StatementsTotal != 2 {
		t.Errorf("HistoryOf(005_backfill) as the audit officer = %+v, %v", rec, err)
	}
	// 004 uses its new enum value: it ran outside a transaction.
	f, _ := Parse("004", []byte(felicity["004_enum.up.sql"]))
	if !f.NonTx() {
		t.Error("ALTER TYPE ADD VALUE used in the same file should run outside a transaction")
	}
	if _, err := r.Down(ctx, 0, 2); err != nil {
		t.Fatal(err)
	}
	st := states(t, r)
	if st["006_fk"] != "reverted" || st["005_backfill"] != "reverted" || st["004_enum"] != "applied" {
		t.Fatalf("after down --steps 2: %v", st)
	}
	if _, err := r.Down(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_class WHERE relname IN ('patients', 'visits')").Scan(&n); err != nil || n != 0 {
		t.Fatalf("after down to 0: %d tables left (%v)", n, err)
	}
	if _, err := r.Up(ctx, -1); err != nil {
		t.Fatal(err)
	}
	for name, st := range states(t, r) {
		if st != "applied" {
			t.Errorf("after up again: %s: %s", name, st)
		}
	}
	if bad, err := InvalidIndexes(ctx, r.lock.conn, d, r.History()); err != nil || len(bad) > 0 {
		t.Errorf("invalid indexes %v (%v)", bad, err)
	}
	if err := Check(d, r.History()); err != nil {
		t.Error(err)
	}
}

func TestSumFileRefusesEditReorderInsertRemove(t *testing.T) {
	base := map[string]string{
		"001_a.up.sql": "CREATE TABLE a (id int);\n",
		"005_b.up.sql": "CREATE TABLE b (id int);\n",
		"010_c.up.sql": "CREATE TABLE c (id int);\n",
	}
	cases := []struct {
		name   string
		change func(dir string)
		want   string
	}{
		{"edit", func(dir string) {
			os.WriteFile(filepath.Join(dir, "005_b.up.sql"), []byte("CREATE TABLE b (id bigint);\n"), 0o644)
		}, "005_b.up.sql was edited"},
		{"reorder", func(dir string) {
			os.Rename(filepath.Join(dir, "005_b.up.sql"), filepath.Join(dir, "011_b.up.sql"))
		}, "005_b.up.sql is in pgphi.sum but not in the directory"},
		{"insert", func(dir string) {
			os.WriteFile(filepath.Join(dir, "003_x.up.sql"), []byte("SELECT 1;\n"), 0o644)
		}, "003_x.up.sql is out of its recorded order (inserted before 005_b.up.sql"},
		{"append", func(dir string) {
			os.WriteFile(filepath.Join(dir, "012_x.up.sql"), []byte("SELECT 1;\n"), 0o644)
		}, "012_x.up.sql is not in pgphi.sum"},
		{"remove", func(dir string) { os.Remove(filepath.Join(dir, "010_c.up.sql")) }, "010_c.up.sql is in pgphi.sum but not in the directory"},
		{"sum edited", func(dir string) {
			p := filepath.Join(dir, SumFile)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), "h1:", "h1:A", 2)), 0o644)
		}, "pgphi.sum was edited by hand"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := writeDir(t, base)
			if err := d.CheckSum(); err != nil {
				t.Fatalf("fresh sum: %v", err)
			}
			c.change(d.Path)
			err := reread(t, d).CheckSum()
			if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrTampered naming %q", err, c.want)
			}
		})
	}
}

func TestAppliedFileEditedIsRefused(t *testing.T) {
	ctx := testContext(t)
	_, pool := setup(t)
	d := writeDir(t, map[string]string{"001_a.up.sql": "CREATE TABLE a (id int);\n", "005_b.up.sql": "CREATE TABLE b (id int);\n"})
	r := open(t, ctx, pool, d, Options{})
	if _, err := r.Up(ctx, 1); err != nil {
		t.Fatal(err)
	}
	r.Close(ctx)
	// Edited and re-summed: the sum file agrees, the history does not.
	os.WriteFile(filepath.Join(d.Path, "001_a.up.sql"), []byte("CREATE TABLE a (id bigint);\n"), 0o644)
	d = reread(t, d)
	if err := d.WriteSum(); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, pool, d, Options{Logf: t.Logf})
	if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "001_a.up.sql was edited after it was applied") {
		t.Fatalf("got %v", err)
	}
	// A file inserted behind the history is refused too.
	os.WriteFile(filepath.Join(d.Path, "001_a.up.sql"), []byte("CREATE TABLE a (id int);\n"), 0o644)
	d = reread(t, d)
	d.WriteSum()
	r = open(t, ctx, pool, d, Options{})
	if _, err := r.Up(ctx, -1); err != nil {
		t.Fatal(err)
	}
	r.Close(ctx)
	os.WriteFile(filepath.Join(d.Path, "003_late.up.sql"), []byte("SELECT 1;\n"), 0o644)
	d = reread(t, d)
	d.WriteSum()
	if _, err := Open(ctx, pool, d, Options{Logf: t.Logf}); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "003_late.up.sql is pending but older") {
		t.Fatalf("got %v", err)
	}
}

func TestConcurrentIndexFailureResumesAtTheFailedStatement(t *testing.T) {
	ctx := testContext(t)
	_, pool := setup(t)
	up := "CREATE TABLE t (id int PRIMARY KEY, code int);\n" +
		"INSERT INTO t VALUES (1, 7), (2, 7), (3, 8);\n" +
		"CREATE UNIQUE INDEX CONCURRENTLY t_code_key ON t (code);\n" +
		"CREATE INDEX CONCURRENTLY t_id_code_idx ON t (id, code);\n"
	d := writeDir(t, map[string]string{"001_t.up.sql": up})
	r := open(t, ctx, pool, d, Options{})
	_, err := r.Up(ctx, -1)
	var me *MigrationError
	if !errors.As(err, &me) || me.Statement != 3 || me.Line != 3 {
		t.Fatalf("got %v, want a failure of statement 3 at line 3", err)
	}
	h := r.History()[0]
	if h.State != "failed" || h.StatementsDone != 2 || h.ErrorClass != "SQLSTATE 23505" || h.FailedStatement == nil || *h.FailedStatement != 3 {
		t.Fatalf("history = %+v", h)
	}
	if strings.Contains(h.ErrorClass, "7") && h.ErrorClass != "SQLSTATE 23505" {
		t.Fatal("a value reached the history")
	}
	var valid bool
	if err := pool.QueryRow(ctx, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.t_code_key'::regclass").Scan(&valid); err != nil || valid {
		t.Fatalf("the failed build should leave an INVALID index: valid=%v %v", valid, err)
	}
	r.Close(ctx)
	// The operator fixes the data; the statements done are not run again
	// (CREATE TABLE would fail), the INVALID index is dropped and built.
	if _, err := pool.Exec(ctx, "DELETE FROM public.t WHERE id = 2"); err != nil {
		t.Fatal(err)
	}
	r = open(t, ctx, pool, d, Options{})
	res, err := r.Up(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	if m := res.Migrations[0]; m.Resumed != 2 || len(m.Rebuilt) != 1 || m.Rebuilt[0] != `"t_code_key"` {
		t.Fatalf("result = %+v", m)
	}
	if err := pool.QueryRow(ctx, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.t_code_key'::regclass").Scan(&valid); err != nil || !valid {
		t.Fatalf("rebuilt index valid=%v %v", valid, err)
	}
	if h := r.History()[0]; h.State != "applied" || h.StatementsDone != 4 || h.RowsAffected != 3 {
		t.Fatalf("history = %+v", h)
	}
}

func TestResumeRefusesChangedDoneStatements(t *testing.T) {
	ctx := testContext(t)
	_, pool := setup(t)
	d := writeDir(t, map[string]string{"001_t.up.sql": "CREATE TABLE t (code int);\nINSERT INTO t VALUES (1), (1);\nCREATE UNIQUE INDEX CONCURRENTLY t_code_key ON t (code);\n"})
	r := open(t, ctx, pool, d, Options{})
	if _, err := r.Up(ctx, -1); err == nil {
		t.Fatal("want a failure")
	}
	r.Close(ctx)
	// A statement that already ran is changed: refused, naming the file.
	os.WriteFile(filepath.Join(d.Path, "001_t.up.sql"), []byte("CREATE TABLE t (code bigint);\nINSERT INTO t VALUES (1), (1);\nCREATE UNIQUE INDEX CONCURRENTLY t_code_key ON t (code);\n"), 0o644)
	d = reread(t, d)
	d.WriteSum()
	r = open(t, ctx, pool, d, Options{})
	if _, err := r.Up(ctx, -1); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "001_t.up.sql") {
		t.Fatalf("got %v", err)
	}
}

func TestSecondRunnerWaitsThenNamesTheHolder(t *testing.T) {
	ctx := testContext(t)
	_, pool := setup(t)
	d := writeDir(t, map[string]string{"001_a.up.sql": "CREATE TABLE a (id int);\n"})
	first := open(t, ctx, pool, d, Options{})
	start := time.Now()
	_, err := Open(ctx, pool, d, Options{LockWait: 700 * time.Millisecond, Logf: t.Logf})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "application_name pgphi migrate") || !strings.Contains(err.Error(), "pid ") || !strings.Contains(err.Error(), "started 20") {
		t.Fatalf("got %v", err)
	}
	if w := time.Since(start); w < 700*time.Millisecond {
		t.Fatalf("gave up after %s, before --lock-wait", w)
	}
	// The second waits while the first applies, then finds nothing to do.
	done := make(chan error, 1)
	go func() {
		second, err := Open(ctx, pool, d, Options{LockWait: 30 * time.Second, Logf: t.Logf})
		if err != nil {
			done <- err
			return
		}
		defer second.Close(ctx)
		res, err := second.Up(ctx, -1)
		if err == nil && len(res.Migrations) != 0 {
			err = errors.New("the second runner applied something")
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := first.Up(ctx, -1); err != nil {
		t.Fatal(err)
	}
	first.Close(ctx)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestBaselineImportsGolangMigrateAndFlyway(t *testing.T) {
	ctx := testContext(t)
	files := map[string]string{
		"001_a.up.sql": "CREATE TABLE a (id int);\n", "002_b.up.sql": "CREATE TABLE b (id int);\n", "003_c.up.sql": "CREATE TABLE c (id int);\n",
	}
	t.Run("golang-migrate", func(t *testing.T) {
		_, pool := setup(t)
		d := writeDir(t, files)
		mustExec(t, pool, "CREATE TABLE a (id int); CREATE TABLE b (id int); CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (2, true)")
		r := open(t, ctx, pool, d, Options{})
		if _, err := r.Baseline(ctx, 2); !errors.Is(err, ErrForeignHistory) || !strings.Contains(err.Error(), "dirty") {
			t.Fatalf("dirty: got %v", err)
		}
		mustExec(t, pool, "UPDATE schema_migrations SET dirty = false")
		if _, err := r.Baseline(ctx, 3); !errors.Is(err, ErrForeignHistory) {
			t.Fatalf("disagreeing version: got %v", err)
		}
		got, err := r.Baseline(ctx, 2)
		if err != nil || len(got) != 2 {
			t.Fatalf("baseline: %v %v", got, err)
		}
		if h := r.History(); h[0].Source != "golang-migrate" || h[1].State != "baseline" {
			t.Fatalf("history %+v", h)
		}
		res, err := r.Up(ctx, -1)
		if err != nil || len(res.Migrations) != 1 || res.Migrations[0].Name != "003_c" {
			t.Fatalf("up after baseline: %+v %v", res, err)
		}
	})
	t.Run("flyway", func(t *testing.T) {
		_, pool := setup(t)
		d := writeDir(t, files)
		mustExec(t, pool, `CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version varchar(50), description varchar(200), type varchar(20),
			script varchar(1000), checksum int, installed_by varchar(100), installed_on timestamp DEFAULT now(), execution_time int, success boolean);
			INSERT INTO flyway_schema_history VALUES (1, '1', 'a', 'SQL', 'V1__a.sql', 1, 'x', now(), 1, true), (2, '2', 'b', 'SQL', 'V2__b.sql', 2, 'x', now(), 1, false)`)
		r := open(t, ctx, pool, d, Options{})
		if _, err := r.Baseline(ctx, 2); !errors.Is(err, ErrForeignHistory) || !strings.Contains(err.Error(), "failed") {
			t.Fatalf("failed row: got %v", err)
		}
		mustExec(t, pool, "UPDATE flyway_schema_history SET success = true")
		if got, err := r.Baseline(ctx, 2); err != nil || len(got) != 2 || r.History()[0].Source != "flyway" {
			t.Fatalf("baseline: %v %v %+v", got, err, r.History())
		}
	})
}

func TestHistoryIsWrittenOnlyThroughPgphi(t *testing.T) {
	ctx := testContext(t)
	a, pool := setup(t)
	d := writeDir(t, map[string]string{"001_a.up.sql": "CREATE TABLE a (id int);\n"})
	r := open(t, ctx, pool, d, Options{})
	if _, err := r.Up(ctx, -1); err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("0", 64)
	attacks := []string{
		"INSERT INTO pgphi.migrations (version, name, sha256, state, transactional, statements_total, started_at, applied_by_role, applied_by_actor) VALUES (2, '002_x', '" + sha + "', 'applied', true, 0, now(), 'x', 'x')",
		"UPDATE pgphi.migrations SET sha256 = '" + sha + "'",
		"DELETE FROM pgphi.migrations",
		"SELECT pgphi.migration_baseline(2, '002_x', '" + sha + "', 'baseline', 'x')",
		"SELECT pgphi.migration_begin(2, '002_x', '" + sha + "', true, 0, 'x', '{}')",
		"SELECT pgphi.migration_revert(1)",
		"SELECT pgphi.migration_finish(1, 'failed', 'error', 1, NULL, NULL)",
	}
	for _, role := range []string{a.AppWriter, a.AppOwner, a.Outsider, a.HealthcareAdmin, a.AuditOfficer} {
		c := a.Connect(t, role)
		for _, sql := range attacks {
			if _, err := c.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("%s: %s: %v (want permission denied)", role, sql, err)
			}
		}
	}
	// The dba's own direct writes are refused by the function's checks too:
	// an applied migration cannot be begun again.
	dba := a.Connect(t, a.DBA)
	if _, err := dba.Exec(ctx, "SELECT pgphi.migration_begin(1, '001_a', '"+sha+"', true, 0, 'x', '{}')"); err == nil {
		t.Error("an applied migration was begun again")
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pgphi.migrations WHERE state = 'applied' AND sha256 <> $1", sha).Scan(&n); err != nil || n != 1 {
		t.Fatalf("history changed: %d rows (%v)", n, err)
	}
}

// mustExec runs sql (several statements allowed) in the application's
// search path.
func mustExec(t *testing.T, pool *pgxpool.Pool, sql string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), "SET search_path = \"$user\", public; "+sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
}

func TestDryRunLeavesTheCatalogIdentical(t *testing.T) {
	pgDump, err := exec.LookPath("pg_dump")
	if err != nil {
		t.Skip("pg_dump is not installed")
	}
	ctx := testContext(t)
	a, pool := setup(t)
	d := writeDir(t, felicity)
	r := open(t, ctx, pool, d, Options{})
	if _, err := r.Up(ctx, 2); err != nil {
		t.Fatal(err)
	}
	dump := func() string {
		out, err := exec.CommandContext(ctx, pgDump, "--schema-only", "--no-owner", a.URL(a.DBA)).Output()
		if err != nil {
			t.Fatalf("pg_dump: %v", err)
		}
		// pg_dump's \restrict key is random per dump.
		var keep []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "\\restrict") && !strings.HasPrefix(l, "\\unrestrict") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	before := dump()
	res, err := r.DryRun(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Skipped) != 3 || !strings.HasPrefix(res.Skipped[0], "003_index.up.sql:2") || !strings.Contains(res.Skipped[2], "004_enum.up.sql:2 (failed with SQLSTATE 22P02 after a statement not tried") {
		t.Errorf("skipped %v, want the concurrent index and the enum value used in its file", res.Skipped)
	}
	if after := dump(); after != before {
		t.Fatalf("the dry run changed the catalog:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if h := r.History(); len(h) != 2 {
		t.Fatalf("the dry run wrote history: %+v", h)
	}
}

// A realistic history: 21 migrations of the Felicity LIMS schema (tables,
// indexes built concurrently, an enum value, a data backfill, foreign keys
// and a CHECK added NOT VALID then validated), applied, rolled all the way
// down and up again to the same catalog.
func TestFelicityHistoryUpDownUp(t *testing.T) {
	pgDump, err := exec.LookPath("pg_dump")
	if err != nil {
		t.Skip("pg_dump is not installed")
	}
	ctx := testContext(t)
	a, pool, su := setupSuper(t)
	src, _ := filepath.Glob("testdata/felicity/*.sql")
	files := map[string]string{}
	for _, p := range src {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = string(b)
	}
	d := writeDir(t, files)
	if len(d.Migrations) < 20 {
		t.Fatalf("%d migrations, want at least 20", len(d.Migrations))
	}
	dump := func() string {
		out, err := exec.CommandContext(ctx, pgDump, "--schema-only", "--no-owner", "--exclude-schema=pgphi", a.URL(a.DBA)).Output()
		if err != nil {
			t.Fatalf("pg_dump: %v", err)
		}
		var keep []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "\\restrict") && !strings.HasPrefix(l, "\\unrestrict") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	r := open(t, ctx, pool, d, Options{})
	res, err := r.Up(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Migrations) != len(d.Migrations) {
		t.Fatalf("applied %d of %d", len(res.Migrations), len(d.Migrations))
	}
	first := dump()
	if _, err := r.Down(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = 'public'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("after down to 0: %d relations left in public (%v)", n, err)
	}
	if _, err := r.Up(ctx, -1); err != nil {
		t.Fatal(err)
	}
	if again := dump(); again != first {
		t.Fatalf("up, down, up does not give the same schema:\nfirst:\n%s\nagain:\n%s", first, again)
	}
	if bad, err := InvalidIndexes(ctx, pool, d, r.History()); err != nil || len(bad) > 0 {
		t.Fatalf("invalid indexes %v (%v)", bad, err)
	}
	if err := Check(d, r.History()); err != nil {
		t.Fatal(err)
	}
	// An index an applied migration built turns INVALID (as a crashed
	// REINDEX CONCURRENTLY leaves it): found through pgphi's own search
	// path, and rebuilt by the next up.
	sc := pgtest.Connect(t, su)
	if _, err := sc.Exec(ctx, "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.sample_patient_idx'::regclass"); err != nil {
		t.Fatal(err)
	}
	bad, err := InvalidIndexes(ctx, pool, d, r.History())
	if err != nil || len(bad) != 1 || bad[0] != `"sample_patient_idx"` {
		t.Fatalf("invalid indexes %v (%v), want sample_patient_idx", bad, err)
	}
	if _, err := r.Up(ctx, -1); err != nil {
		t.Fatal(err)
	}
	if bad, err := InvalidIndexes(ctx, pool, d, r.History()); err != nil || len(bad) > 0 {
		t.Fatalf("after up: invalid indexes %v (%v)", bad, err)
	}
}

// DDL behind a session holding the table: it gives up after the lock
// timeout and retries with backoff; it succeeds once the lock is released,
// and fails with SQLSTATE 55P03 recorded when the retries run out.
func TestLockTimeoutRetriesThenFails(t *testing.T) {
	ctx := testContext(t)
	a, pool := setup(t)
	d := writeDir(t, map[string]string{
		"001_t.up.sql": "CREATE TABLE t (id int);\n",
		"002_c.up.sql": "ALTER TABLE t ADD COLUMN c int;\n",
		"003_d.up.sql": "ALTER TABLE t ADD COLUMN d int;\n",
	})
	r := open(t, ctx, pool, d, Options{LockTimeout: 100 * time.Millisecond, Retries: 3})
	if _, err := r.Up(ctx, 1); err != nil {
		t.Fatal(err)
	}
	holder := a.Connect(t, a.DBA)
	hold := func(d time.Duration) {
		tx, err := holder.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT count(*) FROM public.t"); err != nil {
			t.Fatal(err)
		}
		go func() { time.Sleep(d); tx.Rollback(context.Background()) }()
	}
	hold(500 * time.Millisecond)
	if _, err := r.Up(ctx, 2); err != nil {
		t.Fatalf("retries did not outlast a 500ms lock: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	hold(30 * time.Second)
	_, err := r.Up(ctx, 3)
	if !isLockTimeout(err) {
		t.Fatalf("got %v, want a lock timeout after the retries", err)
	}
	if h := r.History()[2]; h.State != "failed" || h.ErrorClass != "SQLSTATE 55P03" {
		t.Fatalf("history %+v", h)
	}
}

// A SET in one migration file does not carry into the next: each file
// starts in the application's session, with the runner's lock timeout.
func TestSettingsDoNotLeakBetweenMigrations(t *testing.T) {
	ctx := testContext(t)
	_, pool := setup(t)
	check := "DO $$ BEGIN IF current_setting('lock_timeout') = '0' THEN RAISE EXCEPTION 'lock_timeout leaked'; END IF; END $$;\n"
	d := writeDir(t, map[string]string{
		"001_a.up.sql": "CREATE SCHEMA other;\nSET search_path = other;\nSET lock_timeout = 0;\nCREATE TABLE x (id int);\n",
		"002_b.up.sql": check + "CREATE TABLE y (id int);\n",
		"003_c.up.sql": "CREATE INDEX CONCURRENTLY y_id_idx ON y (id);\n" + check,
	})
	r := open(t, ctx, pool, d, Options{})
	if _, err := r.Up(ctx, -1); err != nil {
		t.Fatal(err)
	}
	var schema string
	if err := pool.QueryRow(ctx, "SELECT relnamespace::regnamespace::text FROM pg_class WHERE relname = 'y'").Scan(&schema); err != nil || schema != "public" {
		t.Fatalf("002 created y in %q (%v): the previous file's search_path leaked", schema, err)
	}
}
