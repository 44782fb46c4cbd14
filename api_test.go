package pgphi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/search"
)

// appPool connects like an application: none of pgphi's session settings,
// and settings that change every text output that could.
func appPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["TimeZone"] = "Pacific/Auckland"
	cfg.ConnConfig.RuntimeParams["DateStyle"] = "SQL, DMY"
	cfg.ConnConfig.RuntimeParams["extra_float_digits"] = "0"
	cfg.ConnConfig.RuntimeParams["bytea_output"] = "escape"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// insert writes a row of patient with the assignments, as an application would.
func insert(ctx context.Context, pool *pgxpool.Pool, uid string, a pgphi.Assignments) error {
	cols := append([]string{"uid"}, a.Columns()...)
	args := append([]any{uid}, a.Values()...)
	var ph []string
	for i := range cols {
		ph = append(ph, fmt.Sprintf("$%d", i+1))
	}
	_, err := pool.Exec(ctx, "INSERT INTO public.patient ("+strings.Join(cols, ", ")+") VALUES ("+strings.Join(ph, ", ")+")", args...)
	return err
}

func keysOf(res *search.Result) []pgphi.Key {
	out := []pgphi.Key{}
	for _, k := range res.Keys {
		out = append(out, pgphi.Key{"uid": k[0]})
	}
	return out
}

// A row written through the API verifies as pgphi verifies, and every kind
// of search finds exactly what `pgphi search` finds.
func TestRowVerifiesAndIsFound(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	pool := appPool(t, f.url)
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	// Before require_encryption the API writes the plaintext too: the
	// trigger marks the row for pgphi's catch-up, which encrypts it again.
	a, err := client.Row(ctx, "patient", pgphi.Key{"uid": "P23"}, map[string]any{"last_name": "Smithe", "visits": 1})
	if err != nil {
		t.Fatal(err)
	}
	if a["last_name"] != "Smithe" || a["visits"] != "1" {
		t.Fatalf("plaintext assignments before require_encryption: %v %v", a["last_name"], a["visits"])
	}
	if err := insert(ctx, pool, "P23", a); err != nil {
		t.Fatal(err)
	}
	if err := engine.SetFlag(ctx, f.pool, engine.FlagRequireEncryption, true); err != nil {
		t.Fatal(err)
	}
	rows := map[string]map[string]any{
		"P20": {"last_name": "  SMITH ", "date_of_birth": time.Date(1980, 2, 29, 23, 0, 0, 0, time.FixedZone("x", -5*3600)), "phone": "+1 650-253-0000", "visits": int64(12)},
		"P21": {"last_name": "Jonés", "date_of_birth": "1991-07-01", "phone": nil, "visits": "4"},
		"P22": {"last_name": "Smithson", "date_of_birth": nil, "phone": "415 555 0100", "visits": nil},
	}
	for _, uid := range []string{"P20", "P21", "P22"} {
		a, err := client.Row(ctx, "patient", pgphi.Key{"uid": uid}, rows[uid])
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := a["last_name_bidx"].([]int64); !ok {
			t.Fatalf("%s: terms: %T", uid, a["last_name_bidx"])
		}
		if err := insert(ctx, pool, uid, a); err != nil {
			t.Fatal(err)
		}
	}
	res, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mismatches != 0 || res.Pending != 1 || res.Rows != 8 || res.Values != 28 {
		t.Fatalf("verify: %+v", res)
	}
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err = engine.Verify(ctx, f.pool, f.ring, f.plan, 0); err != nil || !res.OK() || res.Values != 32 {
		t.Fatalf("verify after catch-up: %+v %v", res, err)
	}
	// The API wrote the terms pgphi would have: none was pending, and the
	// rows are indexed.
	var pending int
	f.pool.QueryRow(ctx, "SELECT count(*) FROM public.patient WHERE uid IN ('P20', 'P21', 'P22') AND (last_name_bidx IS NULL OR pgphi_pending)").Scan(&pending)
	if pending != 0 {
		t.Fatalf("%d API rows without terms", pending)
	}
	searcher, err := search.New(ctx, f.pool, f.ring, f.plan)
	if err != nil {
		t.Fatal(err)
	}
	queries := []struct {
		column string
		q      pgphi.Query
	}{
		{"last_name", pgphi.Query{Kind: pgphi.Exact, Value: "smith"}},
		{"last_name", pgphi.Query{Kind: pgphi.Phonetic, Value: "smyth"}},
		{"last_name", pgphi.Query{Kind: pgphi.Prefix, Value: "smi"}},
		{"last_name", pgphi.Query{Kind: pgphi.Exact, Value: "jones"}},
		{"phone", pgphi.Query{Kind: pgphi.Phone, Value: "(650) 253 0000"}},
		{"phone", pgphi.Query{Kind: pgphi.Last4, Value: "0100"}},
		{"phone", pgphi.Query{Kind: pgphi.AreaCode, Value: "+1 415"}},
		{"date_of_birth", pgphi.Query{Kind: pgphi.Date, Value: "1980-02-29"}},
		{"date_of_birth", pgphi.Query{Kind: pgphi.Year, Value: "1991"}},
		{"date_of_birth", pgphi.Query{Kind: pgphi.AgeBetween, MinAge: 30, MaxAge: 50, Today: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}},
	}
	found := map[string]bool{}
	for _, q := range queries {
		got, err := client.Find(ctx, "patient", q.column, q.q, "test")
		if err != nil {
			t.Fatalf("%s %s: %v", q.column, q.q.Kind, err)
		}
		want, err := searcher.Find(ctx, "patient", q.column, blindindex.Query(q.q))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(keysOf(want)) || len(got) == 0 {
			t.Fatalf("%s %s: API %v, pgphi search %v", q.column, q.q.Kind, got, keysOf(want))
		}
		for _, k := range got {
			found[k["uid"]] = true
		}
	}
	for _, uid := range []string{"P20", "P21", "P22", "P23"} {
		if !found[uid] {
			t.Errorf("%s written through the API was never found", uid)
		}
	}
}

// Ciphertexts the API writes open by pgphi's own path (keys.Keyring, as
// verify and search use it), and ciphertexts pgphi's backfill wrote open
// through the API. A ciphertext moved to another row does not.
func TestCiphertextsInteroperate(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	client, err := pgphi.Open(ctx, appPool(t, f.url), pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	a, err := client.Seal(ctx, "public.patient", "date_of_birth", pgphi.Key{"uid": "P9"}, time.Date(2001, 9, 11, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	v, err := f.ring.Opener("public.patient", "date_of_birth").Open(a["date_of_birth_encrypted"].([]byte),
		envelope.Binding{Table: "public.patient", Column: "date_of_birth", PrimaryKey: []string{"P9"}})
	if err != nil || v.Type != envelope.TypeDate || v.Text != "2001-09-11" {
		t.Fatalf("API ciphertext by pgphi's path: %v %+v", err, v)
	}
	var ct []byte
	f.pool.QueryRow(ctx, "SELECT last_name_encrypted FROM public.patient WHERE uid = 'P1'").Scan(&ct)
	text, null, err := client.Decrypt(ctx, "patient", "last_name", pgphi.Key{"uid": "P1"}, ct, "test")
	if err != nil || null || text != "Smith" {
		t.Fatalf("backfill ciphertext through the API: %q %v %v", text, null, err)
	}
	_, _, err = client.Decrypt(ctx, "patient", "last_name", pgphi.Key{"uid": "P2"}, ct, "test")
	if !errors.Is(err, envelope.ErrDecrypt) || strings.Contains(err.Error(), "Smith") || strings.Contains(err.Error(), "P2") {
		t.Fatalf("ciphertext of P1 opened as P2's: %v", err)
	}
	_, _, err = client.Decrypt(ctx, "patient", "last_name", pgphi.Key{"id": "P1"}, ct, "test")
	if !errors.Is(err, pgphi.ErrKey) {
		t.Fatalf("wrong key column: %v", err)
	}
	if _, _, err := client.Decrypt(ctx, "patient", "last_name", pgphi.Key{"uid": "P1"}, ct, " "); !errors.Is(err, pgphi.ErrReason) {
		t.Fatalf("no reason: %v", err)
	}
}

// An application writer that is not a pgphi member writes through the API
// under require_encryption, with the grants README.md lists; decrypting
// needs an audit record it cannot write; a healthcare admin's search is
// audited. No canary reaches an error.
func TestApplicationWriterUnderRequireEncryption(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	actors := pgtest.NewActors(t, f.url)
	if _, err := policy.InitRoles(ctx, f.pool, policy.DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "GRANT SELECT, INSERT, UPDATE ON public.patient TO "+actors.AppWriter); err != nil {
		t.Fatal(err)
	}
	writer := appPool(t, actors.URL(actors.AppWriter))
	_, err := pgphi.Open(ctx, writer, pgphi.KeyFile(f.keyFile))
	if !errors.Is(err, pgphi.ErrAccess) || !strings.Contains(err.Error(), "pgphi.protected_columns") {
		t.Fatalf("open without grants: %v", err)
	}
	if _, err := f.pool.Exec(ctx, "GRANT SELECT ON pgphi.protected_columns, pgphi.plans, pgphi.blind_indexes, pgphi.kek, pgphi.data_keys, pgphi.unique_columns, pgphi.column_rules TO "+actors.AppWriter); err != nil {
		t.Fatal(err)
	}
	if err := engine.SetFlag(ctx, f.pool, engine.FlagRequireEncryption, true); err != nil {
		t.Fatal(err)
	}
	const canary = "Zqxcanary7"
	if _, err := writer.Exec(ctx, "INSERT INTO public.patient (uid, last_name) VALUES ('P30', $1)", canary); err == nil {
		t.Fatal("plaintext insert accepted under require_encryption")
	}
	client, err := pgphi.Open(ctx, writer, pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if client.Audited() {
		t.Fatal("a non-member can write audit records")
	}
	a, err := client.Row(ctx, "patient", pgphi.Key{"uid": "P30"}, map[string]any{"last_name": canary, "phone": "+1 650 253 0000", "visits": 9})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := a["last_name"]; !ok || v != nil {
		t.Fatalf("plaintext assignment under require_encryption: %v %v", ok, v)
	}
	if err := insert(ctx, writer, "P30", a); err != nil {
		t.Fatalf("insert with the API's assignments: %v", err)
	}
	if res, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0); err != nil || !res.OK() {
		t.Fatalf("verify: %+v %v", res, err)
	}
	q := pgphi.Query{Kind: pgphi.Exact, Value: canary}
	if _, err := client.Find(ctx, "patient", "last_name", q, "test"); !errors.Is(err, pgphi.ErrNotAudited) {
		t.Fatalf("unaudited search by a non-member: %v", err)
	}
	if _, _, err := client.Read(ctx, "patient", "last_name", pgphi.Key{"uid": "P30"}, "test"); !errors.Is(err, pgphi.ErrNotAudited) {
		t.Fatalf("unaudited read by a non-member: %v", err)
	}
	unaudited, err := pgphi.Open(ctx, writer, pgphi.KeyFile(f.keyFile), pgphi.Unaudited())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := unaudited.Find(ctx, "patient", "last_name", q, "test"); err != nil || len(got) != 1 || got[0]["uid"] != "P30" {
		t.Fatalf("Unaudited find: %v %v", got, err)
	}

	// A healthcare admin's search and read are audited, as the role.
	admin := appPool(t, actors.URL(actors.HealthcareAdmin))
	ha, err := pgphi.Open(ctx, admin, pgphi.KeyFile(f.keyFile), pgphi.Actor("dr.who"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ha.Find(ctx, "patient", "last_name", q, "front desk"); err != nil || len(got) != 1 {
		t.Fatalf("healthcare admin find: %v %v", got, err)
	}
	if text, _, err := ha.Read(ctx, "patient", "last_name", pgphi.Key{"uid": "P30"}, "chart"); err != nil || text != canary {
		t.Fatalf("healthcare admin read: %v", err)
	}
	rows, err := f.pool.Query(ctx, `SELECT record->>'command', record->>'reason', record->'actor'->>'db_role', (record->>'rows')::bigint,
		ARRAY(SELECT jsonb_array_elements_text(record->'tables')), ARRAY(SELECT jsonb_array_elements_text(record->'columns'))
		FROM pgphi.audit_log WHERE record->>'command' LIKE 'api.%' ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var cmd, reason, role string
		var n int64
		var tables, columns []string
		if err := rows.Scan(&cmd, &reason, &role, &n, &tables, &columns); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %v %d %v %v", cmd, reason, role == actors.HealthcareAdmin, n, tables, columns))
	}
	want := []string{"api.search front desk true 1 [public.patient] [last_name]", "api.read chart true 1 [public.patient] [last_name]"}
	if !slices.Equal(got, want) {
		t.Fatalf("audit records:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var leaked bool
	f.pool.QueryRow(ctx, "SELECT coalesce(bool_or(strpos(l.record::text, $1) > 0), false) FROM pgphi.audit_log l", canary).Scan(&leaked)
	if leaked {
		t.Fatal("the canary is in the audit log")
	}

	// Refusals name table and column, never the value.
	for _, c := range []struct {
		column string
		value  any
	}{
		{"date_of_birth", canary}, {"visits", canary}, {"visits", "0" + "42"}, {"last_name", []byte(canary)},
		{"date_of_birth", "2023-02-29"},
	} {
		_, err := client.Seal(ctx, "patient", c.column, pgphi.Key{"uid": "P31"}, c.value)
		if !errors.Is(err, pgphi.ErrValue) || !strings.Contains(err.Error(), "public.patient."+c.column) ||
			strings.Contains(err.Error(), canary) || strings.Contains(err.Error(), "042") || strings.Contains(err.Error(), "2023") {
			t.Fatalf("%s: %v", c.column, err)
		}
	}
	_, err = unaudited.Find(ctx, "patient", "phone", pgphi.Query{Kind: pgphi.Last4, Value: canary}, "test")
	if err == nil || strings.Contains(err.Error(), canary) {
		t.Fatalf("invalid query: %v", err)
	}
	if _, err := client.Seal(ctx, "patient", "nope", pgphi.Key{"uid": "P31"}, "x"); !errors.Is(err, pgphi.ErrNotProtected) {
		t.Fatalf("unprotected column: %v", err)
	}
}

// Read returns the plaintext before use_encrypted_search and the decrypted
// ciphertext after; a value changed since it was encrypted is read from its
// plaintext.
func TestReadFollowsCutover(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	client, err := pgphi.Open(ctx, appPool(t, f.url), pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	audits := func() (n int) {
		f.pool.QueryRow(ctx, "SELECT count(*) FROM pgphi.audit_log WHERE record->>'command' = 'api.read'").Scan(&n)
		return n
	}
	// Ciphertext and plaintext disagree on purpose, to see which is read.
	if _, err := f.pool.Exec(ctx, "UPDATE public.patient SET last_name_encrypted = (SELECT last_name_encrypted FROM public.patient WHERE uid = 'P1') WHERE uid = 'P1'"); err != nil {
		t.Fatal(err)
	}
	if text, _, err := client.Read(ctx, "patient", "last_name", pgphi.Key{"uid": "P2"}, "chart"); err != nil || text != "Smyth" || audits() != 0 {
		t.Fatalf("before cutover: %q %v (audits %d)", text, err, audits())
	}
	if text, _, err := client.Read(ctx, "patient", "date_of_birth", pgphi.Key{"uid": "P1"}, "chart"); err != nil || text != "1980-02-29" {
		t.Fatalf("before cutover, date: %q %v", text, err)
	}
	if err := engine.SetFlag(ctx, f.pool, engine.FlagUseEncryptedSearch, true); err != nil {
		t.Fatal(err)
	}
	if text, _, err := client.Read(ctx, "patient", "last_name", pgphi.Key{"uid": "P2"}, "chart"); err != nil || text != "Smyth" || audits() != 1 {
		t.Fatalf("after cutover: %q %v (audits %d)", text, err, audits())
	}
	if _, err := f.pool.Exec(ctx, "UPDATE public.patient SET last_name = 'Smithers' WHERE uid = 'P2'"); err != nil {
		t.Fatal(err)
	}
	if text, _, err := client.Read(ctx, "patient", "last_name", pgphi.Key{"uid": "P2"}, "chart"); err != nil || text != "Smithers" {
		t.Fatalf("changed since encrypted: %q %v", text, err)
	}
	if _, null, err := client.Read(ctx, "patient", "last_name", pgphi.Key{"uid": "P4"}, "chart"); err != nil || !null {
		t.Fatalf("NULL: %v %v", null, err)
	}
	if _, _, err := client.Read(ctx, "patient", "last_name", pgphi.Key{"uid": "P404"}, "chart"); !errors.Is(err, pgphi.ErrNoRow) || strings.Contains(err.Error(), "P404") {
		t.Fatalf("missing row: %v", err)
	}
}

// After cleanup the client notices that the plaintext columns are gone: it
// writes ciphertext and terms only, and reads and searches them.
func TestAfterCleanup(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
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
	a, err := client.Row(ctx, "patient", pgphi.Key{"uid": "P40"}, map[string]any{"last_name": "Smith", "phone": "+1 650 253 0000"})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(a.Columns()); got != "[last_name_bidx last_name_encrypted phone_bidx phone_encrypted]" {
		t.Fatalf("assignments after cleanup: %s", got)
	}
	if err := insert(ctx, pool, "P40", a); err != nil {
		t.Fatal(err)
	}
	for uid, want := range map[string]string{"P1": "Smith", "P40": "Smith"} {
		if text, _, err := client.Read(ctx, "patient", "last_name", pgphi.Key{"uid": uid}, "chart"); err != nil || text != want {
			t.Fatalf("read %s after cleanup: %q %v", uid, text, err)
		}
	}
	got, err := client.Find(ctx, "patient", "last_name", pgphi.Query{Kind: pgphi.Exact, Value: "SMITH"}, "test")
	if err != nil || fmt.Sprint(got) != "[map[uid:P1] map[uid:P40]]" {
		t.Fatalf("find after cleanup: %v %v", got, err)
	}
}

// Under require_encryption an application that writes a value again (the
// same last name, a form saved unchanged) sends the same terms with a new
// ciphertext and a NULL plaintext: the trigger keeps them, so the value
// stays searchable and verifies.
func TestRewritingTheSameValueKeepsItsTerms(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	pool := appPool(t, f.url)
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.SetFlag(ctx, f.pool, engine.FlagRequireEncryption, true); err != nil {
		t.Fatal(err)
	}
	var before []int64
	if err := f.pool.QueryRow(ctx, "SELECT last_name_bidx FROM public.patient WHERE uid = 'P1'").Scan(&before); err != nil || len(before) == 0 {
		t.Fatalf("P1's terms before: %v %v", before, err)
	}
	a, err := client.Seal(ctx, "patient", "last_name", pgphi.Key{"uid": "P1"}, "Smith")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE public.patient SET last_name = $1, last_name_encrypted = $2, last_name_bidx = $3 WHERE uid = 'P1'",
		a["last_name"], a["last_name_encrypted"], a["last_name_bidx"]); err != nil {
		t.Fatal(err)
	}
	var after []int64
	var plain *string
	if err := f.pool.QueryRow(ctx, "SELECT last_name, last_name_bidx FROM public.patient WHERE uid = 'P1'").Scan(&plain, &after); err != nil {
		t.Fatal(err)
	}
	if plain != nil || !slices.Equal(after, before) {
		t.Fatalf("after writing the same value again: plaintext NULL %v, terms kept %v (%d terms, had %d)", plain == nil, slices.Equal(after, before), len(after), len(before))
	}
	if res, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0); err != nil || !res.OK() {
		t.Fatalf("verify: %+v %v", res, err)
	}
}
