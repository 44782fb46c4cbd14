package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/internal/pgtest"
)

// keys rotate --reencrypt: a new active data key, every ciphertext moved
// to it (none left under key 1), verify passes, search finds the canary's
// row, and the canary value is in no output. Run again, it rotates again
// and moves everything to key 3.
func TestKeysRotateReencrypt(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
environment: test
tables:
  patient:
    columns:
      last_name: { class: pii, search: [exact] }
      ssn: { class: pii }
`)
	complCreatePatient(f, 300, 0)
	complExpect(t, f.run("keys", "init"), 0)
	complExpect(t, f.run("apply"), 0)
	r := f.run("keys", "rotate", "--reencrypt", "--reason", "yearly rotation")
	complExpect(t, r, 0, "data key 2 is now active", "public.patient: 600 ciphertexts re-encrypted under data key 2")
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM patient WHERE substr(last_name_encrypted, 2, 4) <> '\x00000002'::bytea OR substr(ssn_encrypted, 2, 4) <> '\x00000002'::bytea`); n != 0 {
		t.Fatalf("%d rows still under key 1", n)
	}
	v := f.run("verify")
	complExpect(t, v, 0)
	s := f.run("search", "patient", "last_name", "--exact", strings.ToLower(complCanary), "--reason", "test", "--json")
	complExpect(t, s, 0, `"keys":[["7"]]`)
	// The second one watched in Prometheus terms, as apply is.
	run := runScraped(t, f, "keys", "rotate", "--reencrypt", "--reason", "again")
	r2 := result{stdout: run.stdout, stderr: run.stderr}
	complExpect(t, r2, 0, "data key 3 is now active", "600 ciphertexts re-encrypted under data key 3")
	if v, ok := metricValue(run.final, "pgphi_info", map[string]string{"command": "keys rotate"}); !ok || v != 1 {
		t.Errorf("pgphi_info{command=keys rotate} = %v (%v)", v, ok)
	}
	if v, ok := metricValue(run.final, "pgphi_rows_encrypted_total", map[string]string{"phase": "reencrypt", "table": "public.patient"}); !ok || v != 300 {
		t.Errorf("pgphi_rows_encrypted_total{phase=reencrypt} = %v (%v), want 300", v, ok)
	}
	for _, b := range run.bodies {
		if strings.Contains(b, complCanary) || strings.Contains(b, strings.ToLower(complCanary)) {
			t.Fatal("a planted value appeared in a scrape")
		}
	}
	complAssertNoLeak(t, f, complCanary, r, v, s, r2)
}

// reencryptKillConfig: small batches and chunks make many checkpoints for
// the kills to land between.
const reencryptKillConfig = `version: 1
environment: test
apply: { batch_size: 20, chunk_rows: 400, adaptive: false }
tables:
  patient:
    columns:
      last_name: { class: pii }
      notes: { class: phi }
`

// reencryptProgress is the rows the re-encryption under any key has
// committed, from its chunks (0 before they exist).
func reencryptProgress(t *testing.T, c *pgx.Conn) int64 {
	t.Helper()
	return queryInt(t, c, `SELECT COALESCE(sum(rows_done), 0)::bigint FROM pgphi.chunks WHERE table_name LIKE '%#reencrypt:%'`)
}

// reencryptKilledAt starts `keys rotate --reencrypt` and SIGKILLs it once
// its chunks count more than atLeast rows done; it fails the test if the
// run ends before that. It returns the run and the progress seen.
func reencryptKilledAt(t *testing.T, f *fixture, c *pgx.Conn, atLeast int64, args ...string) (lcResult, int64) {
	t.Helper()
	kill, exited, wait := lcStart(t, f, nil, args...)
	var seen int64
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for seen <= atLeast {
		select {
		case <-exited:
			r := wait()
			t.Fatalf("keys rotate --reencrypt ended (exit %d) after %d rows, before the kill at %d: too fast for this test\nstdout:\n%s\nstderr:\n%s", r.code, seen, atLeast, r.stdout, r.stderr)
		case <-tick.C:
			seen = reencryptProgress(t, c)
		}
	}
	kill()
	r := wait()
	if !r.killed {
		t.Fatalf("keys rotate --reencrypt was not killed: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	return r, seen
}

// reencryptWriter is the application: it inserts and updates patient rows
// as the application's writer role (no right on schema pgphi) and
// remembers what each row must hold.
type reencryptWriter struct {
	conn     *pgx.Conn
	rows     int64 // existing ids are 1..rows
	next     int64
	n        int
	expect   map[int64][2]*string // id -> last_name, notes
	inserted int
	updated  int
	errs     []string
}

func (w *reencryptWriter) step() {
	w.n++
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var v [2]*string
	last := fmt.Sprintf("W%d-%x", w.n, w.n*7919)
	v[0] = &last
	if w.n%5 != 0 { // every fifth write leaves notes NULL
		notes := fmt.Sprintf("note %d ✓", w.n)
		v[1] = &notes
	}
	if w.n%3 == 0 {
		id := w.next
		if _, err := w.conn.Exec(ctx, `INSERT INTO patient (id, last_name, notes, ward) VALUES ($1, $2, $3, $4)`, id, v[0], v[1], w.n%30); err != nil {
			w.errs = append(w.errs, "insert: "+err.Error())
			return
		}
		w.next++
		w.inserted++
		w.expect[id] = v
		return
	}
	id := 1 + int64(w.n*7919)%w.rows
	tag, err := w.conn.Exec(ctx, `UPDATE patient SET last_name = $2, notes = $3 WHERE id = $1`, id, v[0], v[1])
	if err != nil || tag.RowsAffected() != 1 {
		w.errs = append(w.errs, fmt.Sprintf("update of id %d: %v (%d rows)", id, err, tag.RowsAffected()))
		return
	}
	w.updated++
	w.expect[id] = v
}

// TestKeysRotateReencryptKilledUnderWrites: while the application inserts
// and updates rows through its own role, `keys rotate --reencrypt` is
// killed twice after committing progress, each run resuming the same
// re-encryption (no second rotation), and a third run finishes it. Then
// no ciphertext is under key 1, verify passes, every row holds what the
// application last wrote (read back by decrypting with the keys that are
// left), no row is lost, and key 1 can be retired.
func TestKeysRotateReencryptKilledUnderWrites(t *testing.T) {
	t.Parallel()
	const rows = 4000
	f := newFixture(t, reencryptKillConfig)
	a := pgtest.NewActors(t, f.url)
	f.exec(`CREATE TABLE patient (id bigint PRIMARY KEY, last_name text, notes text, ward int)`)
	f.exec(`INSERT INTO patient SELECT g, 'Last' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'note ' || g END, g % 30 FROM generate_series(1, $1::int) g`, rows)
	f.exec(`ALTER TABLE patient OWNER TO ` + a.AppOwner)
	f.exec(`GRANT SELECT, INSERT, UPDATE ON patient TO ` + a.AppWriter)
	complExpect(t, f.run("roles", "init"), 0)
	f.mustRun("keys", "init")
	f.mustRun("apply")
	c := f.conn()

	w := &reencryptWriter{conn: a.Connect(t, a.AppWriter), rows: rows, next: 1_000_001, expect: map[int64][2]*string{}}
	for id := int64(1); id <= rows; id++ {
		last := fmt.Sprintf("Last%d", id)
		var notes *string
		if id%7 != 0 {
			s := fmt.Sprintf("note %d", id)
			notes = &s
		}
		w.expect[id] = [2]*string{&last, notes}
	}
	stopWriter := everyTick(10*time.Millisecond, w.step)
	defer stopWriter()

	// --max-rate keeps each run long enough to be killed in its middle.
	rotate := []string{"keys", "rotate", "--reencrypt", "--max-rate", "400"}
	r1, done1 := reencryptKilledAt(t, f, c, 600, rotate...)
	if !strings.Contains(r1.stdout, "data key 2 is now active") {
		t.Fatalf("the first run did not rotate to key 2:\n%s", r1.stdout)
	}
	under2 := queryInt(t, c, `SELECT count(*) FROM patient WHERE substr(last_name_encrypted, 2, 4) = '\x00000002'::bytea`)
	t.Logf("first run killed after %d rows; %d last names under key 2", done1, under2)
	if under2 == 0 {
		t.Fatal("the killed run left no committed ciphertext under key 2")
	}
	// The next runs resume the same re-encryption: no key 3.
	r2, done2 := reencryptKilledAt(t, f, c, done1+1200, rotate...)
	t.Logf("second run killed after %d rows in total", done2)
	_, _, wait3 := lcStart(t, f, nil, rotate...)
	r3 := wait3()
	if r3.code != 0 {
		t.Fatalf("the third run: exit %d\nstdout:\n%s\nstderr:\n%s", r3.code, r3.stdout, r3.stderr)
	}
	for i, r := range []lcResult{r2, r3} {
		if strings.Contains(r.stdout, "is now active") || !strings.Contains(r.stderr, "resuming the re-encryption under data key 2") {
			t.Errorf("run %d did not resume the re-encryption under key 2:\nstdout:\n%s\nstderr:\n%s", i+2, r.stdout, r.stderr)
		}
	}
	if !strings.Contains(r3.stdout, "public.patient:") || !strings.Contains(r3.stdout, "under data key 2") {
		t.Errorf("the third run's summary:\n%s", r3.stdout)
	}
	// Right after the re-encryption, before anything else runs: no
	// ciphertext of another key (the rows the application wrote since are
	// pending, without a ciphertext, until apply's catch-up).
	stale := `SELECT count(*) FROM patient WHERE substr(last_name_encrypted, 2, 4) <> '\x00000002'::bytea OR substr(notes_encrypted, 2, 4) <> '\x00000002'::bytea`
	if n := queryInt(t, c, stale); n != 0 {
		t.Errorf("%d rows hold a ciphertext of another key than 2 after the re-encryption", n)
	}
	stopWriter()
	t.Logf("application: %d inserts, %d updates, %d failures", w.inserted, w.updated, len(w.errs))
	if len(w.errs) != 0 {
		t.Errorf("application writes failed during the re-encryption, e.g. %v", w.errs[:min(3, len(w.errs))])
	}
	if w.inserted+w.updated < 100 {
		t.Errorf("only %d application writes: the test did not exercise concurrency", w.inserted+w.updated)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM pgphi.plan_tables WHERE table_name LIKE '%#reencrypt:%'`); n != 0 {
		t.Errorf("%d re-encryption spaces left after the run finished", n)
	}

	// The operator's apply encrypts what the application wrote (under the
	// active key); then nothing is under key 1 and everything verifies.
	f.mustRun("apply")
	if n := queryInt(t, c, stale); n != 0 {
		t.Errorf("%d rows hold a ciphertext of another key than 2", n)
	}
	st := kbKeyStatus(t, f)
	if st[1][0] != 0 || st[2][2] != 1 || len(st) != 2 {
		t.Errorf("keys status: %v, want key 1 without ciphertexts and key 2 active, no other key", st)
	}
	total := int64(rows + w.inserted)
	if n := queryInt(t, c, `SELECT count(*) FROM patient`); n != total {
		t.Errorf("patient has %d rows, want %d", n, total)
	}
	f.verifyOK(total)
	complExpect(t, f.run("keys", "retire", "1"), 0, "data key 1 retired")

	// Every value decrypts, with key 2 alone, to what the application last
	// wrote.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	client, err := pgphi.Open(ctx, pool, pgphi.Passphrase(testPassphrase))
	if err != nil {
		t.Fatal(err)
	}
	dbRows, err := c.Query(ctx, `SELECT id, last_name_encrypted, notes_encrypted FROM patient ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	var sealed [2][]pgphi.Sealed
	for dbRows.Next() {
		var id int64
		var ln, nt []byte
		if err := dbRows.Scan(&id, &ln, &nt); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		key := pgphi.Key{"id": strconv.FormatInt(id, 10)}
		sealed[0] = append(sealed[0], pgphi.Sealed{Key: key, Ciphertext: ln})
		sealed[1] = append(sealed[1], pgphi.Sealed{Key: key, Ciphertext: nt})
	}
	if err := dbRows.Err(); err != nil {
		t.Fatal(err)
	}
	if int64(len(ids)) != total || len(w.expect) != len(ids) {
		t.Fatalf("read %d rows, the application expects %d", len(ids), len(w.expect))
	}
	wrong := 0
	for col, name := range []string{"last_name", "notes"} {
		plain, err := client.DecryptAll(ctx, "patient", name, "e2e test", sealed[col])
		if err != nil {
			t.Fatalf("decrypting %s with the keys left: %v", name, err)
		}
		for i, p := range plain {
			want, ok := w.expect[ids[i]]
			if !ok || (want[col] == nil) != p.Null || (want[col] != nil && *want[col] != p.Text) {
				wrong++
			}
		}
	}
	if wrong != 0 {
		t.Errorf("%d values do not decrypt to what the application last wrote", wrong)
	}
}
