package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/pgphi/pgphi/internal/audit"
)

// Only the dba group may rebuild terms: every other role, outsiders
// included, is refused with exit 4 and the refusal is audited; nothing
// changes. The dba's reindex is audited (start and success), the new
// generation is in place, verify passes, search still finds the canary's
// row, and no output carries the canary value.
func TestReindexOnlyDBA(t *testing.T) {
	t.Parallel()
	f, a, _ := tpFixture(t, "environment: test\n")
	apply := tpAs(f, a, a.DBA, "apply", "--reason", "test")
	complExpect(t, apply, 0)
	for _, role := range []string{a.HealthcareAdmin, a.AuditOfficer, a.AppWriter, a.AppOwner, a.Outsider} {
		complExpect(t, tpAs(f, a, role, "reindex", "--reason", "test"), 4, "access denied")
		if !tpHasRefusal(t, f, "reindex", role) {
			t.Errorf("no refusal record of reindex by %s", role)
		}
	}
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.blind_indexes WHERE generation <> 1 OR state <> 'active'`); n != 0 {
		t.Fatalf("a refused reindex changed %d families", n)
	}
	r := tpAs(f, a, a.DBA, "reindex", "--table", "patient", "--column", "last_name", "--reason", "re-size the terms")
	complExpect(t, r, 0, "public.patient.last_name: generation 1 -> 2", "reindexed 1 columns")
	if rec := complLastRecord(t, f); rec.Event != audit.EventSuccess || rec.Command != "reindex" || rec.Actor.DBRole != a.DBA {
		t.Errorf("last audit record: %s %s by %q, want reindex success by %s", rec.Command, rec.Event, rec.Actor.DBRole, a.DBA)
	}
	started := false
	for _, rec := range tpRecords(t, f) {
		if rec.Event == audit.EventStart && rec.Command == "reindex" && rec.Actor.DBRole == a.DBA {
			started = true
		}
	}
	if !started {
		t.Error("no start record of the dba's reindex")
	}
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.blind_indexes WHERE column_name = 'last_name' AND (generation <> 2 OR state <> 'active')`); n != 0 {
		t.Fatalf("%d families of last_name not at generation 2", n)
	}
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pg_attribute WHERE attrelid = 'patient'::regclass AND attname = 'last_name_bidx_next' AND NOT attisdropped`); n != 0 {
		t.Fatal("the next generation's column is still there")
	}
	v := tpAs(f, a, a.DBA, "verify")
	complExpect(t, v, 0)
	s := tpAs(f, a, a.DBA, "search", "patient", "last_name", "--exact", strings.ToLower(complCanary), "--reason", "test", "--json")
	complExpect(t, s, 0, `"keys":[["7"]]`)
	// Usage errors: a column without its table, a column that is not searchable.
	complExpect(t, tpAs(f, a, a.DBA, "reindex", "--column", "last_name", "--reason", "x"), 2, "--column needs --table")
	complExpect(t, tpAs(f, a, a.DBA, "reindex", "--table", "patient", "--column", "ssn", "--reason", "x"), 4, "has no search kinds")
	complAssertNoLeak(t, f, complCanary, apply, r, v, s)
}

// A reindex killed with SIGKILL while it writes the new generation leaves
// the building generation and its chunk checkpoints; search answers the
// same meanwhile; run again, it resumes (the chunks done stay done) and
// switches; search answers the same after and verify passes.
func TestReindexResumesAfterKill(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
environment: test
apply: { chunk_rows: 200, batch_size: 20, workers: 1 }
tables:
  patient:
    columns:
      last_name: { class: pii, search: [exact, prefix] }
`)
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, last_name text)`)
	f.exec(`INSERT INTO patient SELECT g, (ARRAY['Smith','Jones','Garcia','Nguyen','Kim','Brown'])[1 + g % 6] FROM generate_series(1, 2000) g`)
	f.exec(`UPDATE patient SET last_name = $1 WHERE id = 7`, complCanary)
	complExpect(t, f.run("keys", "init"), 0)
	complExpect(t, f.run("apply"), 0)
	searches := func() string {
		var out []string
		for _, q := range [][]string{{"--exact", "smith"}, {"--prefix", "gar"}, {"--exact", strings.ToLower(complCanary)}} {
			r := f.run(append([]string{"search", "patient", "last_name", "--reason", "test", "--json"}, q...)...)
			complExpect(t, r, 0)
			out = append(out, r.stdout)
		}
		return strings.Join(out, "")
	}
	before := searches()
	if !strings.Contains(before, `"keys":[["7"]]`) {
		t.Fatalf("the canary's row is not found before:\n%s", before)
	}
	killed, stderr := applyAndKill(t, f, "reindex public.patient.last_name write: generation", 1500*time.Millisecond,
		"reindex", "--max-rate", "300", "--reason", "re-size")
	if !killed {
		t.Fatalf("the reindex finished before the kill:\n%s", stderr)
	}
	done := queryInt(t, f.conn(), `SELECT COALESCE(sum(rows_done), 0) FROM pgphi.chunks WHERE table_name LIKE 'public.patient#reindex:%'`)
	if done == 0 || done >= 2000 {
		t.Fatalf("killed with %d rows of the new generation done", done)
	}
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.blind_indexes WHERE state = 'building'`); n == 0 {
		t.Fatal("no building generation after the kill")
	}
	complExpect(t, f.run("status"), 0, "reindex of public.patient.last_name to generation 2 in progress", "of 2000 rows")
	if during := searches(); during != before {
		t.Fatalf("search while interrupted:\n%s\nwant\n%s", during, before)
	}
	r := f.run("reindex", "--reason", "re-size")
	complExpect(t, r, 0, "generation 1 -> 2", "2000 rows verified")
	if !strings.Contains(r.stderr, "resuming generation 2") {
		t.Errorf("the second run did not resume:\n%s", r.stderr)
	}
	if after := searches(); after != before {
		t.Fatalf("search after:\n%s\nwant\n%s", after, before)
	}
	v := f.run("verify")
	complExpect(t, v, 0)
	complAssertNoLeak(t, f, complCanary, r, v)
}
