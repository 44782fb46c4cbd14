package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgphi/pgphi/internal/audit"
)

// The command-line contract of `pgphi migrate`: exit codes, the wrapper
// (refusal of outsiders, audit records), the sum file, the runner lock.
func TestMigrateCommandLine(t *testing.T) {
	t.Parallel()
	f, a, _ := tpFixture(t, "environment: test\n")
	dir := filepath.Join(f.dir, "migrations")
	as := func(role string, args ...string) result {
		t.Helper()
		return tpAs(f, a, role, append([]string{"migrate", "--dir", dir}, args...)...)
	}
	write := func(name, sql string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(sql), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	complExpect(t, as(a.DBA, "new", "create_visit"), 0, "001_create_visit.up.sql")
	write("001_create_visit.up.sql", "CREATE TABLE visit (id bigint PRIMARY KEY, patient_id int, note text);\n")
	write("001_create_visit.down.sql", "DROP TABLE visit;\n")
	// Written but not hashed: refused, naming the file.
	complExpect(t, as(a.DBA, "up", "--reason", "release 1"), 2, "001_create_visit.up.sql was edited after the sum was written")
	complExpect(t, as(a.DBA, "hash"), 0)
	complExpect(t, as(a.DBA, "new", "visit_index"), 0, "002_visit_index.up.sql")
	write("002_visit_index.up.sql", "CREATE INDEX CONCURRENTLY visit_patient_idx ON visit (patient_id);\n")
	write("002_visit_index.down.sql", "DROP INDEX CONCURRENTLY visit_patient_idx;\n")
	complExpect(t, as(a.DBA, "hash"), 0)
	complExpect(t, as(a.DBA, "lint"), 0)

	// A role in no pgphi group is refused (exit 4) and the refusal audited;
	// so is the application's writer. Nothing ran.
	complExpect(t, as(a.Outsider, "up", "--reason", "x"), 4, "access denied")
	complExpect(t, as(a.AppWriter, "status"), 4, "access denied")
	if !tpHasRefusal(t, f, "migrate", a.Outsider) {
		t.Error("no refusal record of migrate by the outsider")
	}
	// A healthcare_admin is a pgphi member but not a dba: refused too.
	complExpect(t, as(a.HealthcareAdmin, "up", "--reason", "x"), 4, "needs role dba")
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM pg_class WHERE relname = 'visit'"); n != 0 {
		t.Fatal("a refused run created a table")
	}

	complExpect(t, as(a.DBA, "up", "--dry-run"), 0, "dry run: 001_create_visit: 1 statements", "not tried (cannot run in a transaction): 002_visit_index.up.sql:1")
	// A post_execute hook gets the migration's context.
	os.WriteFile(filepath.Join(f.dir, "hook.sh"), []byte("#!/bin/sh\ncat > \"$(dirname \"$0\")/hook.json\"\n"), 0o755)
	f.writeConfig(complYAML("environment: test\nhooks:\n  post_execute: ['hook.sh']\n", ""))
	complExpect(t, as(a.DBA, "up", "--reason", "release 1"), 0, "applied 001_create_visit", "applied 002_visit_index")
	rec := complLastRecord(t, f)
	if rec.Command != "migrate" || rec.Event != audit.EventSuccess || rec.Details["migrations"] != "001_create_visit, 002_visit_index" || rec.Reason != "release 1" || rec.PlanID == "" ||
		!strings.HasPrefix(rec.Details["m.002_visit_index"], "sha256=") || rec.Details["subcommand"] != "up" {
		t.Errorf("audit record of up: %+v", rec)
	}
	var hc struct {
		Phase, Command, Environment string
		RowsAffected                int64             `json:"rows_affected"`
		Details                     map[string]string `json:"details"`
	}
	if b, err := os.ReadFile(filepath.Join(f.dir, "hook.json")); err != nil || json.Unmarshal(b, &hc) != nil {
		t.Fatalf("the hook did not run: %v %s", err, b)
	}
	if hc.Phase != "post_execute" || hc.Command != "migrate" || hc.Environment != "test" || hc.Details["migration_name"] != "002_visit_index" || hc.Details["tables_modified"] != "public.visit" {
		t.Errorf("hook context %+v", hc)
	}
	complExpect(t, as(a.DBA, "up", "--reason", "again"), 0, "nothing to migrate")
	r := as(a.DBA, "status", "--json")
	complExpect(t, r, 0)
	var st struct {
		Migrations []struct {
			Name, State string
			History     struct {
				AppliedByRole string `json:"applied_by_role"`
			} `json:"history"`
		}
		Check string
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Migrations) != 2 || st.Migrations[1].State != "applied" || st.Migrations[0].History.AppliedByRole != a.DBA || st.Check != "ok" {
		t.Fatalf("status --json: %+v %v\n%s", st, err, r.stdout)
	}
	complExpect(t, as(a.DBA, "verify"), 0, "verified 2 migrations")

	// A lint error on a protected column: exit 1 from lint, JSON names it.
	bad := filepath.Join(f.dir, "bad.sql")
	os.WriteFile(bad, []byte("ALTER TABLE patient RENAME COLUMN last_name TO surname;\n"), 0o644)
	r = as(a.DBA, "lint", "--json", bad)
	complExpect(t, r, 1, "protected-column-changed", "renaming-column")

	// Outside production too, a migration that renames a protected column
	// is refused before it runs.
	write("003_rename.up.sql", "ALTER TABLE patient RENAME COLUMN last_name TO surname;\n")
	complExpect(t, as(a.DBA, "hash"), 0)
	complExpect(t, as(a.DBA, "up", "--reason", "rename"), 4, "protected-column-changed", "lint errors block the migration")
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attname = 'last_name'"); n != 1 {
		t.Fatal("the refused migration renamed the column")
	}
	os.Remove(filepath.Join(dir, "003_rename.up.sql"))
	complExpect(t, as(a.DBA, "hash"), 0)

	// Two runners: the second waits --lock-wait, then exits 1 naming the
	// holder.
	write("003_slow.up.sql", "SELECT pg_sleep(4);\nALTER TABLE visit ADD COLUMN kind int;\n")
	complExpect(t, as(a.DBA, "hash"), 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first, firstOut, firstErr := f.start(ctx, "migrate", "--dir", dir, "up", "--reason", "slow")
	deadline := time.Now().Add(20 * time.Second)
	// Running 003's sleep means it holds the lock (a session of it alone
	// may still be connecting or checking for a pooler). In this database:
	// other tests' runners sleep in theirs, on the same server.
	for queryInt(t, f.conn(), "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgphi migrate' AND state = 'active' AND query LIKE '%pg_sleep%'") == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	second := as(a.DBA, "up", "--reason", "second", "--lock-wait", "1s")
	firstWait := first.Wait()
	if second.code != 1 {
		t.Logf("first runner: %v\nstdout:\n%s\nstderr:\n%s", firstWait, firstOut, firstErr)
	}
	complExpect(t, second, 1, "another migration runner holds the lock", "application_name pgphi migrate")
	if firstWait != nil {
		t.Fatalf("first runner: %v\n%s", firstWait, firstErr)
	}

	// An applied file edited (and re-hashed): refused, naming it.
	write("001_create_visit.up.sql", "CREATE TABLE visit (id bigint PRIMARY KEY, patient_id int, note text, extra int);\n")
	complExpect(t, as(a.DBA, "hash"), 0)
	complExpect(t, as(a.DBA, "verify"), 2, "001_create_visit.up.sql was edited after it was applied")
	complExpect(t, as(a.DBA, "up", "--reason", "x"), 2, "001_create_visit.up.sql was edited after it was applied")
	write("001_create_visit.up.sql", "CREATE TABLE visit (id bigint PRIMARY KEY, patient_id int, note text);\n")
	complExpect(t, as(a.DBA, "hash"), 0)

	// A failing statement whose error would quote a value: the output, the
	// audit record and the history carry the SQLSTATE, never the value.
	write("004_canary.up.sql", "INSERT INTO visit (id) VALUES (1);\nINSERT INTO visit (id, patient_id) VALUES (2, 'CanaryMoreau77');\n")
	complExpect(t, as(a.DBA, "hash"), 0)
	r = as(a.DBA, "up", "--reason", "canary")
	complExpect(t, r, 1, "004_canary.up.sql:2:1: statement 2 failed", "22P02")
	if strings.Contains(r.stdout+r.stderr, "CanaryMoreau77") {
		t.Errorf("the value reached the output:\n%s", r)
	}
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM pgphi.audit_log WHERE record::text LIKE '%CanaryMoreau77%'"); n != 0 {
		t.Error("the value reached the audit trail")
	}
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM pgphi.migrations WHERE version = 4 AND state = 'failed' AND error_class = 'SQLSTATE 22P02' AND failed_statement = 2"); n != 1 {
		t.Error("the failure is not in the history")
	}
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM visit WHERE id = 1"); n != 0 {
		t.Error("a failed transactional migration left a row")
	}
	os.Remove(filepath.Join(dir, "004_canary.up.sql"))
	complExpect(t, as(a.DBA, "hash"), 0)

	write("003_slow.down.sql", "ALTER TABLE visit DROP COLUMN kind;\n")
	complExpect(t, as(a.DBA, "hash"), 0)
	complExpect(t, as(a.DBA, "down", "--reason", "roll back", "--steps", "1"), 0, "reverted 003_slow")
	complExpect(t, as(a.DBA, "down", "--reason", "roll back"), 2, "--steps")
	if !strings.Contains(as(a.DBA, "status").stdout, "pending") {
		t.Error("status does not show the reverted migration as pending")
	}
}

// SIGKILL during a transactional and during a statement-by-statement
// migration: the next up finishes correctly, resuming the second at the
// statement that was running.
func TestMigrateSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	f, a, _ := tpFixture(t, "environment: test\n")
	dir := filepath.Join(f.dir, "migrations")
	os.MkdirAll(dir, 0o755)
	files := map[string]string{
		"001_tx.up.sql":    "CREATE TABLE visit (id bigint PRIMARY KEY, patient_id int);\nINSERT INTO visit SELECT g, g FROM generate_series(1, 50) g;\nSELECT pg_sleep(3);\n",
		"002_nontx.up.sql": "CREATE INDEX CONCURRENTLY visit_patient_idx ON visit (patient_id);\nSELECT pg_sleep(3);\nCREATE INDEX CONCURRENTLY visit_id_patient_idx ON visit (id, patient_id);\n",
	}
	for n, s := range files {
		os.WriteFile(filepath.Join(dir, n), []byte(s), 0o644)
	}
	complExpect(t, tpAs(f, a, a.DBA, "migrate", "--dir", dir, "hash"), 0)
	// ready says the runner is where it must be killed: an active session
	// of the runner sleeping (an idle one shows its last query too), and
	// for 002 its first statement recorded as done.
	killDuring := func(wantSleeping string, ready string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd, _, _ := f.start(ctx, "migrate", "--dir", dir, "up", "--reason", "killed")
		deadline := time.Now().Add(30 * time.Second)
		for queryInt(t, f.conn(), "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgphi migrate' AND state = 'active' AND query LIKE '%pg_sleep%' AND ("+ready+")") == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the runner never reached %s", wantSleeping)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
	killDuring("001_tx", "true")
	// Killed inside its transaction: nothing of 001 is left.
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM pg_class WHERE relname = 'visit'"); n != 0 {
		t.Fatal("a killed transactional migration left its table")
	}
	// Only 001: the runner must stop inside 002's second statement.
	os.Rename(filepath.Join(dir, "002_nontx.up.sql"), filepath.Join(f.dir, "002_nontx.up.sql"))
	complExpect(t, tpAs(f, a, a.DBA, "migrate", "--dir", dir, "hash"), 0)
	complExpect(t, tpAs(f, a, a.DBA, "migrate", "--dir", dir, "up", "--reason", "after kill"), 0, "applied 001_tx")
	os.Rename(filepath.Join(f.dir, "002_nontx.up.sql"), filepath.Join(dir, "002_nontx.up.sql"))
	complExpect(t, tpAs(f, a, a.DBA, "migrate", "--dir", dir, "hash"), 0)
	killDuring("002_nontx", "EXISTS (SELECT 1 FROM pgphi.migrations WHERE version = 2 AND state = 'running' AND statements_done = 1)")
	if n := queryInt(t, f.conn(), "SELECT statements_done FROM pgphi.migrations WHERE version = 2 AND state = 'running'"); n != 1 {
		t.Fatalf("after the kill, 002 has %d statements done, want 1 (running)", n)
	}
	// The killed session may still hold the lock until its sleep ends: the
	// next runner waits for it, then resumes at statement 2.
	r := tpAs(f, a, a.DBA, "migrate", "--dir", dir, "up", "--reason", "after kill")
	complExpect(t, r, 0, "resuming 002_nontx at statement 2 of 3", "applied 002_nontx")
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM pg_index WHERE indexrelid::regclass::text IN ('visit_patient_idx', 'visit_id_patient_idx') AND indisvalid"); n != 2 {
		t.Fatalf("%d valid indexes, want 2", n)
	}
	complExpect(t, tpAs(f, a, a.DBA, "migrate", "--dir", dir, "verify"), 0)
}

// In production, `migrate up` needs approvals of its plan id (the pending
// files and the database), and lint errors block it.
func TestMigrateApprovalsAndLintInProduction(t *testing.T) {
	t.Parallel()
	f := newFixture(t, complYAML("environment: production\naccess: { allow_superuser: true }\napprovals:\n  signers: allowed_signers\n  require:\n    production: { dba: 1, healthcare_admin: 1 }\n", ""))
	complCreatePatient(f, 20, 0)
	keys := map[string]string{}
	var list []complSigner
	for _, s := range [][2]string{{"alice", "dba"}, {"bob", "healthcare_admin"}} {
		path, pub := complKey(t, f.dir, s[0])
		keys[s[0]] = path
		list = append(list, complSigner{s[0], s[1], pub, ""})
	}
	complWriteSigners(t, filepath.Join(f.dir, "allowed_signers"), list...)
	complExpect(t, f.run("keys", "init"), 0)
	dir := filepath.Join(f.dir, "migrations")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "001_visit.up.sql"), []byte("CREATE TABLE visit (id bigint PRIMARY KEY);\n"), 0o644)
	complExpect(t, f.run("migrate", "--dir", dir, "hash"), 0)
	planOf := func() string {
		t.Helper()
		r := f.run("migrate", "--dir", dir, "status")
		m := regexp.MustCompile(`plan (migrate-[0-9a-f]{24})`).FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("status shows no plan id:\n%s", r)
		}
		return m[1]
	}
	plan := planOf()
	complExpect(t, f.run("migrate", "--dir", dir, "up", "--reason", "release"), 4, "approval required", plan)
	complAssertRefused(t, f, "migrate", "approval")
	complExpect(t, f.run("approve", plan, "--command", "migrate", "--key", keys["alice"]), 0)
	complExpect(t, f.run("approve", plan, "--command", "migrate", "--key", keys["bob"]), 0)
	complExpect(t, f.run("migrate", "--dir", dir, "up", "--reason", "release"), 0, "applied 001_visit")

	// An approved plan whose file drops a table: lint blocks it.
	os.WriteFile(filepath.Join(dir, "002_drop.up.sql"), []byte("DROP TABLE visit;\n"), 0o644)
	complExpect(t, f.run("migrate", "--dir", dir, "hash"), 0)
	plan = planOf()
	complExpect(t, f.run("approve", plan, "--command", "migrate", "--key", keys["alice"]), 0)
	complExpect(t, f.run("approve", plan, "--command", "migrate", "--key", keys["bob"]), 0)
	complExpect(t, f.run("migrate", "--dir", dir, "up", "--reason", "release"), 4, "ban-drop-table", "lint errors block the migration")
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM pg_class WHERE relname = 'visit'"); n != 1 {
		t.Fatal("the blocked migration ran")
	}
	// Suppressed with a reason: it runs, and the reason is audited.
	os.WriteFile(filepath.Join(dir, "002_drop.up.sql"), []byte("-- pgphi:ignore ban-drop-table visit was never used\nDROP TABLE visit;\n"), 0o644)
	complExpect(t, f.run("migrate", "--dir", dir, "hash"), 0)
	plan = planOf()
	complExpect(t, f.run("approve", plan, "--command", "migrate", "--key", keys["alice"]), 0)
	complExpect(t, f.run("approve", plan, "--command", "migrate", "--key", keys["bob"]), 0)
	complExpect(t, f.run("migrate", "--dir", dir, "up", "--reason", "release"), 0, "applied 002_drop")
	if rec := complLastRecord(t, f); !strings.Contains(rec.Details["lint_ignored"], "ban-drop-table: visit was never used") {
		t.Errorf("audit record details %v", rec.Details)
	}
}

// A directory and database golang-migrate managed are adopted with
// baseline: a dirty version is refused (exit 2) with what to do, a clean
// one is imported and up continues after it.
func TestMigrateBaselineAdoptsGolangMigrate(t *testing.T) {
	t.Parallel()
	f, a, _ := tpFixture(t, "environment: test\n")
	dir := filepath.Join(f.dir, "migrations")
	os.MkdirAll(dir, 0o755)
	for n, s := range map[string]string{
		"1_a.up.sql": "CREATE TABLE a (id int);\n", "1_a.down.sql": "DROP TABLE a;\n",
		"2_b.up.sql": "CREATE TABLE b (id int);\n", "2_b.down.sql": "DROP TABLE b;\n",
		"3_c.up.sql": "CREATE TABLE c (id int);\n", "3_c.down.sql": "DROP TABLE c;\n",
	} {
		os.WriteFile(filepath.Join(dir, n), []byte(s), 0o644)
	}
	f.exec("CREATE TABLE a (id int); CREATE TABLE b (id int); CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (2, true)")
	complExpect(t, tpAs(f, a, a.DBA, "migrate", "--dir", dir, "hash"), 0)
	// The dba may not read the table yet: an error, not a silent skip.
	complExpect(t, tpAs(f, a, a.DBA, "migrate", "--dir", dir, "baseline", "2", "--reason", "adopt"), 1, "reading golang-migrate's schema_migrations", "permission denied")
	f.exec("ALTER TABLE a OWNER TO " + a.AppOwner + "; ALTER TABLE b OWNER TO " + a.AppOwner + "; ALTER TABLE schema_migrations OWNER TO " + a.AppOwner)
	as := func(args ...string) result {
		t.Helper()
		return tpAs(f, a, a.DBA, append([]string{"migrate", "--dir", dir}, args...)...)
	}
	complExpect(t, as("hash"), 0)
	complExpect(t, as("baseline", "2", "--reason", "adopt"), 2, "version 2 is dirty")
	f.exec("UPDATE schema_migrations SET dirty = false")
	complExpect(t, as("baseline", "3", "--reason", "adopt"), 2, "golang-migrate's history ends at version 2")
	complExpect(t, as("baseline", "2", "--reason", "adopt"), 0, "adopted 2 migrations up to version 2: 1_a, 2_b")
	complExpect(t, as("up", "--reason", "continue"), 0, "applied 3_c")
	r := as("status")
	complExpect(t, r, 0, "baseline")
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM pgphi.migrations WHERE source = 'golang-migrate'"); n != 2 {
		t.Fatalf("%d migrations imported from golang-migrate, want 2", n)
	}
	// An adopted migration ran outside pgphi: its report is NOT APPROVED,
	// saying so and how to run it under the wrapper; the one pgphi applied
	// (where the environment requires no approvals) is approved.
	complExpect(t, tpAs(f, a, a.AuditOfficer, "report", "--migration", "2_b"), 0, "NOT APPROVED", "adopted with `pgphi migrate baseline` (history from golang-migrate)",
		"`pgphi migrate down --to 1 --reason TEXT`, then `pgphi migrate up --reason TEXT`", "no audit record of a `pgphi migrate` run names this migration")
	complExpect(t, tpAs(f, a, a.AuditOfficer, "report", "--migration", "3_c"), 0, "**APPROVED FOR PRODUCTION**", "environment test requires no approvals")
}

// Two runners started together: one applies, the other waits for the
// runner lock, then finds nothing to do and exits 0.
func TestMigrateTwoRunnersStartedTogether(t *testing.T) {
	t.Parallel()
	f, _, _ := tpFixture(t, "environment: test\n")
	dir := filepath.Join(f.dir, "migrations")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "001_slow.up.sql"), []byte("CREATE TABLE visit (id bigint PRIMARY KEY);\nSELECT pg_sleep(2);\n"), 0o644)
	complExpect(t, f.run("migrate", "--dir", dir, "hash"), 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type run struct {
		out, errOut *bytes.Buffer
		err         error
	}
	done := make(chan run, 2)
	for range 2 {
		cmd, out, errOut := f.start(ctx, "migrate", "--dir", dir, "up", "--reason", "together")
		go func() { done <- run{out, errOut, cmd.Wait()} }()
	}
	var applied, nothing int
	for range 2 {
		r := <-done
		if r.err != nil {
			t.Fatalf("a runner failed: %v\n%s%s", r.err, r.out, r.errOut)
		}
		switch {
		case strings.Contains(r.out.String(), "applied 001_slow"):
			applied++
		case strings.Contains(r.out.String(), "nothing to migrate: the database is up to date"):
			nothing++
			if !strings.Contains(r.errOut.String(), "waiting for the migration lock") {
				t.Errorf("the second runner did not say it waited:\n%s", r.errOut)
			}
		default:
			t.Errorf("runner output:\n%s%s", r.out, r.errOut)
		}
	}
	if applied != 1 || nothing != 1 {
		t.Fatalf("%d runners applied, %d found nothing to do; want 1 and 1", applied, nothing)
	}
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM pgphi.migrations WHERE state = 'applied'"); n != 1 {
		t.Fatalf("%d migrations applied, want 1", n)
	}
}
