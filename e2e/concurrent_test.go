package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/pgtest"
)

// appRow is what the application last wrote to one row; nil is SQL NULL.
type appRow struct {
	a, b, c *string
}

func sp(s string) *string { return &s }

// appTable is one protected table the simulated application writes.
type appTable struct {
	name    string
	key     string
	cols    [3]string // text, text, jsonb
	initial func(id int64) appRow
}

var concurrentTables = []appTable{
	{
		name: "patient", key: "id", cols: [3]string{"first_name", "notes", "info"},
		initial: func(id int64) appRow {
			r := appRow{a: sp(fmt.Sprintf("First%d", id)), c: sp(fmt.Sprintf(`{"id": %d}`, id))}
			if id%5 != 0 {
				r.b = sp(fmt.Sprintf("note %d", id))
			}
			return r
		},
	},
	{
		name: "visit", key: "vid", cols: [3]string{"summary", "diagnosis", "vitals"},
		initial: func(id int64) appRow {
			r := appRow{a: sp(fmt.Sprintf("visit %d", id)), b: sp("")}
			if id%4 != 0 {
				r.c = sp(fmt.Sprintf(`{"bp": "%d/80"}`, 100+id%40))
			}
			return r
		},
	},
}

// TestConcurrentApplicationWrites runs `pgphi apply` while three application
// connections insert, update (to values, NULL and empty strings) and delete
// rows of the protected tables. No application write may fail, a second
// apply catches what was written after the first one's last pass, verify
// passes, and every row holds exactly what the application last wrote.
func TestConcurrentApplicationWrites(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
environment: test
apply: { batch_size: 100, chunk_rows: 2000, lock_timeout: 500ms }
tables:
  patient:
    columns:
      first_name: { class: pii }
      notes: { class: phi }
      info: { class: phi }
  visit:
    columns:
      summary: { class: phi }
      diagnosis: { class: phi }
      vitals: { class: phi }
`)
	const patients, visits = 20000, 10000
	f.exec(`CREATE TABLE patient (id bigserial PRIMARY KEY, first_name text, notes text, info jsonb, ward int DEFAULT 1)`)
	f.exec(`CREATE TABLE visit (vid bigserial PRIMARY KEY, summary varchar(200), diagnosis text, vitals jsonb)`)
	f.exec(`INSERT INTO patient (id, first_name, notes, info)
		SELECT g, 'First' || g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'note ' || g END, jsonb_build_object('id', g)
		FROM generate_series(1, $1::int) g`, patients)
	f.exec(`INSERT INTO visit (vid, summary, diagnosis, vitals)
		SELECT g, 'visit ' || g, '', CASE WHEN g % 4 = 0 THEN NULL ELSE jsonb_build_object('bp', (100 + g % 40) || '/80') END
		FROM generate_series(1, $1::int) g`, visits)
	f.exec(`SELECT setval('patient_id_seq', $1), setval('visit_vid_seq', $2)`, patients, visits)
	f.mustRun("keys", "init")

	// Each writer owns the existing rows with id % 3 == w and the rows it
	// inserts, and remembers what it last wrote to each.
	const writers = 3
	expected := make([][]map[int64]appRow, writers) // [writer][table]
	for w := range writers {
		expected[w] = make([]map[int64]appRow, len(concurrentTables))
		for ti, tb := range concurrentTables {
			m := map[int64]appRow{}
			n := int64(patients)
			if tb.name == "visit" {
				n = visits
			}
			for id := int64(1); id <= n; id++ {
				if id%writers == int64(w) {
					m[id] = tb.initial(id)
				}
			}
			expected[w][ti] = m
		}
	}

	var inserts, updates, deletes, failures atomic.Int64
	var errMu sync.Mutex
	var firstErrors []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		conn := pgtest.Connect(t, f.url)
		rng := rand.New(rand.NewPCG(uint64(w), 42))
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ti := rng.IntN(len(concurrentTables))
				err := appWrite(conn, rng, concurrentTables[ti], expected[w][ti], w, n, &inserts, &updates, &deletes)
				if err != nil {
					failures.Add(1)
					errMu.Lock()
					if len(firstErrors) < 5 {
						firstErrors = append(firstErrors, err.Error())
					}
					errMu.Unlock()
				}
				time.Sleep(time.Duration(2+rng.IntN(6)) * time.Millisecond)
			}
		})
	}
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWriters()

	time.Sleep(200 * time.Millisecond) // the application is busy before apply starts
	before := inserts.Load() + updates.Load() + deletes.Load()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd, out, errb := f.start(ctx, "apply", "--workers", "2")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var applyErr error
	select {
	case applyErr = <-done:
	case <-time.After(90 * time.Second):
		// apply does not finish while the application keeps writing: stop
		// the application and let apply drain what is left.
		stopWriters()
		t.Errorf("apply did not finish within 90s of application writes (%d writes so far)", inserts.Load()+updates.Load()+deletes.Load())
		applyErr = <-done
	}
	during := inserts.Load() + updates.Load() + deletes.Load() - before
	stopWriters()
	assertNoStackTrace(t, []string{"apply"}, errb.String())
	if applyErr != nil {
		t.Fatalf("apply under application writes: %v\nstdout:\n%s\nstderr:\n%s", applyErr, out.String(), errb.String())
	}
	t.Logf("application wrote %d times during apply (%d inserts, %d updates, %d deletes in total), %d failures",
		during, inserts.Load(), updates.Load(), deletes.Load(), failures.Load())
	if n := failures.Load(); n != 0 {
		t.Errorf("%d application writes failed during apply, e.g.:\n%v", n, firstErrors)
	}
	if during < 100 {
		t.Errorf("only %d application writes during apply: the test did not exercise concurrency", during)
	}

	// The operator's second apply catches rows written after the first one's
	// last pass; then everything verifies.
	f.mustRun("apply")
	c := f.conn()
	var total int64
	for _, tb := range concurrentTables {
		total += queryInt(t, c, `SELECT count(*) FROM `+tb.name)
	}
	f.verifyOK(total)
	f.assertFullyEncrypted(f.status())

	// Every row holds what the application last wrote: pgphi changed no
	// plaintext, resurrected no deleted row and lost no insert.
	for ti, tb := range concurrentTables {
		var rows [][]any
		for w := range writers {
			for id, r := range expected[w][ti] {
				rows = append(rows, []any{id, r.a, r.b, r.c})
			}
		}
		assertTableHolds(t, c, tb, rows)
	}
}

// appWrite performs one random application write as writer w.
func appWrite(conn *pgx.Conn, rng *rand.Rand, tb appTable, mine map[int64]appRow, w, n int, inserts, updates, deletes *atomic.Int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	value := func(col int) *string {
		switch rng.IntN(5) {
		case 0:
			return nil
		case 1:
			if col == 2 {
				return sp("{}")
			}
			return sp("")
		default:
			if col == 2 {
				return sp(fmt.Sprintf(`{"w": %d, "n": %d, "s": "naïve ✓"}`, w, n))
			}
			return sp(fmt.Sprintf("w%d-n%d-%x ünïcode", w, n, rng.Uint32()))
		}
	}
	pick := func() (int64, bool) {
		// Map iteration order is random enough for picking a row.
		for id := range mine {
			return id, true
		}
		return 0, false
	}
	switch op := rng.IntN(10); {
	case op < 3: // insert
		r := appRow{value(0), value(1), value(2)}
		var id int64
		err := conn.QueryRow(ctx, fmt.Sprintf(`INSERT INTO %s (%s, %s, %s) VALUES ($1, $2, $3::jsonb) RETURNING %s`,
			tb.name, tb.cols[0], tb.cols[1], tb.cols[2], tb.key), r.a, r.b, r.c).Scan(&id)
		if err != nil {
			return fmt.Errorf("insert into %s: %w", tb.name, err)
		}
		mine[id] = r
		inserts.Add(1)
	case op < 8: // update one or more columns
		id, ok := pick()
		if !ok {
			return nil
		}
		r := mine[id]
		cols := rng.IntN(7) + 1 // bit set of columns to change
		if cols&1 != 0 {
			r.a = value(0)
		}
		if cols&2 != 0 {
			r.b = value(1)
		}
		if cols&4 != 0 {
			r.c = value(2)
		}
		tag, err := conn.Exec(ctx, fmt.Sprintf(`UPDATE %s SET %s = $2, %s = $3, %s = $4::jsonb WHERE %s = $1`,
			tb.name, tb.cols[0], tb.cols[1], tb.cols[2], tb.key), id, r.a, r.b, r.c)
		if err != nil {
			return fmt.Errorf("update %s: %w", tb.name, err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("update %s %s=%d: %d rows affected", tb.name, tb.key, id, tag.RowsAffected())
		}
		mine[id] = r
		updates.Add(1)
	default: // delete
		id, ok := pick()
		if !ok {
			return nil
		}
		tag, err := conn.Exec(ctx, fmt.Sprintf(`DELETE FROM %s WHERE %s = $1`, tb.name, tb.key), id)
		if err != nil {
			return fmt.Errorf("delete from %s: %w", tb.name, err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("delete from %s %s=%d: %d rows affected", tb.name, tb.key, id, tag.RowsAffected())
		}
		delete(mine, id)
		deletes.Add(1)
	}
	return nil
}

// assertTableHolds checks that table tb holds exactly rows (key, a, b, c).
func assertTableHolds(t *testing.T, c *pgx.Conn, tb appTable, rows [][]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tmp := "expected_" + tb.name
	if _, err := c.Exec(ctx, fmt.Sprintf(`CREATE TEMP TABLE %s (k bigint, a text, b text, c jsonb)`, tmp)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CopyFrom(ctx, pgx.Identifier{tmp}, []string{"k", "a", "b", "c"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	sel := fmt.Sprintf(`SELECT %s, %s::text, %s::text, %s FROM %s`, tb.key, tb.cols[0], tb.cols[1], tb.cols[2], tb.name)
	if n := queryInt(t, c, fmt.Sprintf(`SELECT count(*) FROM (%s EXCEPT SELECT * FROM %s) x`, sel, tmp)); n != 0 {
		t.Errorf("%s: %d rows differ from what the application last wrote (or should not exist)", tb.name, n)
		logQuery(t, c, fmt.Sprintf(`(%s EXCEPT SELECT * FROM %s) LIMIT 5`, sel, tmp))
	}
	if n := queryInt(t, c, fmt.Sprintf(`SELECT count(*) FROM (SELECT * FROM %s EXCEPT %s) x`, tmp, sel)); n != 0 {
		t.Errorf("%s: %d rows the application wrote are missing or changed", tb.name, n)
		logQuery(t, c, fmt.Sprintf(`(SELECT * FROM %s EXCEPT %s) LIMIT 5`, tmp, sel))
	}
	if n := queryInt(t, c, `SELECT count(*) FROM `+tb.name); n != int64(len(rows)) {
		t.Errorf("%s has %d rows, the application expects %d", tb.name, n, len(rows))
	}
}
