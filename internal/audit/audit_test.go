package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/state"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newDB creates a database with pgphi's schema and returns its URL and a pool.
func newDB(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	pool := openPool(t, url)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := state.Ensure(ctx, conn); err != nil {
		t.Fatal(err)
	}
	return url, pool
}

func openPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := dbconn.Open(context.Background(), url, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func openLog(t *testing.T, pool *pgxpool.Pool, mirror string) *Log {
	t.Helper()
	l, err := Open(context.Background(), pool, mirror)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func sample(i int) Record {
	ev := EventStart
	if i%2 == 1 {
		ev = EventSuccess
	}
	return Record{
		Event:       ev,
		Command:     "apply",
		RunID:       fmt.Sprintf("run-%d", i/2),
		PlanID:      "p1-test",
		Actor:       Actor{OSUser: "tester", Name: "Test Operator", Host: "test-host"},
		Environment: "test",
		Reason:      fmt.Sprintf("test reason %d", i),
		Tables:      []string{"patient"},
		Columns:     []string{"first_name", "phone"},
		Rows:        int64(i * 10),
		DurationMS:  int64(i),
		Details:     map[string]string{"i": fmt.Sprint(i)},
	}
}

// appendN appends n sample records and returns them as stored.
func appendN(t *testing.T, l *Log, n int) []Record {
	t.Helper()
	var out []Record
	for i := 0; i < n; i++ {
		r, err := l.Append(context.Background(), sample(i))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func mustVerify(t *testing.T, q Querier, records int64) *Report {
	t.Helper()
	rep, err := Verify(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Records != records || rep.HeadSeq != records {
		t.Fatalf("verify: %d records, head %d, problems %+v; want %d records and none", rep.Records, rep.HeadSeq, rep.Problems, records)
	}
	return rep
}

func mustVerifyFile(t *testing.T, path string, records int64) {
	t.Helper()
	rep, err := VerifyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Records != records {
		t.Fatalf("verify file: %d records, problems %+v; want %d and none", rep.Records, rep.Problems, records)
	}
}

// firstProblem asserts that the first problem of rep is kind at seq.
func firstProblem(t *testing.T, rep *Report, seq int64, kind string) {
	t.Helper()
	if len(rep.Problems) == 0 {
		t.Fatalf("no problem found; want %s at seq %d", kind, seq)
	}
	if p := rep.Problems[0]; p.Seq != seq || p.Kind != kind {
		t.Fatalf("first problem %+v (all: %+v); want %s at seq %d", p, rep.Problems, kind, seq)
	}
}

// superuser runs SQL with audit_log's triggers disabled, as an attacker with
// superuser rights would.
func superuser(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "ALTER TABLE pgphi.audit_log DISABLE TRIGGER ALL"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, sql, args...); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ALTER TABLE pgphi.audit_log ENABLE TRIGGER ALL"); err != nil {
		t.Fatal(err)
	}
}

// rewrite replaces record r in the table, recomputing its hash, as a careful
// attacker would.
func rewrite(t *testing.T, pool *pgxpool.Pool, r Record) Record {
	t.Helper()
	r.Hash = r.ComputeHash()
	superuser(t, pool, "UPDATE pgphi.audit_log SET record = $2::jsonb, hash = $3, prev = $4 WHERE seq = $1",
		r.Seq, string(r.CanonicalJSON()), r.Hash, r.Prev)
	return r
}

func TestAppendFillsAndStores(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	mirror := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openLog(t, pool, mirror)
	before := time.Now().Add(-time.Minute)
	in := sample(0)
	in.Seq, in.Hash, in.Prev = 99, "forged", "forged" // ignored
	r1, err := l.Append(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Seq != 1 || r1.Prev != ZeroHash || r1.Hash != r1.ComputeHash() || len(r1.Hash) != 64 {
		t.Fatalf("first record: seq %d prev %s hash %s", r1.Seq, r1.Prev, r1.Hash)
	}
	if r1.Time.Before(before) || r1.Time.Location() != time.UTC || r1.Time.Nanosecond()%1000 != 0 {
		t.Fatalf("time %v", r1.Time)
	}
	if r1.Actor.DBRole == "" || r1.DBName == "" || r1.DBHost == "" {
		t.Fatalf("not filled: %+v", r1)
	}
	if strings.Contains(r1.DBHost, "@") || strings.Contains(r1.DBHost, "password") {
		t.Fatalf("db_host %q carries credentials", r1.DBHost)
	}
	r2, err := l.Append(ctx, sample(1))
	if err != nil {
		t.Fatal(err)
	}
	if r2.Seq != 2 || r2.Prev != r1.Hash {
		t.Fatalf("second record: seq %d prev %s", r2.Seq, r2.Prev)
	}
	stored, err := List(ctx, pool, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 2 || len(diffFields(stored[0], r1)) > 0 || len(diffFields(stored[1], r2)) > 0 {
		t.Fatalf("stored records differ from returned ones")
	}
	file, err := os.ReadFile(mirror)
	if err != nil {
		t.Fatal(err)
	}
	want := string(r1.CanonicalJSON()) + "\n" + string(r2.CanonicalJSON()) + "\n"
	if string(file) != want {
		t.Fatalf("mirror:\n%s\nwant:\n%s", file, want)
	}
	st, _ := os.Stat(mirror)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mirror mode %v", st.Mode())
	}
	mustVerify(t, pool, 2)
	mustVerifyFile(t, mirror, 2)

	// Invalid records are refused before anything is stored.
	bad := sample(2)
	bad.Reason = "x\x00y"
	if _, err := l.Append(ctx, bad); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("NUL in reason: %v", err)
	}
	mustVerify(t, pool, 2)
}

// TestRecordKeySet: a stored record holds exactly the schema's fields.
func TestRecordKeySet(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	l := openLog(t, pool, "")
	r := sample(3)
	r.ErrorClass = "SQLSTATE 23505"
	if _, err := l.Append(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, Record{Event: EventRefused, Command: "search"}); err != nil { // mostly empty
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, "SELECT record::text FROM pgphi.audit_log ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var text string
		if err := rows.Scan(&text); err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(text), &m); err != nil {
			t.Fatal(err)
		}
		want := []string{"actor", "columns", "command", "db_host", "db_name", "details", "duration_ms",
			"environment", "error_class", "event", "hash", "plan_id", "prev", "reason", "rows", "run_id",
			"seq", "tables", "time"}
		if got := sortedKeysOf(m); !slices.Equal(got, want) {
			t.Fatalf("record keys %v\nwant %v", got, want)
		}
		var actor map[string]json.RawMessage
		if err := json.Unmarshal(m["actor"], &actor); err != nil {
			t.Fatal(err)
		}
		if got := sortedKeysOf(actor); !slices.Equal(got, []string{"db_role", "host", "name", "os_user"}) {
			t.Fatalf("actor keys %v", got)
		}
		n++
	}
	if rows.Err() != nil || n != 2 {
		t.Fatalf("%d records, %v", n, rows.Err())
	}
}

func sortedKeysOf(m map[string]json.RawMessage) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

// TestConcurrentAppenders: 4 goroutines on each of 2 pools (as two
// processes would) sharing one mirror file produce one chain without gaps,
// in the table and in the file.
func TestConcurrentAppenders(t *testing.T) {
	ctx := context.Background()
	url, pool1 := newDB(t)
	pool2 := openPool(t, url)
	mirror := filepath.Join(t.TempDir(), "audit.jsonl")
	logs := []*Log{openLog(t, pool1, mirror), openLog(t, pool2, mirror)}
	const perGoroutine = 25
	var wg sync.WaitGroup
	errs := make(chan error, 8*perGoroutine)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := logs[g%2]
			for i := 0; i < perGoroutine; i++ {
				r := sample(i)
				r.Details = map[string]string{"g": fmt.Sprint(g), "i": fmt.Sprint(i)}
				if _, err := l.Append(ctx, r); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const total = 8 * perGoroutine
	mustVerify(t, pool1, total)
	mustVerifyFile(t, mirror, total)
	if p, err := CompareFileAndTable(ctx, pool2, mirror); err != nil || p != nil {
		t.Fatalf("compare: %v %v", p, err)
	}
	recs, err := List(ctx, pool1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Details["g"]+"/"+r.Details["i"]] = true
	}
	if len(seen) != total {
		t.Fatalf("%d distinct appends, want %d", len(seen), total)
	}
}

func TestAppendOnly(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	l := openLog(t, pool, "")
	appendN(t, l, 3)
	if _, err := SignCheckpoint(ctx, pool, testKey(1)); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		"UPDATE pgphi.audit_log SET hash = hash WHERE seq = 2",
		"UPDATE pgphi.audit_log SET record = jsonb_set(record, '{reason}', '\"x\"')",
		"DELETE FROM pgphi.audit_log WHERE seq = 3",
		"DELETE FROM pgphi.audit_log",
		"TRUNCATE pgphi.audit_log",
		"UPDATE pgphi.audit_checkpoints SET hash = 'x'",
		"DELETE FROM pgphi.audit_checkpoints",
		"TRUNCATE pgphi.audit_checkpoints",
	} {
		_, err := pool.Exec(ctx, sql) // as superuser: the trigger still refuses
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v", sql, err)
		}
	}
	mustVerify(t, pool, 3)
	var ok bool
	if err := pool.QueryRow(ctx, `SELECT NOT has_table_privilege('public', 'pgphi.audit_log', 'UPDATE')
		AND NOT has_table_privilege('public', 'pgphi.audit_log', 'DELETE')
		AND NOT has_table_privilege('public', 'pgphi.audit_log', 'TRUNCATE')`).Scan(&ok); err != nil || !ok {
		t.Fatalf("PUBLIC privileges: %v %v", ok, err)
	}
}

func TestTamperTable(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		tamper func(t *testing.T, pool *pgxpool.Pool, recs []Record)
		seq    int64
		kind   string
		only   bool  // the only problem
		cmpSeq int64 // where the mirror differs, if not seq
	}{
		{"edit a field", func(t *testing.T, pool *pgxpool.Pool, recs []Record) {
			superuser(t, pool, `UPDATE pgphi.audit_log SET record = jsonb_set(record, '{reason}', '"nothing to see"') WHERE seq = 5`)
		}, 5, KindHashMismatch, true, 0},
		{"edit the rows count", func(t *testing.T, pool *pgxpool.Pool, recs []Record) {
			superuser(t, pool, `UPDATE pgphi.audit_log SET record = jsonb_set(record, '{rows}', '0') WHERE seq = 7`)
		}, 7, KindHashMismatch, true, 0},
		{"edit the hash column only", func(t *testing.T, pool *pgxpool.Pool, recs []Record) {
			superuser(t, pool, `UPDATE pgphi.audit_log SET hash = repeat('a', 64) WHERE seq = 4`)
		}, 4, KindHashMismatch, true, 0},
		{"delete a record", func(t *testing.T, pool *pgxpool.Pool, recs []Record) {
			superuser(t, pool, `DELETE FROM pgphi.audit_log WHERE seq = 5`)
		}, 5, KindGap, true, 0},
		{"delete the first record", func(t *testing.T, pool *pgxpool.Pool, recs []Record) {
			superuser(t, pool, `DELETE FROM pgphi.audit_log WHERE seq = 1`)
		}, 1, KindGap, true, 0},
		{"swap seq", func(t *testing.T, pool *pgxpool.Pool, recs []Record) {
			superuser(t, pool, `UPDATE pgphi.audit_log SET seq = 1000003 WHERE seq = 3;
				UPDATE pgphi.audit_log SET seq = 3 WHERE seq = 4;
				UPDATE pgphi.audit_log SET seq = 4 WHERE seq = 1000003`)
		}, 3, KindReordered, false, 0},
		{"edit and recompute the hash", func(t *testing.T, pool *pgxpool.Pool, recs []Record) {
			r := recs[4]
			r.Reason = "routine maintenance"
			rewrite(t, pool, r)
		}, 6, KindBrokenLink, true, 5},
		{"add a field", func(t *testing.T, pool *pgxpool.Pool, recs []Record) {
			superuser(t, pool, `UPDATE pgphi.audit_log SET record = record || '{"ssn":"123-45-6789"}' WHERE seq = 8`)
		}, 8, KindMalformed, true, 0},
		{"insert a forged record", func(t *testing.T, pool *pgxpool.Pool, recs []Record) {
			r := recs[9]
			r.Seq, r.Prev = 11, ZeroHash
			r.Hash = r.ComputeHash()
			superuser(t, pool, "INSERT INTO pgphi.audit_log VALUES ($1, now(), $2::jsonb, $3, $4)", r.Seq, string(r.CanonicalJSON()), r.Hash, r.Prev)
		}, 11, KindBrokenLink, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, pool := newDB(t)
			mirror := filepath.Join(t.TempDir(), "audit.jsonl")
			l := openLog(t, pool, mirror)
			recs := appendN(t, l, 10)
			tc.tamper(t, pool, recs)
			rep, err := Verify(ctx, pool)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("problems: %+v", rep.Problems)
			firstProblem(t, rep, tc.seq, tc.kind)
			if tc.only && len(rep.Problems) != 1 {
				t.Fatalf("problems %+v; want only one", rep.Problems)
			}
			for _, p := range rep.Problems {
				if strings.Contains(p.Detail, "nothing to see") || strings.Contains(p.Detail, "123-45") || strings.Contains(p.Detail, "routine") {
					t.Fatalf("problem quotes content: %+v", p)
				}
			}
			// The mirror, written before the tampering, disagrees at the same place.
			p, err := CompareFileAndTable(ctx, pool, mirror)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.seq
			if tc.cmpSeq != 0 {
				want = tc.cmpSeq
			}
			if p == nil || p.Seq != want {
				t.Fatalf("compare: %+v; want a difference at seq %d", p, want)
			}
		})
	}
}

// TestTamperTableTail: removing the newest records leaves a valid chain; the
// mirror and a checkpoint reveal it.
func TestTamperTableTail(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	mirror := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openLog(t, pool, mirror)
	appendN(t, l, 10)
	cp, err := SignCheckpoint(ctx, pool, testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	superuser(t, pool, "DELETE FROM pgphi.audit_log WHERE seq >= 9")
	p, err := CompareFileAndTable(ctx, pool, mirror)
	if err != nil {
		t.Fatal(err)
	}
	if p == nil || p.Seq != 9 || p.Kind != KindMissingInTable {
		t.Fatalf("compare: %+v", p)
	}
	var pr *Problem
	if err := ProveExtends(ctx, pool, cp); !errors.As(err, &pr) || pr.Seq != 9 || pr.Kind != KindTruncated {
		t.Fatalf("prove: %v", err)
	}
	rep, err := Verify(ctx, pool) // against the stored checkpoint
	if err != nil {
		t.Fatal(err)
	}
	firstProblem(t, rep, 9, KindTruncated)
	// The next append is not blocked by the divergence: the mirror keeps its
	// copy of the removed records (evidence) and notes the difference.
	if _, err := l.Append(ctx, sample(0)); err != nil {
		t.Fatalf("append over a diverged mirror: %v", err)
	}
	if sk := l.Skipped(); len(sk) != 1 || sk[0].Seq != 10 || sk[0].Kind != KindDiffers {
		t.Fatalf("skipped: %+v", sk)
	}
	if p, err := CompareFileAndTable(ctx, pool, mirror); err != nil || p == nil || p.Seq != 9 {
		t.Fatalf("compare after append: %+v %v", p, err)
	}
}

func TestTamperFile(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	mirror := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openLog(t, pool, mirror)
	appendN(t, l, 10)
	orig, err := os.ReadFile(mirror)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(orig, []byte("\n"))[:10]
	join := func(ls [][]byte) []byte { return bytes.Join(ls, nil) }
	cases := []struct {
		name    string
		content []byte
		seq     int64
		kind    string
		records int64 // lines VerifyFile reads
		cmpSeq  int64
		cmpKind string
	}{
		{"edit a line", func() []byte {
			ls := slices.Clone(lines)
			ls[4] = bytes.Replace(ls[4], []byte("test reason 4"), []byte("test reason X"), 1)
			return join(ls)
		}(), 5, KindHashMismatch, 10, 5, KindDiffers},
		{"delete a line", join(slices.Delete(slices.Clone(lines), 4, 5)), 5, KindGap, 9, 5, KindMissingInFile},
		{"truncate inside a line", orig[:len(join(lines[:4]))+40], 5, KindMalformed, 5, 5, KindDiffers},
		{"swap lines", func() []byte {
			ls := slices.Clone(lines)
			ls[2], ls[3] = ls[3], ls[2]
			return join(ls)
		}(), 3, KindGap, 10, 3, KindMissingInFile},
		{"insert a foreign line", join(slices.Insert(slices.Clone(lines), 6, []byte(`{"note":"hello"}`+"\n"))), 7, KindMalformed, 11, 7, KindDiffers},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tampered.jsonl")
			if err := os.WriteFile(path, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			rep, err := VerifyFile(path)
			if err != nil {
				t.Fatal(err)
			}
			firstProblem(t, rep, tc.seq, tc.kind)
			if rep.Records != tc.records {
				t.Fatalf("records %d, want %d", rep.Records, tc.records)
			}
			p, err := CompareFileAndTable(ctx, pool, path)
			if err != nil {
				t.Fatal(err)
			}
			if p == nil || p.Seq != tc.cmpSeq || p.Kind != tc.cmpKind {
				t.Fatalf("compare: %+v; want %s at %d", p, tc.cmpKind, tc.cmpSeq)
			}
		})
	}

	t.Run("truncate whole lines", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "tampered.jsonl")
		if err := os.WriteFile(path, join(lines[:7]), 0o600); err != nil {
			t.Fatal(err)
		}
		mustVerifyFile(t, path, 7) // a shorter chain is still a chain ...
		p, err := CompareFileAndTable(ctx, pool, path)
		if err != nil {
			t.Fatal(err)
		}
		if p == nil || p.Seq != 8 || p.Kind != KindMissingInFile { // ... the table shows what is missing
			t.Fatalf("compare: %+v", p)
		}
	})

	t.Run("differs names fields", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "tampered.jsonl")
		ls := slices.Clone(lines)
		ls[6] = bytes.Replace(ls[6], []byte("test reason 6"), []byte("test reason Y"), 1)
		if err := os.WriteFile(path, join(ls), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := CompareFileAndTable(ctx, pool, path)
		if err != nil {
			t.Fatal(err)
		}
		if p == nil || p.Seq != 7 || p.Kind != KindDiffers || !strings.Contains(p.Detail, "reason") || strings.Contains(p.Detail, "test reason") {
			t.Fatalf("compare: %+v", p)
		}
	})
}

// TestMirrorCatchUp: a mirror catches up with records other processes
// appended, and an append that cannot write the mirror still stores the
// record but fails loudly.
func TestMirrorCatchUp(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	appendN(t, openLog(t, pool, ""), 5) // another machine, no mirror here
	dir := t.TempDir()
	mirror := filepath.Join(dir, "audit.jsonl")
	l := openLog(t, pool, mirror)
	if _, err := l.Append(ctx, sample(5)); err != nil {
		t.Fatal(err)
	}
	mustVerifyFile(t, mirror, 6)
	appendN(t, openLog(t, pool, ""), 3)
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	mustVerifyFile(t, mirror, 9)
	if p, err := CompareFileAndTable(ctx, pool, mirror); err != nil || p != nil {
		t.Fatalf("compare: %+v %v", p, err)
	}

	// A mirror cut in the middle of a line: the append is stored, the error is loud.
	data, _ := os.ReadFile(mirror)
	if err := os.WriteFile(mirror, data[:len(data)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := l.Append(ctx, sample(9))
	if !errors.Is(err, ErrMirror) || r.Seq != 10 {
		t.Fatalf("append over a cut mirror: seq %d, %v", r.Seq, err)
	}
	mustVerify(t, pool, 10)

	// A mirror that cannot be written.
	blocked := filepath.Join(dir, "dir-not-file")
	if err := os.Mkdir(blocked, 0o700); err != nil {
		t.Fatal(err)
	}
	l2 := &Log{pool: pool, mirror: blocked}
	r, err = l2.Append(ctx, sample(10))
	if !errors.Is(err, ErrMirror) || r.Seq != 11 {
		t.Fatalf("append to an unwritable mirror: seq %d, %v", r.Seq, err)
	}
	mustVerify(t, pool, 11)
}

func TestExport(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	mirror := filepath.Join(t.TempDir(), "audit.jsonl")
	recs := appendN(t, openLog(t, pool, mirror), 8)
	var all bytes.Buffer
	n, err := Export(ctx, pool, &all, 0, 0)
	if err != nil || n != 8 {
		t.Fatalf("export: %d %v", n, err)
	}
	file, _ := os.ReadFile(mirror)
	if !bytes.Equal(all.Bytes(), file) {
		t.Fatal("export of everything differs from the mirror")
	}
	var part bytes.Buffer
	n, err = Export(ctx, pool, &part, 3, 5)
	if err != nil || n != 3 {
		t.Fatalf("export 3..5: %d %v", n, err)
	}
	want := string(recs[2].CanonicalJSON()) + "\n" + string(recs[3].CanonicalJSON()) + "\n" + string(recs[4].CanonicalJSON()) + "\n"
	if part.String() != want {
		t.Fatalf("export 3..5:\n%s", part.String())
	}
	part.Reset()
	if n, err = Export(ctx, pool, &part, 7, 0); err != nil || n != 2 {
		t.Fatalf("export 7..: %d %v", n, err)
	}
}
