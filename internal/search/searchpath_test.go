package search

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/demo"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/state"
	"github.com/pgphi/pgphi/keys"
)

// trapSQL is run by the application owner, who owns schema public's
// objects: an overlap operator for bigint[] (a better match by type than
// pg_catalog's anyarray && anyarray) that records who ran it.
const trapSQL = `
CREATE TABLE public.ran (who text, what text);
GRANT INSERT ON public.ran TO PUBLIC;
CREATE FUNCTION public.trap_overlap(a bigint[], b bigint[]) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.ran VALUES (current_user, 'overlap'); RETURN false; END $$;
CREATE OPERATOR public.&& (LEFTARG = bigint[], RIGHTARG = bigint[], FUNCTION = public.trap_overlap);
CREATE FUNCTION public.trap_lt(a public.ward, b public.ward) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.ran VALUES (current_user, 'less'); RETURN a::text < b::text; END $$;
CREATE OPERATOR public.> (LEFTARG = public.ward, RIGHTARG = public.ward, FUNCTION = public.trap_lt);
CREATE OPERATOR public.<= (LEFTARG = public.ward, RIGHTARG = public.ward, FUNCTION = public.trap_lt);
`

// TestSearchRunsNoOperatorOfSchemaPublic: an owner
// of schema public defined && for bigint[] and it ran inside a
// healthcare_admin's search. pgphi's sessions pin search_path to
// pg_catalog, pg_temp and name the operator OPERATOR(pg_catalog.&&): the
// search returns its rows and the trap never runs. Variant: the dba's apply
// on a table keyed by an enum, with > and <= for that enum in public (the
// keyset pagination compares keys with them).
func TestSearchRunsNoOperatorOfSchemaPublic(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	a := pgtest.NewActors(t, url)
	owner := a.Connect(t, a.AppOwner)
	if err := demo.CreateSchema(ctx, owner); err != nil {
		t.Fatal(err)
	}
	if _, err := demo.Populate(ctx, owner, demo.Options{Patients: 200, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, `CREATE TYPE public.ward AS ENUM ('north', 'south', 'east');
		CREATE TABLE public.bed (w public.ward, n int, note text, PRIMARY KEY (w, n));
		INSERT INTO public.bed SELECT (ARRAY['north','south','east']::public.ward[])[1 + g % 3], g, 'note ' || g FROM generate_series(1, 300) g;
		GRANT SELECT ON public.patient, public.bed TO pgphi_healthcare_admin;`+trapSQL); err != nil {
		t.Fatal(err)
	}
	// Without pgphi's session settings the trap is live: the same lookup in
	// a session with the default search_path runs the owner's operator.
	ha := a.Connect(t, a.HealthcareAdmin)
	if _, err := ha.Exec(ctx, "SELECT count(*) FROM public.patient WHERE '{1}'::bigint[] && '{2}'::bigint[]"); err != nil {
		t.Fatal(err)
	}
	if got := ranBy(t, owner); !strings.Contains(got, a.HealthcareAdmin+" overlap") {
		t.Fatalf("the trap did not fire in a default session (%q): the test proves nothing", got)
	}
	if _, err := owner.Exec(ctx, "DELETE FROM public.ran"); err != nil {
		t.Fatal(err)
	}

	// The dba applies the plan (the variant: keyset pagination over an enum key).
	if _, err := owner.Exec(ctx, "GRANT SELECT ON public.ran TO pgphi_dba"); err != nil {
		t.Fatal(err)
	}
	admin, err := dbconn.Open(ctx, url, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	cfg, err := config.Parse("pgphi.yaml", []byte(searchConfig+"  bed:\n    columns:\n      note: { class: pii, search: [exact] }\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Apply.BatchSize, cfg.Apply.ChunkRows = 7, 50
	dbaPool, err := dbconn.Open(ctx, a.URL(a.DBA), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer dbaPool.Close()
	tables, err := catalog.Resolve(ctx, dbaPool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := engine.NewPlan(cfg, tables)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "kek")
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(keyFile, k, 0o600); err != nil {
		t.Fatal(err)
	}
	// State, roles and keys are set up by a superuser, as `roles init` does.
	c, err := admin.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.Ensure(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Release()
	if _, err := policy.InitRoles(ctx, admin, policy.DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Init(ctx, admin, keys.KeyFileProvider(keyFile)); err != nil {
		t.Fatal(err)
	}
	ring, err := keys.Load(ctx, dbaPool, keys.KeyFileProvider(keyFile))
	if err != nil {
		t.Fatal(err)
	}
	dbaRunner := &engine.Runner{Pool: dbaPool, Keys: ring, Config: cfg, Plan: plan}
	if err := dbaRunner.Apply(ctx); err != nil {
		t.Fatalf("apply as the dba: %v", err)
	}
	if got := ranBy(t, owner); got != "" {
		t.Fatalf("the owner's operators ran inside the dba's apply: %s", got)
	}

	// A healthcare_admin searches, in pgphi's session.
	haPool, err := dbconn.Open(ctx, a.URL(a.HealthcareAdmin), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer haPool.Close()
	haRing, err := keys.Load(ctx, haPool, keys.KeyFileProvider(keyFile))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, haPool, haRing, plan)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	if err := owner.QueryRow(ctx, "SELECT last_name FROM public.patient WHERE last_name IS NOT NULL ORDER BY uid LIMIT 1").Scan(&last); err != nil {
		t.Fatal(err)
	}
	res, err := s.Find(ctx, "patient", "last_name", blindindex.Query{Kind: blindindex.QExact, Value: last})
	if err != nil {
		t.Fatalf("search as healthcare_admin: %v", err)
	}
	if len(res.Keys) == 0 {
		t.Fatal("the search found nothing")
	}
	if res, err = s.Find(ctx, "public.bed", "note", blindindex.Query{Kind: blindindex.QExact, Value: "note 7"}); err != nil || len(res.Keys) != 1 {
		t.Fatalf("search of bed: %+v, %v", res, err)
	}
	if got := ranBy(t, owner); got != "" {
		t.Fatalf("the owner's operator ran inside pgphi's statements: %s", got)
	}
}

// ranBy lists who ran the trap, as "role what" lines.
func ranBy(t *testing.T, c *pgx.Conn) string {
	t.Helper()
	rows, err := c.Query(context.Background(), "SELECT who || ' ' || what FROM public.ran ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(got, "; ")
}
