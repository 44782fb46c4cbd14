package pgphi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/search"
	"github.com/pgphi/pgphi/keys"
)

// 600 patients over 12 last names: the rows planner of earlier versions gave
// such a column many bits (one distinct value per term), distinct-value
// sizing gives a few.
const reindexDDL = `CREATE TABLE public.patient (uid text PRIMARY KEY, last_name text, date_of_birth date, phone text, visits int);
INSERT INTO public.patient SELECT 'P' || g, (ARRAY['Smith','Smyth','Jones','Garcia','Nguyen','Kim','Brown','Lee','Patel','Martin','Lopez','Schmidt'])[1 + g % 12],
	NULL, NULL, g FROM generate_series(1, 600) g;`

const reindexConfig = `version: 1
apply: { chunk_rows: 100, batch_size: 25, workers: 1 }
tables:
  patient:
    columns:
      last_name:     { class: pii, search: [exact, prefix, phonetic] }
      date_of_birth: { class: pii, search: [date] }
      phone:         { class: pii, search: [phone] }
      visits:        { class: phi }
`

// reindexFixture applies the table with last_name sized as the rows planner
// of earlier versions sized it (24 bits a family, sizing 'rows').
func reindexFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f, err := prepareFixture(ctx, pgtest.NewDatabase(t), t.TempDir(), reindexDDL, reindexConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	for _, c := range f.plan.Tables[0].Columns {
		if c.Name != "last_name" {
			continue
		}
		for _, sub := range c.SubKinds() {
			if _, err := f.pool.Exec(ctx, `INSERT INTO pgphi.blind_indexes (table_name, column_name, sub_kind, bits, key_id, rows_planned, sizing)
				VALUES ('public.patient', 'last_name', $1, 24, $2, 600, 'rows')`, string(sub), int32(f.ring.ActiveKeyID())); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

func lastNameLeakage(t *testing.T, f *fixture) engine.ColumnLeakage {
	t.Helper()
	ls, err := engine.MeasureLeakage(context.Background(), f.pool, f.ring, f.plan, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.Column == "last_name" {
			return l
		}
	}
	t.Fatal("no leakage measured for last_name")
	return engine.ColumnLeakage{}
}

var reindexQueries = []pgphi.Query{
	{Kind: blindindex.QExact, Value: "smith"},
	{Kind: blindindex.QExact, Value: "GARCIA"},
	{Kind: blindindex.QPrefix, Value: "smy"},
	{Kind: blindindex.QPrefix, Value: "lop"},
	{Kind: blindindex.QPhonetic, Value: "Smith"},
	{Kind: blindindex.QPhonetic, Value: "Nguyen"},
}

// answers runs every query through the application API.
func answers(t *testing.T, client *pgphi.Client) map[string][]pgphi.Key {
	t.Helper()
	out := map[string][]pgphi.Key{}
	for _, q := range reindexQueries {
		keys, err := client.Find(context.Background(), "patient", "last_name", q, "test")
		if err != nil {
			t.Fatalf("%s %s: %v", q.Kind, q.Value, err)
		}
		out[string(q.Kind)+" "+q.Value] = keys
	}
	return out
}

func sameAnswers(t *testing.T, when string, want, got map[string][]pgphi.Key) {
	t.Helper()
	for q, w := range want {
		g := got[q]
		if fmt.Sprint(w) != fmt.Sprint(g) {
			t.Errorf("%s: %s: %d keys, want %d (%v vs %v)", when, q, len(g), len(w), g, w)
		}
	}
}

// write inserts or updates a row of patient with the assignments.
func write(ctx context.Context, pool *pgxpool.Pool, uid string, a pgphi.Assignments, update bool) error {
	if !update {
		return insert(ctx, pool, uid, a)
	}
	var sets []string
	args := []any{uid}
	for _, c := range a.Columns() {
		args = append(args, a[c])
		sets = append(sets, fmt.Sprintf("%s = $%d", c, len(args)))
	}
	_, err := pool.Exec(ctx, "UPDATE public.patient SET "+strings.Join(sets, ", ")+" WHERE uid = $1", args...)
	return err
}

// A column sized by the old planner breaks the leakage budget in
// production. reindex re-sizes it by distinct values while an application
// writes (plaintext before require_encryption, then ciphertext through the
// API, and a writer that leaves the new generation out); it is interrupted
// half-way and resumed. Search answers exactly the same before, while
// interrupted and after; every row written meanwhile is found; verify
// passes; the leakage budget holds without accept_leakage.
func TestReindexResizesWhileApplicationWrites(t *testing.T) {
	ctx := context.Background()
	f := reindexFixture(t)
	if l := lastNameLeakage(t, f); !l.Below() || l.Sizing != engine.SizedByRows {
		t.Fatalf("before: last_name sized by %s, min %.2f: want the rows planner below the budget", l.Sizing, l.Min())
	}
	pool := appPool(t, f.url)
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	// Before require_encryption: a plaintext write (marked, not caught up)
	// and one through the API.
	if _, err := pool.Exec(ctx, `INSERT INTO public.patient (uid, last_name) VALUES ('W1', 'Smith')`); err != nil {
		t.Fatal(err)
	}
	a, err := client.Row(ctx, "patient", pgphi.Key{"uid": "W2"}, map[string]any{"last_name": "Smyth"})
	if err != nil {
		t.Fatal(err)
	}
	if err := insert(ctx, pool, "W2", a); err != nil {
		t.Fatal(err)
	}
	before := answers(t, client)
	var plainSmith []string
	rows, _ := f.pool.Query(ctx, `SELECT uid FROM public.patient WHERE last_name = 'Smith' ORDER BY uid`)
	for rows.Next() {
		var u string
		rows.Scan(&u)
		plainSmith = append(plainSmith, u)
	}
	if len(before["exact smith"]) != len(plainSmith) || len(plainSmith) != 51 {
		t.Fatalf("before: exact smith finds %d rows, the plaintext has %d", len(before["exact smith"]), len(plainSmith))
	}
	if err := engine.SetFlag(ctx, f.pool, engine.FlagRequireEncryption, true); err != nil {
		t.Fatal(err)
	}

	// The application writes throughout: new rows and renamed rows, each
	// under a name of its own (the queries' answers do not change).
	var written sync.Map // uid -> name
	var n atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sawNext atomic.Bool
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			uid, update := fmt.Sprintf("N%d", i), false
			if i%2 == 1 && i/2 < 38 {
				// Patients P31, P43, ... are Patels: in no query's answer.
				uid, update = fmt.Sprintf("P%d", 12*(i/2+2)+7), true
			}
			name := []string{"Wong", "Wood", "Ward", "West"}[i%4]
			for {
				a, err := client.Row(ctx, "patient", pgphi.Key{"uid": uid}, map[string]any{"last_name": name})
				if err != nil {
					t.Error(err)
					return
				}
				if _, ok := a["last_name_bidx_next"]; ok {
					sawNext.Store(true)
				}
				err = write(ctx, pool, uid, a, update)
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == "42703" {
					// The switch dropped the column the assignments
					// named: seal again under the new metadata.
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				break
			}
			written.Store(uid, name)
			n.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	})

	// Interrupted half-way through the chunks.
	rctx, cancel := context.WithCancel(ctx)
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard, Throttle: &engine.Throttle{MaxRate: 500}}
	done := make(chan error, 1)
	go func() {
		_, err := r.Reindex(rctx, engine.ReindexOptions{Table: "patient", Column: "last_name", Resize: true})
		done <- err
	}()
	for deadline := time.Now().Add(60 * time.Second); ; {
		var d int64
		f.pool.QueryRow(ctx, `SELECT COALESCE(sum(rows_done), 0) FROM pgphi.chunks WHERE table_name LIKE '%#reindex:last_name:2'`).Scan(&d)
		if d >= 200 {
			break
		}
		select {
		case err := <-done:
			close(stop)
			wg.Wait()
			t.Fatalf("the reindex ended before it was interrupted: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			t.Fatal("the reindex did not progress")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted reindex: %v", err)
	}
	var building, unfilled int
	f.pool.QueryRow(ctx, `SELECT count(*) FROM pgphi.blind_indexes WHERE column_name = 'last_name' AND state = 'building' AND generation = 2`).Scan(&building)
	f.pool.QueryRow(ctx, `SELECT count(*) FROM public.patient WHERE last_name_bidx_next IS NULL`).Scan(&unfilled)
	if building == 0 || unfilled == 0 {
		t.Fatalf("interrupted: %d building families, %d rows without the new terms", building, unfilled)
	}
	// A writer that leaves the new generation out (written before the
	// reindex existed): its row's stale next-generation terms are cleared.
	a, err = client.Row(ctx, "patient", pgphi.Key{"uid": "P19"}, map[string]any{"last_name": "Stale"})
	if err != nil {
		t.Fatal(err)
	}
	delete(a, "last_name_bidx_next")
	if err := write(ctx, pool, "P19", a, true); err != nil {
		t.Fatal(err)
	}
	written.Store("P19", "Stale")
	sameAnswers(t, "interrupted", before, answers(t, client))
	// Search reads both generations meanwhile.
	s, err := search.New(ctx, f.pool, f.ring, f.plan)
	if err != nil {
		t.Fatal(err)
	}
	if q, _, err := s.CandidateQuery("patient", "last_name", reindexQueries[0]); err != nil || !strings.Contains(q, `"last_name_bidx_next" OPERATOR`) || !strings.Contains(q, `"last_name_bidx" OPERATOR`) {
		t.Fatalf("candidate query while reindexing: %s %v", q, err)
	}

	// Resumed to the end.
	r = &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	res, err := r.Reindex(ctx, engine.ReindexOptions{Table: "patient", Column: "last_name", Resize: true})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // a few writes after the switch
	close(stop)
	wg.Wait()
	if len(res) != 1 || res[0].From != 1 || res[0].To != 2 || !res[0].Switched || res[0].Rows < 600 {
		t.Fatalf("reindex: %+v", res)
	}
	if !sawNext.Load() || n.Load() < 5 {
		t.Fatalf("the application wrote %d rows, both generations: %v", n.Load(), sawNext.Load())
	}
	sameAnswers(t, "after", before, answers(t, client))
	byName := map[string][]string{}
	written.Range(func(k, v any) bool {
		byName[v.(string)] = append(byName[v.(string)], k.(string))
		return true
	})
	for name, uids := range byName {
		got, err := client.Find(ctx, "patient", "last_name", pgphi.Query{Kind: blindindex.QExact, Value: name}, "test")
		if err != nil {
			t.Fatal(err)
		}
		var found []string
		for _, k := range got {
			found = append(found, k["uid"])
		}
		slices.Sort(found)
		slices.Sort(uids)
		if !slices.Equal(found, uids) {
			t.Errorf("written as %s: %v, found %v", name, uids, found)
		}
	}

	// The column and the metadata: one generation, sized by distinct values.
	var cols, gens int
	f.pool.QueryRow(ctx, `SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attname LIKE 'last_name_bidx%' AND NOT attisdropped`).Scan(&cols)
	f.pool.QueryRow(ctx, `SELECT count(*) FROM pgphi.blind_indexes WHERE column_name = 'last_name' AND (state <> 'active' OR generation <> 2 OR sizing <> 'distinct')`).Scan(&gens)
	if cols != 1 || gens != 0 {
		t.Fatalf("after the switch: %d term columns, %d families not active distinct generation 2", cols, gens)
	}
	var idx int
	f.pool.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE tablename = 'patient' AND indexdef LIKE '%gin (last_name_bidx)%'`).Scan(&idx)
	if idx != 1 {
		t.Fatalf("%d GIN indexes on last_name_bidx", idx)
	}
	if err := (&engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}).Apply(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0)
	if err != nil || !v.OK() {
		t.Fatalf("verify after reindex: %+v %v", v, err)
	}
	if l := lastNameLeakage(t, f); l.Below() || l.Sizing != engine.SizedByDistinct {
		t.Fatalf("after: last_name sized by %s, min %.2f", l.Sizing, l.Min())
	}
}

// --new-key moves the terms to the active data key after a rotation: the
// stored terms of a value change, search stays exact, and the terms
// recorded with the old key no longer match any query.
func TestReindexNewKey(t *testing.T) {
	ctx := context.Background()
	f := reindexFixture(t)
	pool := appPool(t, f.url)
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	before := answers(t, client)
	var oldTerms []int64
	f.pool.QueryRow(ctx, `SELECT last_name_bidx FROM public.patient WHERE uid = 'P1'`).Scan(&oldTerms)
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	if _, err := r.Reindex(ctx, engine.ReindexOptions{Table: "patient", Column: "last_name", NewKey: true}); !errors.Is(err, engine.ErrReindex) {
		t.Fatalf("new key without a rotation: %v", err)
	}
	newID, err := keys.Rotate(ctx, f.pool, keys.KeyFileProvider(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if f.ring, err = keys.Load(ctx, f.pool, keys.KeyFileProvider(f.keyFile)); err != nil {
		t.Fatal(err)
	}
	r.Keys = f.ring
	res, err := r.Reindex(ctx, engine.ReindexOptions{Table: "patient", Column: "last_name", NewKey: true})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].KeyTo != newID || res[0].KeyFrom == newID {
		t.Fatalf("reindex: %+v", res[0])
	}
	var newTerms []int64
	var keyIDs []int32
	f.pool.QueryRow(ctx, `SELECT last_name_bidx FROM public.patient WHERE uid = 'P1'`).Scan(&newTerms)
	f.pool.QueryRow(ctx, `SELECT array_agg(DISTINCT key_id) FROM pgphi.blind_indexes WHERE column_name = 'last_name'`).Scan(&keyIDs)
	if len(keyIDs) != 1 || uint32(keyIDs[0]) != newID {
		t.Fatalf("key ids of last_name's families: %v, want [%d]", keyIDs, newID)
	}
	// Same bits (no --resize), other key: no term in common.
	for _, x := range oldTerms {
		if slices.Contains(newTerms, x) {
			t.Fatalf("term %d of the old key is still stored", x)
		}
	}
	var stale int
	f.pool.QueryRow(ctx, `SELECT count(*) FROM public.patient WHERE last_name_bidx && $1`, oldTerms).Scan(&stale)
	if stale != 0 {
		t.Fatalf("%d rows still carry the old key's terms of P1's value", stale)
	}
	// An application opens its client again after a rotation (its keyring
	// has no key that was not there when it opened).
	client.Close()
	if client, err = pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile)); err != nil {
		t.Fatal(err)
	}
	sameAnswers(t, "after the new key", before, answers(t, client))
	v, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0)
	if err != nil || !v.OK() {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// A reindex in progress holds cleanup back (its trigger reads the
// plaintext), and a rollback removes it with everything else: no next
// column, trigger or function is left on the table.
func TestReindexInProgressCleanupAndRollback(t *testing.T) {
	ctx := context.Background()
	f := reindexFixture(t)
	rctx, cancel := context.WithCancel(ctx)
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard, Throttle: &engine.Throttle{MaxRate: 300}}
	done := make(chan error, 1)
	go func() {
		_, err := r.Reindex(rctx, engine.ReindexOptions{Table: "patient", Column: "last_name", Resize: true})
		done <- err
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		var d int64
		f.pool.QueryRow(ctx, `SELECT COALESCE(sum(rows_done), 0) FROM pgphi.chunks WHERE table_name LIKE '%#reindex:%'`).Scan(&d)
		if d > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reindex did not progress")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	// A plaintext write meanwhile clears the row's next terms with the
	// others; apply's catch-up writes both generations again.
	if _, err := f.pool.Exec(ctx, `UPDATE public.patient SET last_name = 'Okafor' WHERE uid IN ('P1', 'P599')`); err != nil {
		t.Fatal(err)
	}
	var cleared int
	f.pool.QueryRow(ctx, `SELECT count(*) FROM public.patient WHERE uid IN ('P1', 'P599') AND last_name_bidx IS NULL AND last_name_bidx_next IS NULL AND pgphi_pending`).Scan(&cleared)
	if cleared != 2 {
		t.Fatalf("after a plaintext write: %d of 2 rows with both generations cleared", cleared)
	}
	if err := (&engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}).Apply(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := search.New(ctx, f.pool, f.ring, f.plan)
	if err != nil {
		t.Fatal(err)
	}
	want := s.NextIndexer("public.patient", "last_name").Terms(nil, "Okafor")
	for _, uid := range []string{"P1", "P599"} {
		var got []int64
		f.pool.QueryRow(ctx, `SELECT last_name_bidx_next FROM public.patient WHERE uid = $1`, uid).Scan(&got)
		if got == nil || !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
			t.Fatalf("%s after the catch-up: next terms %v, want %v", uid, got, want)
		}
	}
	// The reindex's trigger function: invoker's rights, pinned search_path,
	// not executable by PUBLIC, owned like the mark function; no other role
	// can attach it to a table of its own.
	var fn string
	var definer, public bool
	var config []string
	if err := f.pool.QueryRow(ctx, `SELECT p.oid::regprocedure::text, p.prosecdef, has_function_privilege('public', p.oid, 'EXECUTE'), p.proconfig
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgphi' AND p.proname LIKE 'reindex\_%'`).Scan(&fn, &definer, &public, &config); err != nil {
		t.Fatal(err)
	}
	if definer || public || !slices.Contains(config, "search_path=pg_catalog, pg_temp") {
		t.Fatalf("%s: security definer %v, executable by PUBLIC %v, config %v", fn, definer, public, config)
	}
	actors := pgtest.NewActors(t, f.url)
	for _, role := range []string{actors.DBA, actors.HealthcareAdmin, actors.AuditOfficer, actors.AppOwner, actors.AppWriter, actors.Outsider} {
		c := actors.Connect(t, role)
		if _, err := c.Exec(ctx, `CREATE TEMP TABLE mine (last_name text, last_name_encrypted bytea, last_name_bidx_next bigint[])`); err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		_, err := c.Exec(ctx, `CREATE TRIGGER steal BEFORE UPDATE ON mine FOR EACH ROW EXECUTE FUNCTION `+fn)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s attaching %s to its own table: %v, want permission denied", role, fn, err)
		}
	}
	for _, flag := range []string{engine.FlagUseEncryptedSearch, engine.FlagRequireEncryption} {
		if err := engine.SetFlag(ctx, f.pool, flag, true); err != nil {
			t.Fatal(err)
		}
	}
	r = &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	err = r.Cleanup(ctx, f.plan.ID, engine.CleanupOptions{Purge: "vacuum-full"})
	if !errors.Is(err, engine.ErrRefused) || !strings.Contains(err.Error(), "reindex of public.patient.last_name is under way") {
		t.Fatalf("cleanup during a reindex: %v", err)
	}
	for _, flag := range []string{engine.FlagUseEncryptedSearch, engine.FlagRequireEncryption} {
		if err := engine.SetFlag(ctx, f.pool, flag, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var left int
	f.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attname LIKE '%bidx%' AND NOT attisdropped)
		+ (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.patient'::regclass)
		+ (SELECT count(*) FROM pg_proc WHERE proname LIKE 'reindex_%')
		+ (SELECT count(*) FROM pgphi.chunks) + (SELECT count(*) FROM pgphi.blind_indexes)`).Scan(&left)
	if left != 0 {
		t.Fatalf("%d objects of the reindex left after rollback", left)
	}
}

// A next-generation term that does not match its value (written by a
// faulty writer) fails the verification before the switch, naming the row;
// nothing is switched, and once the row is cleared the reindex completes.
func TestReindexVerifiesBeforeTheSwitch(t *testing.T) {
	ctx := context.Background()
	f := reindexFixture(t)
	rctx, cancel := context.WithCancel(ctx)
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard, Throttle: &engine.Throttle{MaxRate: 300}}
	done := make(chan error, 1)
	go func() {
		_, err := r.Reindex(rctx, engine.ReindexOptions{Table: "patient", Column: "last_name", Resize: true})
		done <- err
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		var n int
		f.pool.QueryRow(ctx, `SELECT count(*) FROM public.patient WHERE uid = 'P1' AND last_name_bidx_next IS NOT NULL`).Scan(&n)
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("P1 did not get its next terms")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if _, err := f.pool.Exec(ctx, `UPDATE public.patient SET last_name_bidx_next = '{12345}' WHERE uid = 'P1'`); err != nil {
		t.Fatal(err)
	}
	r = &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	_, err := r.Reindex(ctx, engine.ReindexOptions{Table: "patient", Column: "last_name"})
	var rowErr *engine.TermsError
	if !errors.As(err, &rowErr) || rowErr.Column != "last_name" || fmt.Sprint(rowErr.Key) != "[P1]" {
		t.Fatalf("resumed over a wrong term: %v", err)
	}
	var building int
	f.pool.QueryRow(ctx, `SELECT count(*) FROM pgphi.blind_indexes WHERE state = 'building'`).Scan(&building)
	if building == 0 {
		t.Fatal("switched despite the failed verification")
	}
	if _, err := f.pool.Exec(ctx, `UPDATE public.patient SET last_name_bidx_next = NULL WHERE uid = 'P1'`); err != nil {
		t.Fatal(err)
	}
	if res, err := r.Reindex(ctx, engine.ReindexOptions{Table: "patient", Column: "last_name"}); err != nil || !res[0].Switched {
		t.Fatalf("after clearing the row: %+v %v", res, err)
	}
}

// After cleanup there is no plaintext and no trigger of pgphi's but the
// reindex's own: the new terms come from the decrypted ciphertexts, a
// writer that leaves them out is still caught, and search answers the same.
func TestReindexAfterCleanup(t *testing.T) {
	ctx := context.Background()
	f := reindexFixture(t)
	pool := appPool(t, f.url)
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, flag := range engine.FlagNames {
		if err := engine.SetFlag(ctx, f.pool, flag, true); err != nil {
			t.Fatal(err)
		}
	}
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	if err := r.Cleanup(ctx, f.plan.ID, engine.CleanupOptions{Purge: "vacuum-full"}); err != nil {
		t.Fatal(err)
	}
	// A new process's plan: the cleaned columns from pgphi's state.
	cleaned, err := engine.LoadCleaned(ctx, f.pool)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := catalog.Resolve(ctx, f.pool, f.cfg, cleaned)
	if err != nil {
		t.Fatal(err)
	}
	if f.plan, err = engine.NewPlan(f.cfg, tables); err != nil {
		t.Fatal(err)
	}
	before := answers(t, client)
	rctx, cancel := context.WithCancel(ctx)
	r = &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard, Throttle: &engine.Throttle{MaxRate: 300}}
	done := make(chan error, 1)
	go func() {
		_, err := r.Reindex(rctx, engine.ReindexOptions{Table: "patient", Column: "last_name", Resize: true})
		done <- err
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		var n int
		f.pool.QueryRow(ctx, `SELECT count(*) FROM public.patient WHERE uid = 'P1' AND last_name_bidx_next IS NOT NULL`).Scan(&n)
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("P1 did not get its next terms")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	// A writer that leaves the next generation out.
	a, err := client.Row(ctx, "patient", pgphi.Key{"uid": "P1"}, map[string]any{"last_name": "Okafor"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a["last_name_bidx_next"]; !ok {
		t.Fatalf("assignments while reindexing after cleanup: %v", a.Columns())
	}
	delete(a, "last_name_bidx_next")
	if err := write(ctx, pool, "P1", a, true); err != nil {
		t.Fatal(err)
	}
	var cleared int
	f.pool.QueryRow(ctx, `SELECT count(*) FROM public.patient WHERE uid = 'P1' AND last_name_bidx_next IS NULL`).Scan(&cleared)
	if cleared != 1 {
		t.Fatal("the next terms of a rewritten value were not cleared")
	}
	r = &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	if _, err := r.Reindex(ctx, engine.ReindexOptions{Table: "patient", Column: "last_name", Resize: true}); err != nil {
		t.Fatal(err)
	}
	// P1 was a Smith: the answers lose it and the new name finds it.
	for q, keys := range before {
		before[q] = slices.DeleteFunc(keys, func(k pgphi.Key) bool { return k["uid"] == "P1" })
	}
	sameAnswers(t, "after", before, answers(t, client))
	got, err := client.Find(ctx, "patient", "last_name", pgphi.Query{Kind: blindindex.QExact, Value: "okafor"}, "test")
	if err != nil || fmt.Sprint(got) != "[map[uid:P1]]" {
		t.Fatalf("okafor: %v %v", got, err)
	}
	v, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0)
	if err != nil || !v.OK() {
		t.Fatalf("verify: %+v %v", v, err)
	}
}
