package engine

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/catalog"
)

// A small clinic schema pgphi was not built for.
const clinicDDL = `
CREATE TABLE public.patient (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  mrn text NOT NULL UNIQUE,
  full_name text NOT NULL,
  email text UNIQUE,
  notes text CONSTRAINT notes_short CHECK (length(notes) < 2000),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX patient_name_lower ON public.patient (lower(full_name));
CREATE VIEW public.patient_contact AS SELECT id, full_name, email FROM public.patient;
INSERT INTO public.patient (mrn, full_name, email, notes)
SELECT 'MRN' || g, 'Name ' || g, CASE WHEN g % 4 = 0 THEN NULL ELSE 'p' || g || '@example.org' END, 'note ' || g
FROM generate_series(1, 300) g;
ANALYZE public.patient;`

const clinicFK = `
CREATE TABLE public.visit (id bigserial PRIMARY KEY, patient_mrn text CONSTRAINT visit_patient_mrn_fkey REFERENCES public.patient (mrn));`

const clinicConfig = `version: 1
apply: { batch_size: 100, workers: 1 }
tables:
  patient:
    columns:
      mrn:       { class: pii, search: [exact] }
      full_name: { class: pii, search: [exact, phonetic] }
      email:     { class: pii }
      notes:     { class: phi }
`

func findDep(deps []catalog.Dependency, column, kind, object string) *catalog.Dependency {
	for i, d := range deps {
		if d.Column == column && d.Kind == kind && strings.HasPrefix(d.Object, object) {
			return &deps[i]
		}
	}
	return nil
}

func TestPlanListsDependenciesAndRefusesForeignKeys(t *testing.T) {
	ctx := context.Background()
	f := setup(t, clinicDDL+clinicFK, clinicConfig)
	if err := f.plan.DiscoverDependencies(ctx, f.pool, f.cfg.Encryption.ColumnSuffix); err != nil {
		t.Fatal(err)
	}
	deps := f.plan.Dependencies
	for _, want := range []struct{ column, kind, object, action, blocks string }{
		{"mrn", "not null", "", catalog.ActionCarried, ""},
		{"full_name", "not null", "", catalog.ActionCarried, ""},
		{"mrn", "unique", "patient_mrn_key", catalog.ActionCarried, ""},
		{"email", "unique", "patient_email_key", catalog.ActionCarried, ""},
		{"mrn", "foreign key", "visit_patient_mrn_fkey", catalog.ActionRefused, catalog.BlocksPlan},
		{"notes", "check", "notes_short", catalog.ActionCarried, ""},
		{"full_name", "index", "public.patient_name_lower (expression)", "replaced by exact, phonetic search", ""},
		{"full_name", "view", "public.patient_contact", catalog.ActionRefused, catalog.BlocksCheck},
		{"email", "view", "public.patient_contact", catalog.ActionRefused, catalog.BlocksCheck},
	} {
		d := findDep(deps, want.column, want.kind, want.object)
		if d == nil {
			t.Errorf("plan does not list %s %s on %s; it lists:\n%v", want.kind, want.object, want.column, deps)
			continue
		}
		if d.Action != want.action || d.Blocks != want.blocks {
			t.Errorf("%s: action %q blocks %q, want %q %q", d, d.Action, d.Blocks, want.action, want.blocks)
		}
	}
	if d := findDep(deps, "email", "not null", ""); d != nil {
		t.Errorf("email is nullable, yet: %s", d)
	}
	var out bytes.Buffer
	f.plan.Print(&out)
	for _, s := range []string{"unique patient_mrn_key", "view public.patient_contact", "index public.patient_name_lower (expression)", "foreign key visit_patient_mrn_fkey", "pgphi check"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("printed plan lacks %q:\n%s", s, out.String())
		}
	}
	if strings.Contains(out.String(), "MRN1") || strings.Contains(out.String(), "example.org") {
		t.Fatal("the printed plan shows a value")
	}
	// The foreign key refuses the plan and apply, naming the constraint,
	// before anything changes.
	if err := f.plan.ForeignKeyRefusal(); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "visit_patient_mrn_fkey") {
		t.Fatalf("plan with a foreign key on mrn: %v", err)
	}
	before := catalogSnapshot(t, f, "public.patient")
	if err := f.runner.Apply(ctx); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "visit_patient_mrn_fkey") {
		t.Fatalf("apply with a foreign key on mrn: %v", err)
	}
	if catalogSnapshot(t, f, "public.patient") != before {
		t.Fatal("a refused apply changed the table")
	}
}

func TestViewBlocksCheckAndCleanupWithNothingChanged(t *testing.T) {
	ctx := context.Background()
	f := setup(t, clinicDDL+`ALTER TABLE public.patient DROP CONSTRAINT patient_mrn_key, DROP CONSTRAINT patient_email_key;`, clinicConfig)
	f.apply(t)
	f.replan(t)
	if err := f.plan.DiscoverDependencies(ctx, f.pool, f.cfg.Encryption.ColumnSuffix); err != nil {
		t.Fatal(err)
	}
	blockers := f.plan.CheckBlockers()
	if len(blockers) != 2 || blockers[0].Object != "public.patient_contact" {
		t.Fatalf("check blockers: %v", blockers)
	}
	f.cutOver(t)
	before, digest := catalogSnapshot(t, f, "public.patient"), clinicDigest(t, f)
	err := f.runner.Cleanup(ctx, f.plan.ID, CleanupOptions{Purge: "vacuum-full"})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "view public.patient_contact") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("cleanup with a view over the plaintext: %v", err)
	}
	if catalogSnapshot(t, f, "public.patient") != before || clinicDigest(t, f) != digest {
		t.Fatal("a refused cleanup changed the table")
	}
	// A unique constraint added after apply is not enforced on the
	// ciphertext side yet: cleanup refuses until apply carries it.
	if _, err := f.pool.Exec(ctx, "DROP VIEW public.patient_contact; ALTER TABLE public.patient ADD CONSTRAINT patient_mrn_key UNIQUE (mrn)"); err != nil {
		t.Fatal(err)
	}
	err = f.runner.Cleanup(ctx, f.plan.ID, CleanupOptions{Purge: "vacuum-full"})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "unique patient_mrn_key") || !strings.Contains(err.Error(), "digest column") {
		t.Fatalf("cleanup with a unique constraint on mrn: %v", err)
	}
	// Without them, cleanup goes through and says what it dropped.
	if _, err := f.pool.Exec(ctx, "ALTER TABLE public.patient DROP CONSTRAINT patient_mrn_key"); err != nil {
		t.Fatal(err)
	}
	if err := f.runner.Cleanup(ctx, f.plan.ID, CleanupOptions{Purge: "vacuum-full"}); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, f.log)
	}
	for _, s := range []string{"check notes_short", "index public.patient_name_lower"} {
		if !strings.Contains(f.log.String(), s) {
			t.Errorf("cleanup's output does not list %q:\n%s", s, f.log)
		}
	}
}

func clinicDigest(t *testing.T, f *fixture) string {
	t.Helper()
	var d string
	if err := f.pool.QueryRow(context.Background(), `SELECT md5(string_agg(concat_ws('|', id, mrn, full_name, email, notes), E'\n' ORDER BY id)) FROM public.patient`).Scan(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

// notNullState is what a DBA would compare: NOT NULL of every column and
// every constraint of the table.
func notNullState(t *testing.T, f *fixture) string {
	t.Helper()
	var s string
	err := f.pool.QueryRow(context.Background(), `SELECT
		(SELECT string_agg(attname || ':' || attnotnull, ',' ORDER BY attname) FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attnum > 0 AND NOT attisdropped)
		|| ' / ' || COALESCE((SELECT string_agg(conname || ':' || pg_get_constraintdef(oid) || ':' || convalidated, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'public.patient'::regclass), '')`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNotNullSurvivesEncryption(t *testing.T) {
	ctx := context.Background()
	f := setup(t, clinicDDL+`DROP VIEW public.patient_contact; ALTER TABLE public.patient DROP CONSTRAINT patient_mrn_key, DROP CONSTRAINT patient_email_key;
		COMMENT ON COLUMN public.patient.mrn IS 'medical record number';`, clinicConfig)
	before := notNullState(t, f)
	comment := func(col string) string {
		t.Helper()
		var c *string
		if err := f.pool.QueryRow(ctx, "SELECT col_description('public.patient'::regclass, attnum) FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attname = $1", col).Scan(&c); err != nil {
			t.Fatal(err)
		}
		if c == nil {
			return ""
		}
		return *c
	}
	f.apply(t)
	var mrnNotNull, validated bool
	if err := f.pool.QueryRow(ctx, `SELECT a.attnotnull, c.convalidated FROM pg_attribute a JOIN pg_constraint c ON c.conrelid = a.attrelid
		AND pg_get_constraintdef(c.oid) = 'CHECK (((mrn IS NOT NULL) OR (mrn_encrypted IS NOT NULL)))'
		WHERE a.attrelid = 'public.patient'::regclass AND a.attname = 'mrn'`).Scan(&mrnNotNull, &validated); err != nil {
		t.Fatalf("pgphi's NOT NULL check on mrn: %v", err)
	}
	if mrnNotNull || !validated {
		t.Fatalf("after apply mrn NOT NULL %v, check validated %v", mrnNotNull, validated)
	}
	f.apply(t) // a rerun changes nothing
	// The table's owner drops pgphi's CHECK: the trigger check says so, and
	// apply puts it back.
	var check string
	for _, c := range f.plan.Tables[0].Columns {
		if c.Name == "mrn" {
			check = c.notNullCheck()
		}
	}
	if _, err := f.pool.Exec(ctx, "ALTER TABLE public.patient DROP CONSTRAINT "+check); err != nil {
		t.Fatal(err)
	}
	probs, err := CheckTriggers(ctx, f.pool, f.plan)
	if err != nil || len(probs) != 1 || !strings.Contains(probs[0].String(), check) || !strings.Contains(probs[0].String(), "mrn was NOT NULL") {
		t.Fatalf("pgphi's NOT NULL check dropped: %v %v", probs, err)
	}
	f.apply(t)
	if probs, err := CheckTriggers(ctx, f.pool, f.plan); err != nil || len(probs) != 0 {
		t.Fatalf("after apply: %v %v", probs, err)
	}
	f.cutOver(t)

	// The application writes NULL plaintext and ciphertexts: accepted.
	seal := func(col, text, id string) []byte {
		s, err := f.ring.Sealer("public.patient", col)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := s.Seal(nil, envelope.Value{Type: envelope.TypeForPostgres("text"), Text: text}, envelope.Binding{Table: "public.patient", Column: col, PrimaryKey: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		return ct
	}
	id := "00000000-0000-4000-8000-000000000001"
	if _, err := f.pool.Exec(ctx, `INSERT INTO public.patient (id, mrn, full_name, mrn_encrypted, full_name_encrypted) VALUES ($1, NULL, NULL, $2, $3)`,
		id, seal("mrn", "MRN-new", id), seal("full_name", "New Patient", id)); err != nil {
		t.Fatalf("an application insert under require_encryption: %v", err)
	}
	// Neither plaintext nor ciphertext: refused, naming pgphi's check.
	_, err = f.pool.Exec(ctx, `INSERT INTO public.patient (id, mrn, full_name, full_name_encrypted) VALUES ('00000000-0000-4000-8000-000000000002', NULL, NULL, $1)`,
		seal("full_name", "No Mrn", "00000000-0000-4000-8000-000000000002"))
	if err == nil || !strings.Contains(err.Error(), "pgphi_not_null_mrn") {
		t.Fatalf("an insert without mrn: %v", err)
	}
	// Rollback before cleanup decrypts the row written only as ciphertext
	// into its plaintext, then puts NOT NULL back exactly as it was.
	if err := f.runner.Rollback(ctx); err != nil {
		t.Fatalf("rollback before cleanup: %v\n%s", err, f.log)
	}
	if after := notNullState(t, f); after != before {
		t.Fatalf("rollback before cleanup:\nbefore %s\nafter  %s", before, after)
	}
	var mrn, name string
	if err := f.pool.QueryRow(ctx, "SELECT mrn, full_name FROM public.patient WHERE id = $1", id).Scan(&mrn, &name); err != nil || mrn != "MRN-new" || name != "New Patient" {
		t.Fatalf("the application's ciphertext-only row after rollback: %v", err)
	}
	if _, err := f.pool.Exec(ctx, "DELETE FROM public.patient WHERE id = $1", id); err != nil {
		t.Fatal(err)
	}

	// Through cleanup: the ciphertext is NOT NULL; rollback after cleanup
	// makes the plaintext NOT NULL again.
	f.replan(t)
	f.apply(t)
	f.cutOver(t)
	if err := f.runner.Cleanup(ctx, f.plan.ID, CleanupOptions{Purge: "vacuum-full"}); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, f.log)
	}
	var encNotNull bool
	if err := f.pool.QueryRow(ctx, `SELECT bool_and(attnotnull) FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attname IN ('mrn_encrypted', 'full_name_encrypted')`).Scan(&encNotNull); err != nil || !encNotNull {
		t.Fatalf("after cleanup the ciphertexts of NOT NULL columns are NOT NULL: %v %v", encNotNull, err)
	}
	var leftover int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.patient'::regclass AND conname LIKE 'pgphi\_%not\_null%'`).Scan(&leftover); err != nil || leftover != 0 {
		t.Fatalf("pgphi's NOT NULL checks left after cleanup: %d %v", leftover, err)
	}
	if comment("mrn_encrypted") != "medical record number" {
		t.Error("cleanup did not carry mrn's comment to mrn_encrypted")
	}
	if _, err := f.pool.Exec(ctx, `INSERT INTO public.patient (id) VALUES ('00000000-0000-4000-8000-000000000003')`); err == nil {
		t.Fatal("after cleanup an insert without mrn was accepted")
	}
	f.replanCleaned(t)
	if err := f.runner.Rollback(ctx); err != nil {
		t.Fatalf("rollback after cleanup: %v\n%s", err, f.log)
	}
	var nn string
	if err := f.pool.QueryRow(ctx, `SELECT string_agg(attname || ':' || attnotnull, ',' ORDER BY attname) FROM pg_attribute
		WHERE attrelid = 'public.patient'::regclass AND attname IN ('mrn', 'full_name', 'email', 'notes')`).Scan(&nn); err != nil {
		t.Fatal(err)
	}
	if nn != "email:false,full_name:true,mrn:true,notes:false" {
		t.Fatalf("after rollback following cleanup: %s", nn)
	}
	if comment("mrn") != "medical record number" {
		t.Error("rollback after cleanup did not bring mrn's comment back")
	}
}

// Every kind of dependency the catalog records is found, with its action.
func TestDiscoveryFindsEveryKind(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `
CREATE TABLE public.person (
  id int PRIMARY KEY,
  tenant int NOT NULL,
  code text DEFAULT 'none',
  name text,
  name_upper text GENERATED ALWAYS AS (upper(name)) STORED,
  UNIQUE (tenant, code)
);
COMMENT ON COLUMN public.person.name IS 'the name';
CREATE UNIQUE INDEX person_name_partial ON public.person (name) WHERE tenant > 0;
CREATE INDEX person_tenant_name ON public.person (tenant, name);
CREATE MATERIALIZED VIEW public.person_names AS SELECT name FROM public.person;
CREATE TABLE public.person_log (id int, name text);
CREATE RULE person_copy AS ON INSERT TO public.person DO ALSO INSERT INTO public.person_log VALUES (NEW.id, NEW.name);
ALTER TABLE public.person ENABLE ROW LEVEL SECURITY;
CREATE POLICY person_own ON public.person USING (name = current_user);
CREATE STATISTICS person_stats (dependencies) ON tenant, code FROM public.person;
CREATE PUBLICATION person_pub FOR TABLE public.person (id, name);
CREATE PUBLICATION person_all FOR TABLE public.person_log;
CREATE FUNCTION public.person_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'changed %', NEW.name; RETURN NEW; END $$;
CREATE TRIGGER person_audit BEFORE UPDATE ON public.person FOR EACH ROW EXECUTE FUNCTION public.person_audit();
CREATE FUNCTION public.person_lookup(int) RETURNS text LANGUAGE sql AS $$ SELECT name FROM public.person WHERE id = $1 $$;
INSERT INTO public.person (id, tenant, code, name) VALUES (1, 1, 'a', 'Zzcanary');`, `version: 1
tables:
  person:
    columns:
      name: { class: pii }
      code: { class: pii }
`)
	if err := f.plan.DiscoverDependencies(ctx, f.pool, f.cfg.Encryption.ColumnSuffix); err != nil {
		t.Fatal(err)
	}
	deps := f.plan.Dependencies
	for _, want := range []struct{ column, kind, object, action, blocks string }{
		{"name", "comment", "", catalog.ActionCarried, ""},
		{"name", "unique index", "public.person_name_partial (partial)", catalog.ActionCarried, ""},
		{"name", "index", "public.person_tenant_name (2 columns)", catalog.ActionWarned, ""},
		{"name", "materialized view", "public.person_names", catalog.ActionRefused, catalog.BlocksCheck},
		{"name", "rule", "person_copy on public.person", catalog.ActionRefused, catalog.BlocksCheck},
		{"name", "policy", "person_own", catalog.ActionRefused, catalog.BlocksCheck},
		{"name", "generated column", "name_upper", catalog.ActionRefused, catalog.BlocksCheck},
		{"name", "publication", "person_pub", catalog.ActionRefused, catalog.BlocksCheck},
		{"name", "trigger", "person_audit", catalog.ActionWarned, ""},
		{"name", "function", "public.person_lookup(integer)", catalog.ActionWarned, ""},
		{"code", "default", "", catalog.ActionWarned, ""},
		{"code", "unique", "person_tenant_code_key (2 columns)", catalog.ActionRefused, catalog.BlocksCleanup},
		{"code", "statistics", "public.person_stats", catalog.ActionWarned, ""},
	} {
		d := findDep(deps, want.column, want.kind, want.object)
		if d == nil {
			t.Errorf("discovery does not list %s %s on %s; it lists:\n%v", want.kind, want.object, want.column, deps)
			continue
		}
		if d.Action != want.action || d.Blocks != want.blocks {
			t.Errorf("%s: action %q blocks %q, want %q %q", d, d.Action, d.Blocks, want.action, want.blocks)
		}
	}
	for _, d := range deps {
		if strings.Contains(d.String(), "Zzcanary") || strings.Contains(d.String(), "the name") {
			t.Fatalf("a dependency shows a value or a comment's text: %s", d)
		}
	}
	if d := findDep(deps, "name", "publication", "person_all"); d != nil {
		t.Errorf("a publication of another table: %s", d)
	}
	if d := findDep(deps, "code", "unique", "person_tenant_code_key"); d == nil || !strings.Contains(d.Detail, "tenant is not protected") {
		t.Errorf("a unique rule mixing protected and other columns does not say why it is refused: %v", d)
	}
}

// Unique rules pgphi cannot carry are refused at cleanup, each with its reason.
func TestUniqueRulesPgphiCannotCarry(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `
CREATE COLLATION public.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE public.m (
  id int PRIMARY KEY,
  email text COLLATE public.ci UNIQUE,
  weight float8 UNIQUE,
  nick text,
  code text,
  CONSTRAINT m_code_deferred UNIQUE (code) DEFERRABLE
);
CREATE UNIQUE INDEX m_nick_lower ON public.m (lower(nick));`, `version: 1
tables:
  m:
    columns:
      email:  { class: pii }
      weight: { class: phi }
      nick:   { class: pii }
      code:   { class: pii }
`)
	if err := f.plan.DiscoverDependencies(ctx, f.pool, f.cfg.Encryption.ColumnSuffix); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ column, kind, object, why string }{
		{"email", "unique", "m_email_key", "nondeterministic collation"},
		{"weight", "unique", "m_weight_key", "floating point"},
		{"nick", "unique index", "public.m_nick_lower", "expression"},
		{"code", "unique", "m_code_deferred", "deferrable"},
	} {
		d := findDep(f.plan.Dependencies, want.column, want.kind, want.object)
		if d == nil || d.Action != catalog.ActionRefused || d.Blocks != catalog.BlocksCleanup || !strings.Contains(d.Detail, want.why) {
			t.Errorf("%s %s on %s: %v, want refused at cleanup because of %s", want.kind, want.object, want.column, d, want.why)
		}
	}
}
