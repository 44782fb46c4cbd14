package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/state"
	"github.com/pgphi/pgphi/keys"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type fixture struct {
	pool   *pgxpool.Pool
	cfg    *config.Config
	plan   *Plan
	ring   *keys.Keyring
	runner *Runner
	log    *strings.Builder
	kek    string // the key file the KEK was read from
}

// setup creates a database with ddl, loads cfgYAML against it, and initializes keys.
func setup(t *testing.T, ddl, cfgYAML string) *fixture {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	pool, err := dbconn.Open(ctx, url, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	// The application's schema is made by the application (default
	// search_path), not in pgphi's session (search_path pg_catalog, pg_temp).
	if _, err := pgtest.Connect(t, url).Exec(ctx, ddl); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("pgphi.yaml", []byte(cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{pool: pool, cfg: cfg, log: &strings.Builder{}}
	f.replan(t)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.Ensure(ctx, conn); err != nil {
		t.Fatal(err)
	}
	conn.Release()
	keyFile := filepath.Join(t.TempDir(), "kek")
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(keyFile, k, 0o600); err != nil {
		t.Fatal(err)
	}
	f.kek = keyFile
	provider := keys.KeyFileProvider(keyFile)
	if _, err := keys.Init(ctx, pool, provider); err != nil {
		t.Fatal(err)
	}
	if f.ring, err = keys.Load(ctx, pool, provider); err != nil {
		t.Fatal(err)
	}
	f.runner = &Runner{Pool: pool, Keys: f.ring, Config: cfg, Plan: f.plan, Log: &syncWriter{b: f.log}}
	return f
}

func (f *fixture) replan(t *testing.T) { f.replanWith(t, nil) }

func (f *fixture) replanWith(t *testing.T, cleaned map[string]catalog.Cleaned) {
	t.Helper()
	tables, err := catalog.Resolve(context.Background(), f.pool, f.cfg, cleaned)
	if err != nil {
		t.Fatal(err)
	}
	if f.plan, err = NewPlan(f.cfg, tables); err != nil {
		t.Fatal(err)
	}
	if f.runner != nil {
		f.runner.Plan = f.plan
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (f *fixture) apply(t *testing.T) {
	t.Helper()
	if err := f.runner.Apply(context.Background()); err != nil {
		t.Fatalf("apply: %v\nlog:\n%s", err, f.log.String())
	}
}

func (f *fixture) verify(t *testing.T) *VerifyResult {
	t.Helper()
	res, err := Verify(context.Background(), f.pool, f.ring, f.plan, 97)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// decryptAll reads every row's key, plaintext text and ciphertext of column col
// and checks the ciphertext decrypts to the plaintext, independently of Verify.
func (f *fixture) decryptAll(t *testing.T, table, col string) (rows, values int) {
	t.Helper()
	tg := f.plan.Tables[0]
	for _, x := range f.plan.Tables {
		if x.QualifiedName() == table {
			tg = x
		}
	}
	var vt envelope.ValueType
	for _, c := range tg.Columns {
		if c.Name == col {
			vt = c.ValueType
		}
	}
	keyExpr := make([]string, len(tg.PrimaryKey))
	for i, k := range tg.PrimaryKey {
		keyExpr[i] = ident(k.Name) + "::text"
	}
	q := fmt.Sprintf("SELECT ARRAY[%s], %s::text, %s FROM %s", strings.Join(keyExpr, ","), ident(col), ident(col+"_encrypted"), tg.Ident())
	r, err := f.pool.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	op := f.ring.Opener(table, col)
	for r.Next() {
		var key []string
		var pt *string
		var ct []byte
		if err := r.Scan(&key, &pt, &ct); err != nil {
			t.Fatal(err)
		}
		rows++
		if pt == nil {
			if ct != nil {
				t.Fatalf("%s.%s %v: NULL plaintext has a ciphertext", table, col, key)
			}
			continue
		}
		if ct == nil {
			t.Fatalf("%s.%s %v: plaintext without ciphertext", table, col, key)
		}
		v, err := op.Open(ct, envelope.Binding{Table: table, Column: col, PrimaryKey: key})
		if err != nil {
			t.Fatalf("%s.%s %v: %v", table, col, key, err)
		}
		if v.Text != *pt || v.Type != vt {
			t.Fatalf("%s.%s %v: decrypted %v/%q, want %v/%q", table, col, key, v.Type, v.Text, vt, *pt)
		}
		values++
	}
	return rows, values
}

const typesDDL = `
CREATE TABLE public.lab (
  site text NOT NULL, id int NOT NULL,
  name text, code varchar(20), born date, seen timestamptz, at timestamp,
  amount numeric(10,2), visits integer, consent boolean, vitals jsonb, extra json,
  PRIMARY KEY (site, id));
INSERT INTO public.lab
SELECT CASE WHEN g % 3 = 0 THEN 'north' ELSE 'south' END, g,
  CASE WHEN g % 10 = 0 THEN NULL WHEN g % 10 = 1 THEN '' ELSE 'José O''Brien-Müller 王伟 ' || g END,
  CASE WHEN g % 7 = 0 THEN NULL ELSE 'C-' || g END,
  CASE WHEN g % 11 = 0 THEN NULL ELSE date '2000-02-29' + g END,
  timestamptz '2024-03-10 01:59:59.123456+00' + g * interval '1 hour',
  timestamp '1999-12-31 23:59:59' + g * interval '1 minute',
  CASE WHEN g % 5 = 0 THEN NULL ELSE g * 1.5 END,
  g, g % 2 = 0,
  CASE WHEN g % 4 = 0 THEN NULL ELSE jsonb_build_object('bp', jsonb_build_object('sys', 120 + g % 9), 'note', 'ok "quoted"') END,
  CASE WHEN g % 6 = 0 THEN NULL ELSE ('{"referral": "GP",  "urgent":false, "n": ' || g || '}')::json END
FROM generate_series(1, 1003) g;`

const typesConfig = `version: 1
apply: { batch_size: 100, chunk_rows: 250, workers: 3 }
tables:
  lab:
    columns:
      name: { class: pii }
      code: { class: pii }
      born: { class: pii }
      seen: { class: phi }
      at: { class: phi }
      amount: { class: phi }
      visits: { class: phi }
      consent: { class: phi }
      vitals: { class: phi }
      extra: { class: phi }
`

func TestApplyEncryptsEveryRowOfEveryType(t *testing.T) {
	f := setup(t, typesDDL, typesConfig)
	if len(f.plan.Tables[0].PrimaryKey) != 2 {
		t.Fatalf("composite key not resolved: %+v", f.plan.Tables[0].PrimaryKey)
	}
	f.apply(t)
	for _, c := range f.plan.Tables[0].Columns {
		rows, _ := f.decryptAll(t, "public.lab", c.Name)
		if rows != 1003 {
			t.Fatalf("%s: %d rows", c.Name, rows)
		}
	}
	// Empty strings are values, not NULLs: they have ciphertexts.
	var empties int
	f.pool.QueryRow(context.Background(), "SELECT count(*) FROM public.lab WHERE name = '' AND name_encrypted IS NOT NULL").Scan(&empties)
	if empties != 101 {
		t.Fatalf("empty strings encrypted: %d, want 101", empties)
	}
	// json keeps its exact text, odd spacing included.
	var extra string
	f.pool.QueryRow(context.Background(), "SELECT extra::text FROM public.lab WHERE id = 1").Scan(&extra)
	if !strings.Contains(extra, `"GP",  "urgent"`) {
		t.Fatalf("fixture json lost its spacing: %s", extra)
	}
	if res := f.verify(t); !res.OK() || res.Rows != 1003 || res.Values != 10030 {
		t.Fatalf("verify: %+v", res)
	}
	// Every chunk finished, and the rows done add up to the table.
	var done, open int64
	f.pool.QueryRow(context.Background(), "SELECT sum(rows_done), count(*) FILTER (WHERE NOT done) FROM pgphi.chunks").Scan(&done, &open)
	if done != 1003 || open != 0 {
		t.Fatalf("chunks: %d rows done, %d open", done, open)
	}
	// A second apply is a no-op that still verifies.
	f.apply(t)
	st, err := GetStatus(context.Background(), f.pool, f.plan)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Columns {
		if c.Encrypted+c.Null != c.Total || c.Pending != 0 || c.Failed != 0 {
			t.Fatalf("status %+v", c)
		}
	}
	if !st.Complete {
		t.Fatal("status not complete")
	}
}

func TestBatchSizesThatDoNotDivideTheTable(t *testing.T) {
	for _, n := range []int{0, 1, 99, 100, 101, 257} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			f := setup(t, fmt.Sprintf(`CREATE TABLE public.p (uid varchar PRIMARY KEY, nm text);
				INSERT INTO public.p SELECT 'u' || g, CASE WHEN g %% 4 = 0 THEN NULL ELSE 'n' || g END FROM generate_series(1, %d) g;`, n),
				"version: 1\napply: { batch_size: 10, chunk_rows: 33 }\ntables:\n  p:\n    columns:\n      nm: { class: pii }\n")
			f.apply(t)
			rows, values := f.decryptAll(t, "public.p", "nm")
			if rows != n || values != n-n/4 {
				t.Fatalf("rows %d values %d", rows, values)
			}
		})
	}
}

func TestTriggerKeepsCiphertextsHonest(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `CREATE TABLE public.p (uid varchar PRIMARY KEY, nm text, other int);
		INSERT INTO public.p SELECT 'u' || g, 'n' || g, g FROM generate_series(1, 50) g;`,
		"version: 1\ntables:\n  p:\n    columns:\n      nm: { class: pii }\n")
	f.apply(t)
	exec := func(sql string) {
		t.Helper()
		if _, err := f.pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	state := func(uid string) (hasCT bool, pending *bool) {
		t.Helper()
		if err := f.pool.QueryRow(ctx, "SELECT nm_encrypted IS NOT NULL, pgphi_pending FROM public.p WHERE uid = $1", uid).Scan(&hasCT, &pending); err != nil {
			t.Fatal(err)
		}
		return
	}
	counter := func() float64 {
		t.Helper()
		n, err := WriteCounter(ctx, f.runner)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := counter()
	exec("UPDATE public.p SET other = 0 WHERE uid = 'u1'")
	if ct, pend := state("u1"); !ct || (pend != nil && *pend) {
		t.Fatal("an update of an unprotected column disturbed the ciphertext")
	}
	// Writes are counted per statement, whatever they touch: cleanup needs
	// to know that something was written after the last verification.
	exec("UPDATE public.p SET other = other + 1")
	if got := counter() - before; got != 2 {
		t.Fatalf("two writing statements advanced the write counter by %v", got)
	}
	// A ciphertext written without a plaintext change (as pgphi's backfill
	// and a cut-over application do) does not mark the row.
	exec("UPDATE public.p SET nm_encrypted = nm_encrypted WHERE uid = 'u1'")
	if ct, pend := state("u1"); !ct || (pend != nil && *pend) {
		t.Fatal("rewriting the ciphertext alone marked the row or cleared the ciphertext")
	}
	exec("UPDATE public.p SET nm = 'changed' WHERE uid = 'u2'")
	if ct, pend := state("u2"); ct || pend == nil || !*pend {
		t.Fatal("a plaintext update did not clear the stale ciphertext and mark the row")
	}
	exec("UPDATE public.p SET uid = 'u3-renamed' WHERE uid = 'u3'")
	if ct, pend := state("u3-renamed"); ct || !*pend {
		t.Fatal("a key change did not clear the ciphertext bound to the old key")
	}
	exec("INSERT INTO public.p VALUES ('u99', 'new', 1)")
	if ct, pend := state("u99"); ct || !*pend {
		t.Fatal("an insert was not marked")
	}
	if res := f.verify(t); res.Pending != 3 || res.Mismatches != 0 {
		t.Fatalf("verify before catch-up: %+v", res)
	}
	f.apply(t)
	f.decryptAll(t, "public.p", "nm")
	var got string
	f.pool.QueryRow(ctx, "SELECT nm_encrypted FROM public.p WHERE uid = 'u2'").Scan(new([]byte))
	var ct []byte
	f.pool.QueryRow(ctx, "SELECT nm_encrypted FROM public.p WHERE uid = 'u2'").Scan(&ct)
	v, err := f.ring.Opener("public.p", "nm").Open(ct, envelope.Binding{Table: "public.p", Column: "nm", PrimaryKey: []string{"u2"}})
	if got = v.Text; err != nil || got != "changed" {
		t.Fatalf("u2 decrypts to %q, %v", got, err)
	}
}

func TestApplyWhileTheApplicationWrites(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `CREATE TABLE public.p (uid varchar PRIMARY KEY, nm text, note text);
		INSERT INTO public.p SELECT 'u' || lpad(g::text, 6, '0'), 'n' || g, 'note ' || g FROM generate_series(1, 20000) g;`,
		"version: 1\napply: { batch_size: 200, chunk_rows: 2000, workers: 2 }\ntables:\n  p:\n    columns:\n      nm: { class: pii }\n      note: { class: phi }\n")
	stop := make(chan struct{})
	var writes, failures atomic.Int64
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			conn, err := f.pool.Acquire(ctx)
			if err != nil {
				failures.Add(1)
				return
			}
			defer conn.Release()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				uid := fmt.Sprintf("u%06d", 1+(i*7919+w*104729)%20000)
				var err error
				switch i % 5 {
				case 0:
					_, err = conn.Exec(ctx, "UPDATE public.p SET nm = nm || 'x' WHERE uid = $1", uid)
				case 1:
					_, err = conn.Exec(ctx, "UPDATE public.p SET note = NULL WHERE uid = $1", uid)
				case 2:
					_, err = conn.Exec(ctx, "UPDATE public.p SET note = '' WHERE uid = $1", uid)
				case 3:
					_, err = conn.Exec(ctx, "INSERT INTO public.p VALUES ($1, 'new', 'n') ON CONFLICT (uid) DO UPDATE SET nm = 'upserted'", fmt.Sprintf("w%d-%d", w, i))
				case 4:
					_, err = conn.Exec(ctx, "DELETE FROM public.p WHERE uid = $1", fmt.Sprintf("w%d-%d", w, i-1))
				}
				if err != nil {
					failures.Add(1)
				}
				writes.Add(1)
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	err := f.runner.Apply(ctx)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if failures.Load() != 0 {
		t.Fatalf("%d application writes failed", failures.Load())
	}
	t.Logf("application wrote %d times during apply", writes.Load())
	f.apply(t) // what the writers changed after the last catch-up
	if res := f.verify(t); !res.OK() {
		t.Fatalf("verify: %+v", res)
	}
	f.decryptAll(t, "public.p", "nm")
	f.decryptAll(t, "public.p", "note")
}

func TestTamperingFailsVerificationAndNamesTheRow(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `CREATE TABLE public.p (uid varchar PRIMARY KEY, a text, b text);
		INSERT INTO public.p SELECT 'u' || g, 'a' || g, 'b' || g FROM generate_series(1, 30) g;`,
		"version: 1\ntables:\n  p:\n    columns:\n      a: { class: pii }\n      b: { class: pii }\n")
	f.apply(t)
	for _, sql := range []string{
		// swap two rows' ciphertexts
		`UPDATE public.p SET a_encrypted = CASE uid WHEN 'u1' THEN (SELECT a_encrypted FROM public.p WHERE uid = 'u2') ELSE (SELECT a_encrypted FROM public.p WHERE uid = 'u1') END WHERE uid IN ('u1', 'u2')`,
		// flip one bit
		`UPDATE public.p SET b_encrypted = set_bit(b_encrypted, 200, 1 - get_bit(b_encrypted, 200)) WHERE uid = 'u7'`,
		// copy a ciphertext to another column of the same row
		`UPDATE public.p SET b_encrypted = a_encrypted WHERE uid = 'u9'`,
	} {
		if _, err := f.pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	// The trigger must not have hidden the tampering by marking rows pending.
	res := f.verify(t)
	if res.Mismatches != 4 || res.Pending != 0 {
		t.Fatalf("verify found %d mismatches, %d pending; want 4, 0: %+v", res.Mismatches, res.Pending, res.Examples)
	}
	got := map[string]bool{}
	for _, m := range res.Examples {
		got[m.Column+"@"+m.Key[0]] = true
		if m.Problem != ProblemUndecrypt {
			t.Fatalf("problem %q", m.Problem)
		}
	}
	for _, want := range []string{"a@u1", "a@u2", "b@u7", "b@u9"} {
		if !got[want] {
			t.Fatalf("mismatch %s not reported; got %v", want, got)
		}
	}
}

func TestValueThatCannotBeEncryptedStopsTheRun(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `CREATE TABLE public.p (uid varchar PRIMARY KEY, nm text);
		INSERT INTO public.p SELECT 'u' || lpad(g::text, 4, '0'), 'n' || g FROM generate_series(1, 500) g;
		UPDATE public.p SET nm = repeat('x', 5000) WHERE uid = 'u0250';`,
		"version: 1\nencryption: { max_value_bytes: 1000 }\napply: { batch_size: 50, workers: 1 }\ntables:\n  p:\n    columns:\n      nm: { class: pii }\n")
	err := f.runner.Apply(ctx)
	var re *RowError
	if !errors.As(err, &re) {
		t.Fatalf("want RowError, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"public.p", "nm", "u0250", "max_value_bytes"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q does not name %q", msg, want)
		}
	}
	if strings.Contains(msg, "xxxxxxxx") {
		t.Fatal("error contains the value")
	}
	var nm string
	var ct []byte
	f.pool.QueryRow(ctx, "SELECT nm, nm_encrypted FROM public.p WHERE uid = 'u0250'").Scan(&nm, &ct)
	if len(nm) != 5000 || ct != nil {
		t.Fatalf("the failing row was changed: %d bytes plaintext, ciphertext %v", len(nm), ct != nil)
	}
	var nulls int
	f.pool.QueryRow(ctx, "SELECT count(*) FROM public.p WHERE nm IS NULL").Scan(&nulls)
	if nulls != 0 {
		t.Fatal("a plaintext became NULL")
	}
	st, _ := GetStatus(ctx, f.pool, f.plan)
	if st.Columns[0].Failed != 1 || len(st.Failures) != 1 || st.Failures[0].PrimaryKey[0] != "u0250" {
		t.Fatalf("failure not recorded: %+v", st)
	}
	// Fixing the value lets the run finish.
	f.pool.Exec(ctx, "UPDATE public.p SET nm = 'short' WHERE uid = 'u0250'")
	f.apply(t)
	f.decryptAll(t, "public.p", "nm")
	st, _ = GetStatus(ctx, f.pool, f.plan)
	if st.Columns[0].Failed != 0 {
		t.Fatal("old failure still counted after a successful run")
	}
}

// The batch writer's UPDATE must find rows by ctid, never by scanning the
// table: with the backfill's assignments, and with a plain one.
func TestBatchUpdateJoinsOnCtid(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `CREATE TABLE public.p (uid varchar PRIMARY KEY, nm text);
		INSERT INTO public.p SELECT 'u' || g, 'n' || g FROM generate_series(1, 20000) g; ANALYZE p;`,
		"version: 1\ntables:\n  p:\n    columns:\n      nm: { class: pii }\n")
	f.apply(t)
	tg := f.plan.Tables[0]
	w, err := f.runner.encryptWrite(tg, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	table, prepare, names := w.batchTable(tg)
	if _, err := tx.Exec(ctx, prepare); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{table}, names, pgx.CopyFromRows([][]any{})); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{updateSQL(tg, table, w.cols, w.also), updateSQL(tg, table, []batchColumn{{name: tg.Columns[0].Encrypted}}, nil)} {
		rows, err := tx.Query(ctx, "EXPLAIN "+q)
		if err != nil {
			t.Fatal(err)
		}
		lines, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		plan := strings.Join(lines, "\n")
		if !strings.Contains(plan, "Tid Scan") || strings.Contains(plan, "Seq Scan on p t") {
			t.Fatalf("batch update does not join on ctid:\n%s\n%s", q, plan)
		}
	}
}

// DDL never queues behind a long transaction: it gives up after lock_timeout,
// backs off and retries, and the application's own queries are not blocked
// behind a waiting ALTER TABLE for longer than that timeout.
func TestExpandRetriesWhenTheTableIsBusy(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `CREATE TABLE public.p (uid varchar PRIMARY KEY, nm text);
		INSERT INTO public.p SELECT 'u' || g, 'n' || g FROM generate_series(1, 100) g;`,
		"version: 1\napply: { lock_timeout: 100ms }\ntables:\n  p:\n    columns:\n      nm: { class: pii }\n")
	holder, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, "SELECT * FROM public.p LIMIT 1"); err != nil { // ACCESS SHARE until commit
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		time.Sleep(1500 * time.Millisecond)
		holder.Commit(ctx)
		close(released)
	}()
	// Meanwhile the application keeps reading: each read must finish quickly
	// even while pgphi waits for its lock.
	var slowest time.Duration
	appDone := make(chan struct{})
	go func() {
		defer close(appDone)
		for {
			select {
			case <-released:
				return
			default:
			}
			start := time.Now()
			if _, err := f.pool.Exec(ctx, "SELECT count(*) FROM public.p"); err != nil {
				t.Error(err)
				return
			}
			slowest = max(slowest, time.Since(start))
			time.Sleep(20 * time.Millisecond)
		}
	}()
	f.apply(t)
	<-appDone
	if !strings.Contains(f.log.String(), "table busy") {
		t.Fatalf("apply did not report retrying:\n%s", f.log.String())
	}
	if slowest > time.Second {
		t.Fatalf("an application read waited %s behind pgphi's DDL", slowest)
	}
	f.decryptAll(t, "public.p", "nm")
}
