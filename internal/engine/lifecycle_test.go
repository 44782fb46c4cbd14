package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/pgtest"
)

const lifecycleDDL = `
CREATE TABLE public.patient (
  uid varchar(36) PRIMARY KEY,
  mrn text NOT NULL UNIQUE,
  first_name text DEFAULT 'unknown' CHECK (first_name <> 'forbidden'),
  last_name varchar(80),
  dob date,
  notes text,
  vitals jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX patient_last_name_idx ON public.patient (last_name);
CREATE FUNCTION app_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.created_at := COALESCE(NEW.created_at, now()); RETURN NEW; END $$;
CREATE TRIGGER app_touch BEFORE INSERT ON public.patient FOR EACH ROW EXECUTE FUNCTION app_touch();
INSERT INTO public.patient (uid, mrn, first_name, last_name, dob, notes, vitals, created_at)
SELECT 'u' || lpad(g::text, 5, '0'), 'MRN' || g,
  CASE WHEN g % 9 = 0 THEN NULL ELSE 'first' || g END,
  -- a value common enough to land in pg_stats.most_common_vals
  CASE WHEN g % 3 = 0 THEN 'Zzcanarymcvq' ELSE 'last' || g END,
  date '1950-01-01' + g,
  CASE WHEN g = 77 THEN 'Zzcanarytoastq ' || (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 200)) ELSE 'note ' || g END,
  jsonb_build_object('pulse', 60 + g % 40),
  timestamptz '2024-01-01' + g * interval '1 minute'
FROM generate_series(1, 3000) g;
ANALYZE patient;`

const lifecycleConfig = `version: 1
apply: { batch_size: 250, workers: 2 }
tables:
  patient:
    columns:
      first_name: { class: pii, search: [exact, prefix] }
      last_name:  { class: pii, search: [exact, contains] }
      dob:        { class: pii, search: [date] }
      notes:      { class: phi }
      vitals:     { class: phi }
`

// catalogSnapshot describes a table the way a DBA would compare it.
func catalogSnapshot(t *testing.T, f *fixture, table string) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull || ' ' || COALESCE(pg_get_expr(d.adbin, d.adrelid), '')
		 FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		 WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attname`,
		`SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass ORDER BY conname`,
		`SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::regclass ORDER BY 1`,
		`SELECT tgname || ' ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal ORDER BY tgname`,
	} {
		rows, err := f.pool.Query(context.Background(), q, table)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			rows.Scan(&s)
			b.WriteString(s + "\n")
		}
		rows.Close()
	}
	return b.String()
}

func dataDigest(t *testing.T, f *fixture) string {
	t.Helper()
	var d string
	err := f.pool.QueryRow(context.Background(), `SELECT md5(string_agg(concat_ws('|', uid, mrn, first_name, last_name, dob, notes, vitals::text, created_at), E'\n' ORDER BY uid)) FROM public.patient`).Scan(&d)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRollbackBeforeCleanupRestoresCatalogAndData(t *testing.T) {
	f := setup(t, lifecycleDDL, lifecycleConfig)
	before, digest := catalogSnapshot(t, f, "public.patient"), dataDigest(t, f)
	f.apply(t)
	if catalogSnapshot(t, f, "public.patient") == before {
		t.Fatal("apply changed nothing?")
	}
	if err := f.runner.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after := catalogSnapshot(t, f, "public.patient"); after != before {
		t.Fatalf("catalog differs after rollback:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if dataDigest(t, f) != digest {
		t.Fatal("data differs after rollback")
	}
	var leftovers int
	f.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pgphi.protected_columns) + (SELECT count(*) FROM pgphi.chunks)
		+ (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgphi' AND proname LIKE 'mark_%')`).Scan(&leftovers)
	if leftovers != 0 {
		t.Fatalf("%d pgphi objects left for the table", leftovers)
	}
	// Rollback is idempotent, and apply works again afterwards.
	if err := f.runner.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.apply(t)
	if res := f.verify(t); !res.OK() {
		t.Fatalf("re-apply after rollback: %+v", res)
	}
}

func (f *fixture) cutOver(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, fl := range []string{FlagUseEncryptedSearch, FlagRequireEncryption} {
		if err := SetFlag(ctx, f.pool, fl, true); err != nil {
			t.Fatal(err)
		}
	}
	mark, err := MarkVerification(ctx, f.runner)
	if err != nil {
		t.Fatal(err)
	}
	res := f.verify(t)
	if err := RecordVerification(ctx, f.runner, res, mark); err != nil {
		t.Fatal(err)
	}
}

func TestCleanupRefusesUntilItIsSafe(t *testing.T) {
	ctx := context.Background()
	f := setup(t, lifecycleDDL, lifecycleConfig)
	f.apply(t)
	expectRefused := func(why string, confirm string) {
		t.Helper()
		err := f.runner.Cleanup(ctx, confirm, CleanupOptions{})
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("%s: cleanup not refused: %v", why, err)
		}
	}
	expectRefused("wrong plan id", "plan-0000")
	expectRefused("flags off", f.plan.ID)
	f.cutOver(t)
	// With require_encryption on, plaintext writes are refused by the database.
	_, err := f.pool.Exec(ctx, "UPDATE public.patient SET last_name = 'New' WHERE uid = 'u00001'")
	if err == nil || !strings.Contains(err.Error(), "require_encryption") {
		t.Fatalf("plaintext write not refused: %v", err)
	}
	if _, err := f.pool.Exec(ctx, "INSERT INTO public.patient (uid, mrn, first_name) VALUES ('x1', 'MRNx', 'Plain')"); err == nil {
		t.Fatal("plaintext insert not refused")
	}
	// Writes that do not touch protected plaintext still work.
	if _, err := f.pool.Exec(ctx, "UPDATE public.patient SET mrn = 'MRN-1b' WHERE uid = 'u00001'"); err != nil {
		t.Fatalf("unprotected write refused: %v", err)
	}
	// A cut-over application replaces a value with a ciphertext of its own
	// and clears the plaintext: nothing is left to encrypt, so the row is
	// not pending, and the ciphertext verifies.
	var notes *TargetColumn
	for i := range f.plan.Tables[0].Columns {
		if f.plan.Tables[0].Columns[i].Name == "notes" {
			notes = &f.plan.Tables[0].Columns[i]
		}
	}
	sealer, err := f.ring.Sealer("public.patient", "notes")
	if err != nil {
		t.Fatal(err)
	}
	ct4, err := sealer.Seal(nil, envelope.Value{Type: notes.ValueType, Text: "written encrypted by the application"},
		envelope.Binding{Table: "public.patient", Column: "notes", PrimaryKey: []string{"u00004"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE public.patient SET notes = NULL, notes_encrypted = $1 WHERE uid = 'u00004'", ct4); err != nil {
		t.Fatalf("a ciphertext-only write after cutover: %v", err)
	}
	if res := f.verify(t); res.Pending != 0 || res.Mismatches != 0 {
		t.Fatalf("after a ciphertext-only write by the application: %d pending, %d mismatches", res.Pending, res.Mismatches)
	}
	// Its key changes: the ciphertext is bound to the old key and there is no
	// plaintext to encrypt again, so the change is refused unless the
	// application writes the ciphertext for the new key with it.
	_, err = f.pool.Exec(ctx, "UPDATE public.patient SET uid = 'u00004b' WHERE uid = 'u00004'")
	if err == nil || !strings.Contains(err.Error(), "exists only as a ciphertext") {
		t.Fatalf("a key change that would lose a ciphertext-only value: %v", err)
	}
	ct4b, err := sealer.Seal(nil, envelope.Value{Type: notes.ValueType, Text: "written encrypted by the application"},
		envelope.Binding{Table: "public.patient", Column: "notes", PrimaryKey: []string{"u00004b"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE public.patient SET uid = 'u00004b', notes_encrypted = $1 WHERE uid = 'u00004'", ct4b); err != nil {
		t.Fatalf("a key change with the ciphertext for the new key: %v", err)
	}
	if res := f.verify(t); res.Mismatches != 0 {
		t.Fatalf("after the key change: %d mismatches (%v)", res.Mismatches, res.Examples)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE public.patient SET uid = 'u00004' WHERE uid = 'u00004b'"); err == nil {
		t.Fatal("a second key change without a new ciphertext was not refused")
	}
	// A ciphertext the application wrote after the verification, bound to
	// another row, is found by the re-verification under cleanup's lock.
	var saved []byte
	if err := f.pool.QueryRow(ctx, "SELECT last_name_encrypted FROM public.patient WHERE uid = 'u00003'").Scan(&saved); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE public.patient SET last_name_encrypted = (SELECT last_name_encrypted FROM public.patient WHERE uid = 'u00002') WHERE uid = 'u00003'"); err != nil {
		t.Fatal(err)
	}
	err = f.runner.Cleanup(ctx, f.plan.ID, CleanupOptions{Purge: "vacuum-full"})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "u00003") || !strings.Contains(err.Error(), "last_name") {
		t.Fatalf("a wrong ciphertext written after the verification: cleanup said %v", err)
	}
	// Put right, the writes since the verification (an unprotected column,
	// the restored ciphertext) do not stand in the way: they are re-verified.
	if _, err := f.pool.Exec(ctx, "UPDATE public.patient SET last_name_encrypted = $1 WHERE uid = 'u00003'", saved); err != nil {
		t.Fatal(err)
	}
	if err := f.runner.Cleanup(ctx, f.plan.ID, CleanupOptions{Purge: "vacuum-full"}); err != nil {
		t.Fatalf("cleanup after writes that verify: %v", err)
	}
	var plain int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attname = 'last_name' AND NOT attisdropped").Scan(&plain); err != nil || plain != 0 {
		t.Fatalf("plaintext column still there after cleanup (%d, %v)", plain, err)
	}
}

// fileHas reports whether any file of the relation (all segments) contains needle.
func relationFilesContain(t *testing.T, f *fixture, relation string, needle []byte) bool {
	t.Helper()
	var path string
	if err := f.pool.QueryRow(context.Background(), "SELECT pg_relation_filepath($1::regclass)", relation).Scan(&path); err != nil {
		t.Fatal(err)
	}
	matches, _ := filepath.Glob(filepath.Join(pgtest.Cluster().DataDir(), path) + "*")
	if len(matches) == 0 {
		t.Fatalf("no files for %s at %s", relation, path)
	}
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, needle) {
			return true
		}
	}
	return false
}

func tableRelations(t *testing.T, f *fixture) []string {
	rows, err := f.pool.Query(context.Background(), `
		SELECT 'public.patient' UNION ALL
		SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'public.patient'::regclass AND reltoastrelid <> 0 UNION ALL
		SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'public.patient'::regclass UNION ALL
		SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.reltoastrelid = i.indrelid WHERE c.oid = 'public.patient'::regclass`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		out = append(out, s)
	}
	return out
}

func TestCleanupPurgesPlaintextAndRollbackRestoresIt(t *testing.T) {
	t.Run("vacuum-full", func(t *testing.T) { testPurge(t, "vacuum-full") })
	t.Run("repack", func(t *testing.T) {
		if _, err := os.Stat("/usr/lib/postgresql/15/bin/pg_repack"); err != nil && os.Getenv("CI") == "" {
			t.Skip("pg_repack not installed (scripts/ensure-postgres.sh installs it)")
		}
		testPurge(t, "repack")
	})
}

func testPurge(t *testing.T, method string) {
	if pgtest.Cluster() == nil {
		t.Skip("reads relation files: needs the harness's own cluster")
	}
	ctx := context.Background()
	f := setup(t, lifecycleDDL, lifecycleConfig)
	before, digest := columnTypes(t, f), dataDigest(t, f)
	canaries := [][]byte{[]byte("Zzcanarymcvq"), []byte("Zzcanarytoastq")}
	if _, err := f.pool.Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rel := range tableRelations(t, f) {
		for _, c := range canaries {
			found = found || relationFilesContain(t, f, rel, c)
		}
	}
	var inStats bool
	f.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_stats WHERE tablename = 'patient' AND most_common_vals::text LIKE '%Zzcanarymcvq%')").Scan(&inStats)
	if !found || !inStats {
		t.Fatalf("test setup: canaries not on disk (%v) or not in pg_stats (%v) before cleanup", found, inStats)
	}

	f.apply(t)
	f.cutOver(t)
	if err := f.runner.Cleanup(ctx, f.plan.ID, CleanupOptions{Purge: method}); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, f.log.String())
	}
	if want := map[string]string{"repack": "with pg_repack", "vacuum-full": "with VACUUM FULL"}[method]; !strings.Contains(f.log.String(), want) {
		t.Fatalf("purge did not use %s:\n%s", method, f.log.String())
	}
	if _, err := f.pool.Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	for _, rel := range tableRelations(t, f) {
		for _, c := range canaries {
			if relationFilesContain(t, f, rel, c) {
				t.Fatalf("canary %s still in the files of %s after cleanup", c, rel)
			}
		}
	}
	f.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_stats WHERE tablename = 'patient' AND (most_common_vals::text LIKE '%Zzcanary%' OR histogram_bounds::text LIKE '%Zzcanary%'))").Scan(&inStats)
	if inStats {
		t.Fatal("canary still in pg_stats after cleanup")
	}
	// The cleaned table still verifies and is still searchable, from the state.
	f.replanCleaned(t)
	if res := f.verify(t); res.Mismatches != 0 || res.Values == 0 {
		t.Fatalf("verify after cleanup: %+v", res)
	}
	// Cleanup again is a no-op.
	if err := f.runner.Cleanup(ctx, f.plan.ID, CleanupOptions{}); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}

	if err := f.runner.Rollback(ctx); err != nil {
		t.Fatalf("rollback after cleanup: %v\n%s", err, f.log.String())
	}
	if dataDigest(t, f) != digest {
		t.Fatal("data differs after rollback from cleanup")
	}
	// Same columns and types (column order may differ: restored columns come last).
	if after := columnTypes(t, f); after != before {
		t.Fatalf("columns differ:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func columnTypes(t *testing.T, f *fixture) string {
	t.Helper()
	var s string
	if err := f.pool.QueryRow(context.Background(), `SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), E'\n' ORDER BY attname)
		FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attnum > 0 AND NOT attisdropped`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// replanCleaned resolves the plan again, as a new pgphi process would after cleanup.
func (f *fixture) replanCleaned(t *testing.T) {
	t.Helper()
	cleaned, err := LoadCleaned(context.Background(), f.pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(cleaned) == 0 {
		t.Fatal("no cleaned columns in state")
	}
	f.replanWith(t, cleaned)
	fmt.Fprint(f.log, "")
}

// With an artificial load that multiplies the canary's latency, apply slows down.
func TestThrottleSlowsDownWhileTheCanaryIsSlow(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `CREATE TABLE public.p (uid varchar PRIMARY KEY, nm text);
		INSERT INTO public.p SELECT 'u' || lpad(g::text, 7, '0'), 'n' || g FROM generate_series(1, 150000) g;
		CREATE TABLE public.canary_delay (ms int); INSERT INTO public.canary_delay VALUES (2);`,
		"version: 1\napply: { batch_size: 100, chunk_rows: 5000, workers: 1 }\ntables:\n  p:\n    columns:\n      nm: { class: pii }\n")
	th := &Throttle{Adaptive: true, Interval: 100 * time.Millisecond,
		CanaryQuery: "SELECT 1 FROM public.canary_delay, pg_sleep(canary_delay.ms / 1000.0)"}
	f.runner.Throttle = th
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- f.runner.Apply(runCtx) }()
	rowsDone := func() int64 {
		var n int64
		f.pool.QueryRow(ctx, "SELECT COALESCE(sum(rows_done), 0)::bigint FROM pgphi.chunks").Scan(&n)
		return n
	}
	rate := func(d time.Duration) float64 {
		a := rowsDone()
		time.Sleep(d)
		return float64(rowsDone()-a) / d.Seconds()
	}
	for rowsDone() == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	// The unthrottled rate, over a window long enough to see batches
	// commit on a busy machine.
	before := rate(time.Second)
	for i := 0; before == 0 && i < 10; i++ {
		before = rate(time.Second)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE public.canary_delay SET ms = 30"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	during := rate(time.Second)
	status := th.Status()
	cancel()
	<-errc
	t.Logf("rows/s before %.0f, under load %.0f; status %q", before, during, status)
	if th.Slowdowns() == 0 || during > before/3 {
		t.Fatalf("did not slow down: %.0f rows/s before, %.0f under load, %d slowdowns", before, during, th.Slowdowns())
	}
	if !strings.Contains(status, "canary") {
		t.Fatalf("status does not say why: %q", status)
	}
}
