package engine

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestRollbackRefusesForgedOriginalType: rollback after cleanup pasted pgphi.protected_columns.original_type into
// ALTER TABLE and a cast. A row edited (here by a superuser) to carry a
// statement is refused and runs nothing; so is a type that does not exist
// and one spelled otherwise than the catalog does. Put back, the recorded
// type works, and an old unqualified enum name (recorded before sessions
// pinned search_path) is resolved in the table's schema.
func TestRollbackRefusesForgedOriginalType(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `CREATE TYPE public.shade AS ENUM ('red', 'green');
		CREATE TABLE public.p (uid varchar PRIMARY KEY, nm varchar(40), iv interval day to second(3), hue public.shade);
		INSERT INTO public.p SELECT 'u' || g, 'n' || g, g * interval '1.5 second', (ARRAY['red','green']::public.shade[])[1 + g % 2] FROM generate_series(1, 40) g;
		CREATE TABLE public.victim (x int);`,
		"version: 1\ntables:\n  p:\n    columns:\n      nm: { class: pii }\n      iv: { class: pii }\n      hue: { class: pii }\n")
	f.apply(t)
	f.cutOver(t)
	if err := f.runner.Cleanup(ctx, f.plan.ID, CleanupOptions{Purge: "vacuum-full"}); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, f.log.String())
	}
	var recorded string
	if err := f.pool.QueryRow(ctx, "SELECT string_agg(original_type, '|' ORDER BY column_name) FROM pgphi.protected_columns").Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded != "public.shade|interval day to second(3)|character varying(40)" {
		t.Fatalf("recorded types: %s", recorded)
	}
	for _, forged := range []string{
		"text; DROP TABLE public.victim --",
		"text); DROP TABLE public.victim; SELECT (1",
		"character varying(40) -- comment",
		"public.no_such_type",
		`text COLLATE "C"`,
		"varchar(40)", // a type, but not as format_type spells it
	} {
		if _, err := f.pool.Exec(ctx, "UPDATE pgphi.protected_columns SET original_type = $1 WHERE column_name = 'nm'", forged); err != nil {
			t.Fatal(err)
		}
		f.replanCleaned(t)
		err := f.runner.Rollback(ctx)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "public.p.nm") {
			t.Fatalf("rollback with original_type %q: %v (want refused, naming the column)", forged, err)
		}
		var victim, nm int
		if err := f.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_class WHERE oid = to_regclass('public.victim')),
			(SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.p'::regclass AND attname = 'nm' AND NOT attisdropped)`).Scan(&victim, &nm); err != nil {
			t.Fatal(err)
		}
		if victim != 1 || nm != 0 {
			t.Fatalf("after a refused rollback with %q: victim table %d, column nm %d", forged, victim, nm)
		}
	}
	// The honest values; the enum as an older pgphi recorded it (unqualified).
	if _, err := f.pool.Exec(ctx, "UPDATE pgphi.protected_columns SET original_type = CASE column_name WHEN 'nm' THEN 'character varying(40)' ELSE 'shade' END WHERE column_name IN ('nm', 'hue')"); err != nil {
		t.Fatal(err)
	}
	f.replanCleaned(t)
	if err := f.runner.Rollback(ctx); err != nil {
		t.Fatalf("rollback with the recorded types: %v\n%s", err, f.log.String())
	}
	var types string
	if err := f.pool.QueryRow(ctx, `SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attname)
		FROM pg_attribute WHERE attrelid = 'public.p'::regclass AND attnum > 0 AND NOT attisdropped`).Scan(&types); err != nil {
		t.Fatal(err)
	}
	if types != "hue public.shade, iv interval day to second(3), nm character varying(40), uid character varying" {
		t.Fatalf("restored columns: %s", types)
	}
	var n int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM public.p WHERE nm = 'n' || substr(uid, 2) AND hue IS NOT NULL AND iv = substr(uid, 2)::int * interval '1.5 second'").Scan(&n); err != nil || n != 40 {
		t.Fatalf("restored values: %d of 40, %v", n, err)
	}
}
