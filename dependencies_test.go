package pgphi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/cli"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/demo"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/pgcluster"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/policy"
)

// A clinic schema with every kind of dependency on its protected columns.
const clinicDDL = `
CREATE TABLE public.patient (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  mrn text NOT NULL UNIQUE,
  full_name text NOT NULL,
  email text UNIQUE,
  notes text DEFAULT '' CONSTRAINT notes_short CHECK (length(notes) < 200),
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN public.patient.mrn IS 'medical record number';
CREATE INDEX patient_name_lower ON public.patient (lower(full_name));
COMMENT ON INDEX public.patient_name_lower IS 'name lookups';
CREATE VIEW public.patient_contact AS SELECT id, full_name, email FROM public.patient;
CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.created_at := now(); RETURN NEW; END $$;
CREATE TRIGGER patient_notes_touch BEFORE UPDATE OF notes ON public.patient FOR EACH ROW EXECUTE FUNCTION public.touch();
COMMENT ON TRIGGER patient_notes_touch ON public.patient IS 'notes changed';
CREATE STATISTICS public.patient_name_stats (dependencies) ON full_name, email FROM public.patient;
CREATE TABLE public.visit (
  clinic int NOT NULL,
  visit_no int NOT NULL,
  patient_id uuid REFERENCES public.patient (id),
  reason text NOT NULL,
  code text,
  PRIMARY KEY (clinic, visit_no),
  CONSTRAINT visit_reason_code UNIQUE (reason, code)
);
CREATE UNIQUE INDEX visit_code_open ON public.visit (code) WHERE clinic > 0;
INSERT INTO public.patient (mrn, full_name, email, notes)
SELECT 'MRN' || g, 'Name ' || g, CASE WHEN g % 4 = 0 THEN NULL ELSE 'p' || g || '@example.org' END, 'note ' || g
FROM generate_series(1, 60) g;
INSERT INTO public.visit SELECT 1, g, NULL, 'reason ' || g, 'C' || g FROM generate_series(1, 20) g;`

const clinicConfig = `version: 1
apply: { batch_size: 25, workers: 1 }
tables:
  patient:
    columns:
      mrn:       { class: pii, search: [exact] }
      full_name: { class: pii, search: [exact] }
      email:     { class: pii }
      notes:     { class: phi }
  visit:
    columns:
      reason: { class: phi }
      code:   { class: phi }
`

// schemaDump is pg_dump --schema-only of the application's schema, with
// the lines inside each CREATE TABLE sorted (PostgreSQL cannot reorder
// columns: re-added ones come last) and nothing else changed.
func schemaDump(t *testing.T, url string) string {
	t.Helper()
	bin, err := pgcluster.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "pg_dump"), "--schema-only", "--no-owner", "--no-privileges", "-N", "pgphi", "-d", url).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	var res, block []string
	in := false
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, `\restrict `) || strings.HasPrefix(line, `\unrestrict `):
			// A random token per dump (pg_dump's protection of psql).
		case strings.HasPrefix(line, "CREATE TABLE "):
			in = true
			res = append(res, line)
		case in && strings.HasPrefix(line, ");"):
			sort.Strings(block)
			res = append(res, block...)
			res = append(res, line)
			block, in = nil, false
		case in:
			block = append(block, strings.TrimSuffix(line, ","))
		default:
			res = append(res, line)
		}
	}
	return strings.Join(res, "\n")
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// writeRow inserts (or, with update, updates by key) table's row as an
// application would: the key and every assignment.
func writeRow(ctx context.Context, pool *pgxpool.Pool, table string, key pgphi.Key, a pgphi.Assignments, update bool) error {
	var cols, sets []string
	var args []any
	for _, k := range sortedKeys(key) {
		cols = append(cols, k)
		args = append(args, key[k])
	}
	nk := len(cols)
	for _, c := range a.Columns() {
		cols = append(cols, c)
		args = append(args, a[c])
	}
	var ph []string
	for i := range cols {
		ph = append(ph, "$"+itoa(i+1))
		if i >= nk {
			sets = append(sets, pgx.Identifier{cols[i]}.Sanitize()+" = $"+itoa(i+1))
		}
	}
	q := "INSERT INTO public." + table + " (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(ph, ", ") + ")"
	if update {
		var where []string
		for i := range nk {
			where = append(where, cols[i]+" = $"+itoa(i+1)+"::"+map[bool]string{true: "uuid", false: "int"}[cols[i] == "id"])
		}
		q = "UPDATE public." + table + " SET " + strings.Join(sets, ", ") + " WHERE " + strings.Join(where, " AND ")
	}
	_, err := pool.Exec(ctx, q, args...)
	return err
}

func sortedKeys(k pgphi.Key) []string {
	var out []string
	for n := range k {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// The whole life of a schema pgphi was not built for: every dependency
// listed, a duplicate MRN refused in every phase, application writes under
// require_encryption, a view that blocks cleanup with nothing changed,
// cleanup, rollback after cleanup, and the schema exactly as it was.
func TestClinicSchemaLifecycle(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	conn := pgtest.Connect(t, url)
	if _, err := conn.Exec(ctx, clinicDDL); err != nil {
		t.Fatal(err)
	}
	before := schemaDump(t, url)
	f, err := newFixture(ctx, url, t.TempDir(), "SELECT 1", clinicConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	log := &bytes.Buffer{}
	runner := func() *engine.Runner {
		return &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: log}
	}

	// The plan lists every dependency, with its action.
	if err := f.plan.DiscoverDependencies(ctx, f.pool, f.cfg.Encryption.ColumnSuffix); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ column, kind, object, action string }{
		{"mrn", "not null", "", catalog.ActionCarried},
		{"mrn", "unique", "patient_mrn_key", catalog.ActionCarried},
		{"mrn", "comment", "", catalog.ActionCarried},
		{"email", "unique", "patient_email_key", catalog.ActionCarried},
		{"notes", "check", "notes_short", catalog.ActionCarried},
		{"notes", "default", "", catalog.ActionWarned},
		{"full_name", "index", "public.patient_name_lower (expression)", "replaced by exact search"},
		{"full_name", "view", "public.patient_contact", catalog.ActionRefused},
		{"reason", "unique", "visit_reason_code (2 columns)", catalog.ActionCarried},
		{"code", "unique index", "public.visit_code_open (partial)", catalog.ActionCarried},
		{"notes", "trigger", "patient_notes_touch", catalog.ActionRefused},
		{"email", "statistics", "public.patient_name_stats", catalog.ActionWarned},
	} {
		found := false
		for _, d := range f.plan.Dependencies {
			if d.Column == want.column && d.Kind == want.kind && strings.HasPrefix(d.Object, want.object) {
				found = true
				if d.Action != want.action {
					t.Errorf("%s: action %q, want %q", d, d.Action, want.action)
				}
			}
		}
		if !found {
			t.Errorf("plan does not list %s %s on %s:\n%v", want.kind, want.object, want.column, f.plan.Dependencies)
		}
	}
	var printed bytes.Buffer
	f.plan.Print(&printed)
	if strings.Contains(printed.String(), "MRN1") || strings.Contains(printed.String(), "example.org") {
		t.Fatal("the plan shows a value")
	}

	pool := appPool(t, url)
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile), pgphi.Unaudited())
	if err != nil {
		t.Fatal(err)
	}
	dupMRN := func(phase string) {
		t.Helper()
		a, err := client.Row(ctx, "patient", pgphi.Key{"id": "00000000-0000-0000-0000-0000000000d1"}, map[string]any{"mrn": "MRN7", "full_name": "Dup", "email": nil, "notes": "x"})
		if err != nil {
			t.Fatalf("%s: seal: %v", phase, err)
		}
		if err := writeRow(ctx, pool, "patient", pgphi.Key{"id": "00000000-0000-0000-0000-0000000000d1"}, a, false); sqlState(err) != "23505" {
			t.Fatalf("%s: a duplicate MRN: %v", phase, err)
		}
	}
	dupMRN("after apply")
	for _, c := range []string{"mrn_uniq", "email_uniq", "reason_uniq", "code_uniq"} {
		var n int
		if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM pg_attribute WHERE attname = $1 AND NOT attisdropped AND attrelid IN ('public.patient'::regclass, 'public.visit'::regclass)", c).Scan(&n); err != nil || n != 1 {
			t.Fatalf("digest column %s: %d %v", c, n, err)
		}
	}

	// Cutover: the application writes ciphertext only, through the API.
	for _, flag := range []string{engine.FlagUseEncryptedSearch, engine.FlagRequireEncryption} {
		if err := engine.SetFlag(ctx, f.pool, flag, true); err != nil {
			t.Fatal(err)
		}
	}
	newID := pgphi.Key{"id": "00000000-0000-0000-0000-0000000000a1"}
	a, err := client.Row(ctx, "patient", newID, map[string]any{"mrn": "MRN-NEW", "full_name": "New Patient", "email": "new@example.org", "notes": "first visit"})
	if err != nil {
		t.Fatal(err)
	}
	if a["mrn"] != nil || a["mrn_uniq"] == nil {
		t.Fatalf("assignments under require_encryption: %v", a.Columns())
	}
	if err := writeRow(ctx, pool, "patient", newID, a, false); err != nil {
		t.Fatalf("insert under require_encryption: %v", err)
	}
	a, err = client.Row(ctx, "patient", newID, map[string]any{"email": "changed@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeRow(ctx, pool, "patient", newID, a, true); err != nil {
		t.Fatalf("update under require_encryption: %v", err)
	}
	dupMRN("after cutover")
	if _, err := client.Row(ctx, "patient", newID, map[string]any{"notes": strings.Repeat("n", 300)}); !errors.Is(err, pgphi.ErrInvalid) || !strings.Contains(err.Error(), "notes_short") || strings.Contains(err.Error(), "nnnn") {
		t.Fatalf("a note breaking notes_short: %v", err)
	}
	// Many values are validated in one round trip; the one that breaks the
	// CHECK is named by its position, never its value.
	many := []pgphi.Unsealed{{Key: newID, Value: "fine"}, {Key: newID, Value: strings.Repeat("m", 300)}, {Key: newID, Value: "also fine"}}
	if _, err := client.SealAll(ctx, "patient", "notes", many); !errors.Is(err, pgphi.ErrInvalid) || !strings.Contains(err.Error(), "value 2 of 3") || !strings.Contains(err.Error(), "notes_short") || strings.Contains(err.Error(), "mmmm") {
		t.Fatalf("the second of three notes breaking notes_short: %v", err)
	}
	if out, err := client.SealAll(ctx, "patient", "notes", []pgphi.Unsealed{many[0], many[2]}); err != nil || len(out) != 2 {
		t.Fatalf("two valid notes: %v", err)
	}
	if _, err := client.Row(ctx, "visit", pgphi.Key{"clinic": "1", "visit_no": "99"}, map[string]any{"reason": "x"}); !errors.Is(err, pgphi.ErrUniqueMembers) {
		t.Fatalf("half of a two-column unique rule: %v", err)
	}
	va, err := client.Row(ctx, "visit", pgphi.Key{"clinic": "1", "visit_no": "99"}, map[string]any{"reason": "reason 3", "code": "C3"})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeRow(ctx, pool, "visit", pgphi.Key{"clinic": "1", "visit_no": "99"}, va, false); sqlState(err) != "23505" {
		t.Fatalf("a duplicate (reason, code): %v", err)
	}
	// Attack: a writer without the keys cannot slip a duplicate past the
	// digest: leaving it out is refused, copying another row's is a duplicate.
	if _, err := f.pool.Exec(ctx, "INSERT INTO public.patient (id, full_name_encrypted, mrn_encrypted, mrn_uniq, notes) SELECT '00000000-0000-0000-0000-0000000000e1', full_name_encrypted, mrn_encrypted, NULL, NULL FROM public.patient WHERE mrn = 'MRN9'"); sqlState(err) != "23514" {
		t.Fatalf("a ciphertext without its digest: %v", err)
	}
	if _, err := f.pool.Exec(ctx, "INSERT INTO public.patient (id, full_name_encrypted, mrn_encrypted, mrn_uniq, notes) SELECT '00000000-0000-0000-0000-0000000000e2', full_name_encrypted, mrn_encrypted, mrn_uniq, NULL FROM public.patient WHERE mrn = 'MRN9'"); sqlState(err) != "23505" {
		t.Fatalf("a copied digest: %v", err)
	}
	r := runner()
	if err := r.Apply(ctx); err != nil {
		t.Fatalf("apply after cutover: %v\n%s", err, log)
	}
	if res, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0); err != nil || !res.OK() {
		t.Fatalf("verify after cutover: %+v %v", res, err)
	}

	// The view blocks check and cleanup, with nothing changed.
	if blockers := f.plan.CheckBlockers(); len(blockers) == 0 || blockers[0].Object != "public.patient_contact" {
		t.Fatalf("check blockers: %v", blockers)
	}
	snapshot := func() string {
		var s string
		if err := f.pool.QueryRow(ctx, `SELECT string_agg(attname || ':' || attnotnull, ',' ORDER BY attname) || (SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'public.patient'::regclass)
			|| (SELECT md5(string_agg(concat_ws('|', id, mrn, mrn_encrypted, mrn_uniq, email), ',' ORDER BY id)) FROM public.patient)
			FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attnum > 0 AND NOT attisdropped`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s0 := snapshot()
	if err := runner().Cleanup(ctx, f.plan.ID, engine.CleanupOptions{Purge: "vacuum-full"}); !errors.Is(err, engine.ErrRefused) || !strings.Contains(err.Error(), "view public.patient_contact") {
		t.Fatalf("cleanup with a view: %v", err)
	}
	if snapshot() != s0 {
		t.Fatal("a refused cleanup changed the table")
	}
	// The documented way: a view over the ciphertext columns meanwhile,
	// and the trigger on the ciphertext column.
	if _, err := conn.Exec(ctx, "DROP TRIGGER patient_notes_touch ON public.patient; CREATE TRIGGER patient_notes_touch BEFORE UPDATE OF notes_encrypted ON public.patient FOR EACH ROW EXECUTE FUNCTION public.touch()"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "DROP VIEW public.patient_contact; CREATE VIEW public.patient_contact_sealed AS SELECT id, full_name_encrypted, email_encrypted FROM public.patient"); err != nil {
		t.Fatal(err)
	}
	if err := runner().Cleanup(ctx, f.plan.ID, engine.CleanupOptions{Purge: "vacuum-full"}); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, log)
	}
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
	dupMRN("after cleanup")
	a, err = client.Row(ctx, "patient", pgphi.Key{"id": "00000000-0000-0000-0000-0000000000a2"}, map[string]any{"mrn": "MRN-NEW2", "full_name": "Second", "email": nil, "notes": "ok"})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeRow(ctx, pool, "patient", pgphi.Key{"id": "00000000-0000-0000-0000-0000000000a2"}, a, false); err != nil {
		t.Fatalf("insert after cleanup: %v", err)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE public.patient SET mrn_uniq = NULL WHERE id = '00000000-0000-0000-0000-0000000000a2'"); sqlState(err) != "23514" {
		t.Fatalf("a digest cleared after cleanup: %v", err)
	}
	if res, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0); err != nil || !res.OK() {
		t.Fatalf("verify after cleanup: %+v %v", res, err)
	}

	// Rollback after cleanup puts back everything cleanup removed.
	if _, err := conn.Exec(ctx, "DROP VIEW public.patient_contact_sealed; DROP TRIGGER patient_notes_touch ON public.patient"); err != nil {
		t.Fatal(err)
	}
	if err := runner().Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v\n%s", err, log)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO public.patient (mrn, full_name) VALUES ('MRN7', 'Dup')"); sqlState(err) != "23505" {
		t.Fatalf("a duplicate MRN after rollback: %v", err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM public.patient WHERE id IN ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000a2');
		CREATE VIEW public.patient_contact AS SELECT id, full_name, email FROM public.patient;
		CREATE TRIGGER patient_notes_touch BEFORE UPDATE OF notes ON public.patient FOR EACH ROW EXECUTE FUNCTION public.touch();
		COMMENT ON TRIGGER patient_notes_touch ON public.patient IS 'notes changed'`); err != nil {
		t.Fatal(err)
	}
	var mrn, email string
	if err := conn.QueryRow(ctx, "SELECT mrn, email FROM public.patient WHERE mrn = 'MRN5'").Scan(&mrn, &email); err != nil || email != "p5@example.org" {
		t.Fatalf("data after rollback: %q %q %v", mrn, email, err)
	}
	if after := schemaDump(t, url); after != before {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "before.sql"), []byte(before), 0o600)
		os.WriteFile(filepath.Join(dir, "after.sql"), []byte(after), 0o600)
		diff, _ := exec.Command("diff", "-u", filepath.Join(dir, "before.sql"), filepath.Join(dir, "after.sql")).CombinedOutput()
		t.Fatalf("schema after rollback differs (column order ignored):\n%s", diff)
	}
	_ = io.Discard
}

// Attacks on the digest column by separate login roles: a writer with
// INSERT and UPDATE on the table but no key cannot slip a duplicate MRN
// past it (leaving the digest out, clearing it, or copying another row's),
// and an outsider cannot read the rules or the wrapped keys the digest key
// derives from.
func TestWriterCannotBypassTheDigest(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	f, err := newFixture(ctx, url, t.TempDir(), clinicDDL+"DROP VIEW public.patient_contact;", clinicConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	actors := pgtest.NewActors(t, url)
	if _, err := policy.InitRoles(ctx, f.pool, policy.DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "GRANT SELECT, INSERT, UPDATE ON public.patient TO "+actors.AppWriter); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{engine.FlagUseEncryptedSearch, engine.FlagRequireEncryption} {
		if err := engine.SetFlag(ctx, f.pool, flag, true); err != nil {
			t.Fatal(err)
		}
	}
	writer := actors.Connect(t, actors.AppWriter)
	for _, attack := range []struct{ name, sql, state string }{
		{"a ciphertext without its digest", `INSERT INTO public.patient (id, full_name_encrypted, mrn_encrypted, notes)
			SELECT '00000000-0000-0000-0000-0000000000e1', full_name_encrypted, mrn_encrypted, NULL FROM public.patient WHERE mrn = 'MRN9'`, "23514"},
		{"another row's digest", `INSERT INTO public.patient (id, full_name_encrypted, mrn_encrypted, mrn_uniq, notes)
			SELECT '00000000-0000-0000-0000-0000000000e2', full_name_encrypted, mrn_encrypted, mrn_uniq, NULL FROM public.patient WHERE mrn = 'MRN9'`, "23505"},
		{"a cleared digest", `UPDATE public.patient SET mrn = NULL, mrn_uniq = NULL WHERE mrn = 'MRN9'`, "23514"},
		{"a digest copied onto a row", `UPDATE public.patient SET mrn_uniq = (SELECT mrn_uniq FROM public.patient WHERE mrn = 'MRN9') WHERE mrn = 'MRN10'`, "23505"},
		{"dropping the digest's check", `ALTER TABLE public.patient DROP CONSTRAINT ` + pgx.Identifier{"pgphi_uniq_public_patient_mrn_uniq"}.Sanitize(), "42501"},
	} {
		if _, err := writer.Exec(ctx, attack.sql); sqlState(err) != attack.state {
			t.Errorf("%s: %v, want SQLSTATE %s", attack.name, err, attack.state)
		}
	}
	outsider := actors.Connect(t, actors.Outsider)
	for _, q := range []string{"SELECT * FROM pgphi.unique_columns", "SELECT * FROM pgphi.data_keys", "SELECT mrn_uniq FROM public.patient"} {
		if _, err := outsider.Exec(ctx, q); sqlState(err) != "42501" {
			t.Errorf("outsider %q: %v", q, err)
		}
	}
	if _, err := writer.Exec(ctx, "SELECT * FROM pgphi.data_keys"); sqlState(err) != "42501" {
		t.Errorf("writer reads the wrapped keys: %v", err)
	}
	if res, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0); err != nil || !res.OK() {
		t.Fatalf("verify after the attacks: %+v %v", res, err)
	}
	// A digest forged by someone holding the key is caught by verify.
	if _, err := f.pool.Exec(ctx, "UPDATE public.patient SET mrn_uniq = sha256(mrn_uniq) WHERE mrn = 'MRN11'"); err != nil {
		t.Fatal(err)
	}
	res, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0)
	if err != nil || res.Mismatches != 1 || res.Examples[0].Column != "mrn_uniq" || res.Examples[0].Problem != engine.ProblemUniq {
		t.Fatalf("verify of a forged digest: %+v %v", res, err)
	}
	// A note sealed without the API's validation (it breaks notes_short)
	// and written as ciphertext only: the CHECK passes on the NULL
	// plaintext, verify applies the rule to the value.
	var id string
	if err := f.pool.QueryRow(ctx, "SELECT id::text FROM public.patient WHERE mrn = 'MRN12'").Scan(&id); err != nil {
		t.Fatal(err)
	}
	sealer, err := f.ring.Sealer("public.patient", "notes")
	if err != nil {
		t.Fatal(err)
	}
	const canary = "Qzxlongnote"
	ct, err := sealer.Seal(nil, envelope.Value{Type: envelope.TypeText, Text: canary + strings.Repeat("n", 300)},
		envelope.Binding{Table: "public.patient", Column: "notes", PrimaryKey: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE public.patient SET notes = NULL, notes_encrypted = $1 WHERE id = $2::uuid", ct, id); err != nil {
		t.Fatal(err)
	}
	res, err = engine.Verify(ctx, f.pool, f.ring, f.plan, 0)
	if err != nil || res.Mismatches != 2 || res.Examples[1].Column != "notes" || !strings.Contains(res.Examples[1].Problem, "check notes_short") || res.Examples[1].Key[0] != id {
		t.Fatalf("verify of a note that breaks its CHECK: %+v %v", res, err)
	}
	if strings.Contains(fmt.Sprint(res), canary) {
		t.Fatal("verify's result shows the value")
	}
}

// Equality follows the column type, NULLs follow the rule, and a domain's
// constraint is a validation rule: after cleanup, numeric 1.5 is a
// duplicate of 1.50, a second NULL is a duplicate under NULLS NOT
// DISTINCT, and a value outside the domain is refused before it is sealed.
func TestUniqueUnderTheTypesEquality(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	ddl := `
CREATE DOMAIN public.mrn_t AS text CHECK (VALUE ~ '^MRN[0-9]+$');
CREATE TABLE public.lab (
  id int PRIMARY KEY,
  mrn public.mrn_t,
  amount numeric UNIQUE,
  code text,
  CONSTRAINT lab_code UNIQUE NULLS NOT DISTINCT (code)
);
INSERT INTO public.lab VALUES (1, 'MRN1', 1.50, 'A'), (2, 'MRN2', 2, NULL), (3, 'MRN3', 30, 'a');`
	cfg := `version: 1
apply: { batch_size: 10, workers: 1 }
tables:
  lab:
    columns:
      mrn:    { class: pii }
      amount: { class: phi }
      code:   { class: phi }
`
	f, err := newFixture(ctx, url, t.TempDir(), ddl, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	for _, flag := range engine.FlagNames {
		if err := engine.SetFlag(ctx, f.pool, flag, true); err != nil {
			t.Fatal(err)
		}
	}
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	if err := r.Cleanup(ctx, f.plan.ID, engine.CleanupOptions{Purge: "vacuum-full"}); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	pool := appPool(t, url)
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile), pgphi.Unaudited())
	if err != nil {
		t.Fatal(err)
	}
	id := 10
	write := func(values map[string]any) error {
		t.Helper()
		id++
		key := pgphi.Key{"id": strconv.Itoa(id)}
		a, err := client.Row(ctx, "lab", key, values)
		if err != nil {
			return err
		}
		return writeRow(ctx, pool, "lab", key, a, false)
	}
	for _, c := range []struct {
		name   string
		values map[string]any
		state  string
	}{
		{"1.5 after 1.50", map[string]any{"mrn": "MRN11", "amount": "1.5", "code": "B"}, "23505"},
		{"a second NULL code", map[string]any{"mrn": "MRN12", "amount": "7", "code": nil}, "23505"},
		{"a code that differs only in case", map[string]any{"mrn": "MRN13", "amount": "8", "code": "A "}, ""},
		{"Another case of a", map[string]any{"mrn": "MRN14", "amount": "9", "code": "A"}, "23505"},
		{"a NULL amount twice", map[string]any{"mrn": "MRN15", "amount": nil, "code": "C"}, ""},
		{"and again", map[string]any{"mrn": "MRN16", "amount": nil, "code": "D"}, ""},
	} {
		if err := write(c.values); sqlState(err) != c.state {
			t.Errorf("%s: %v, want SQLSTATE %q", c.name, err, c.state)
		}
	}
	if _, err := client.Row(ctx, "lab", pgphi.Key{"id": "99"}, map[string]any{"mrn": "Zqx-not-an-mrn"}); !errors.Is(err, pgphi.ErrInvalid) || strings.Contains(err.Error(), "Zqx") {
		t.Fatalf("a value outside the domain: %v", err)
	}
	if _, err := client.SealAll(ctx, "lab", "mrn", []pgphi.Unsealed{{Key: pgphi.Key{"id": "98"}, Value: "MRN98"}, {Key: pgphi.Key{"id": "99"}, Value: "Zqx-not-an-mrn"}}); !errors.Is(err, pgphi.ErrInvalid) || !strings.Contains(err.Error(), "value 2 of 2") || strings.Contains(err.Error(), "Zqx") {
		t.Fatalf("the second of two values outside the domain: %v", err)
	}
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
	if res, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0); err != nil || !res.OK() {
		t.Fatalf("verify: %+v %v", res, err)
	}
}

// The Felicity schema (first and last names NOT NULL, foreign keys between
// protected tables' rows) through the same life: the application registers
// a patient under require_encryption through the API, cleanup, rollback
// after cleanup, and pg_dump --schema-only as before apply.
func TestFelicityLifecycle(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	conn := pgtest.Connect(t, url)
	if err := demo.CreateSchema(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := demo.Populate(ctx, conn, demo.Options{Patients: 120, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	before := schemaDump(t, url)
	f, err := newFixture(ctx, url, t.TempDir(), "SELECT 1", cli.DemoConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	for _, flag := range engine.FlagNames {
		if err := engine.SetFlag(ctx, f.pool, flag, true); err != nil {
			t.Fatal(err)
		}
	}
	pool := appPool(t, url)
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile), pgphi.Unaudited())
	if err != nil {
		t.Fatal(err)
	}
	key := pgphi.Key{"uid": "P-NEW-1"}
	a, err := client.Row(ctx, "patient", key, map[string]any{"first_name": "Wanjiru", "last_name": "Kamau", "middle_name": nil,
		"phone_mobile": "+254 712 345678", "phone_home": nil, "email": nil, "date_of_birth": "1990-02-03"})
	if err != nil {
		t.Fatal(err)
	}
	if err := insert(ctx, pool, "P-NEW-1", a); err != nil {
		t.Fatalf("registering a patient under require_encryption: %v", err)
	}
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	if err := r.Cleanup(ctx, f.plan.ID, engine.CleanupOptions{Purge: "vacuum-full"}); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
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
	r = &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	if err := r.Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	var last string
	if err := conn.QueryRow(ctx, "SELECT last_name FROM public.patient WHERE uid = 'P-NEW-1'").Scan(&last); err != nil || last != "Kamau" {
		t.Fatalf("the registered patient after rollback: %q %v", last, err)
	}
	if _, err := conn.Exec(ctx, "DELETE FROM public.patient WHERE uid = 'P-NEW-1'"); err != nil {
		t.Fatal(err)
	}
	if after := schemaDump(t, url); after != before {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "before.sql"), []byte(before), 0o600)
		os.WriteFile(filepath.Join(dir, "after.sql"), []byte(after), 0o600)
		diff, _ := exec.Command("diff", "-u", filepath.Join(dir, "before.sql"), filepath.Join(dir, "after.sql")).CombinedOutput()
		t.Fatalf("schema after rollback differs (column order ignored):\n%s", diff)
	}
}

// Before require_encryption, one writer stores an MRN as ciphertext only
// and another the same MRN as plaintext: the plaintext's constraint cannot
// compare them, the digest can. Apply's catch-up stops, naming both rows'
// keys (never the value), and records the failure.
func TestDuplicateAcrossWriteModesNamesTheRows(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	f, err := newFixture(ctx, url, t.TempDir(), clinicDDL+"DROP VIEW public.patient_contact; DROP TRIGGER patient_notes_touch ON public.patient;", clinicConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	pool := appPool(t, url)
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile), pgphi.Unaudited())
	if err != nil {
		t.Fatal(err)
	}
	const canary = "MRN-Zqx77"
	key := pgphi.Key{"id": "00000000-0000-0000-0000-0000000000c1"}
	a, err := client.Row(ctx, "patient", key, map[string]any{"mrn": canary, "full_name": "Sealed Only", "email": nil, "notes": nil})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"mrn", "full_name", "email", "notes"} {
		a[c] = nil // an application writing ciphertext only, early
	}
	if err := writeRow(ctx, pool, "patient", key, a, false); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO public.patient (id, mrn, full_name) VALUES ('00000000-0000-0000-0000-0000000000c2', $1, 'Plain')", canary); err != nil {
		t.Fatal(err)
	}
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	err = r.Apply(ctx)
	var re *engine.RowError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "00000000-0000-0000-0000-0000000000c1") || !strings.Contains(err.Error(), "00000000-0000-0000-0000-0000000000c2") || !strings.Contains(err.Error(), "patient_mrn_key") {
		t.Fatalf("apply with a duplicate across write modes: %v", err)
	}
	if strings.Contains(err.Error(), canary) {
		t.Fatal("the error shows the value")
	}
	var n int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM pgphi.failures WHERE table_name = 'public.patient' AND resolved_at IS NULL").Scan(&n); err != nil || n != 1 {
		t.Fatalf("failures recorded: %d %v", n, err)
	}
}

// A rollback before cleanup removes the digest columns, their CHECKs,
// indexes and recorded rules with the rest: the schema is as before apply.
func TestRollbackBeforeCleanupRemovesDigests(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	conn := pgtest.Connect(t, url)
	if _, err := conn.Exec(ctx, clinicDDL); err != nil {
		t.Fatal(err)
	}
	before := schemaDump(t, url)
	f, err := newFixture(ctx, url, t.TempDir(), "SELECT 1", clinicConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	if err := r.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if after := schemaDump(t, url); after != before {
		t.Fatalf("schema after rollback before cleanup differs:\n%s", after)
	}
	var n int
	if err := f.pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM pgphi.unique_columns) + (SELECT count(*) FROM pgphi.column_rules) + (SELECT count(*) FROM pgphi.removed_objects)").Scan(&n); err != nil || n != 0 {
		t.Fatalf("state left after rollback: %d %v", n, err)
	}
}

// The whole life run by a dba login that is a member of the table's owner
// and no superuser, as in production: the digest state and indexes need
// nothing more than the grants `roles init` gives.
func TestDigestsByADBAMember(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	f, err := prepareFixture(ctx, url, t.TempDir(), clinicDDL+"DROP VIEW public.patient_contact; DROP TRIGGER patient_notes_touch ON public.patient;", clinicConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	a := pgtest.NewActors(t, url)
	if _, err := f.pool.Exec(ctx, "ALTER TABLE public.patient OWNER TO "+pgx.Identifier{a.AppOwner}.Sanitize()+"; ALTER TABLE public.visit OWNER TO "+pgx.Identifier{a.AppOwner}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.InitRoles(ctx, f.pool, policy.DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	pool, err := dbconn.Open(ctx, a.URL(a.DBA), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	log := &bytes.Buffer{}
	r := &engine.Runner{Pool: pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: log}
	if err := r.Apply(ctx); err != nil {
		t.Fatalf("apply by a dba member: %v\n%s", err, log)
	}
	if _, err := f.pool.Exec(ctx, "INSERT INTO public.patient (mrn, full_name) VALUES ('MRN3', 'Dup')"); sqlState(err) != "23505" {
		t.Fatalf("a duplicate MRN: %v", err)
	}
	for _, flag := range engine.FlagNames {
		if err := engine.SetFlag(ctx, pool, flag, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Cleanup(ctx, f.plan.ID, engine.CleanupOptions{Purge: "vacuum-full", VacuumFull: true}); err != nil {
		t.Fatalf("cleanup by a dba member: %v\n%s", err, log)
	}
	cleaned, err := engine.LoadCleaned(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := catalog.Resolve(ctx, pool, f.cfg, cleaned)
	if err != nil {
		t.Fatal(err)
	}
	if r.Plan, err = engine.NewPlan(f.cfg, tables); err != nil {
		t.Fatal(err)
	}
	if res, err := engine.Verify(ctx, pool, f.ring, r.Plan, 0); err != nil || !res.OK() {
		t.Fatalf("verify by a dba member after cleanup: %+v %v", res, err)
	}
	if err := r.Rollback(ctx); err != nil {
		t.Fatalf("rollback by a dba member: %v\n%s", err, log)
	}
	if _, err := f.pool.Exec(ctx, "INSERT INTO public.patient (mrn, full_name) VALUES ('MRN3', 'Dup')"); sqlState(err) != "23505" {
		t.Fatalf("a duplicate MRN after rollback: %v", err)
	}
}
