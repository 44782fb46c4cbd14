package e2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestCompositeKeyEndToEnd protects columns of every supported type in a
// table keyed by (site text, id int), with NULLs, empty strings, awkward key
// text and a row count that is not a multiple of the batch size.
func TestCompositeKeyEndToEnd(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
environment: test
apply: { batch_size: 100, chunk_rows: 300 }
tables:
  visit:
    columns:
      c_text: { class: phi }
      c_varchar: { class: pii }
      c_date: { class: pii }
      c_ts: { class: phi }
      c_num: { class: phi }
      c_int: { class: phi }
      c_bool: { class: phi }
      c_json: { class: phi }
      c_jsonb: { class: phi }
`)
	const rows = 1003
	// Sites include the empty string, a comma-and-quote key (keys are printed
	// joined with ", "), braces (array syntax), non-ASCII and a backslash.
	f.exec(`CREATE TABLE visit (
			site text NOT NULL,
			id int NOT NULL,
			c_text text, c_varchar varchar(20), c_date date, c_ts timestamptz,
			c_num numeric(10,2), c_int integer, c_bool boolean, c_json json, c_jsonb jsonb,
			note text,
			PRIMARY KEY (site, id));
		INSERT INTO visit (site, id, c_text, c_varchar, c_date, c_ts, c_num, c_int, c_bool, c_json, c_jsonb, note)
		SELECT (ARRAY['north', '', 'west, "annex"', '{zürich}', 'back\slash', 'NULL'])[1 + g % 6],
		       g,
		       CASE WHEN g % 7 = 0 THEN NULL WHEN g % 7 = 1 THEN '' ELSE 'note ' || g || E'\nline two\ttab ' || repeat('é', g % 5) END,
		       CASE WHEN g % 5 = 0 THEN NULL WHEN g % 5 = 1 THEN '' ELSE left('v' || md5(g::text), 20) END,
		       CASE WHEN g % 11 = 0 THEN NULL WHEN g = 5 THEN 'infinity'::date WHEN g = 6 THEN '0044-03-15 BC'::date ELSE date '1930-01-01' + g * 17 END,
		       CASE WHEN g % 13 = 0 THEN NULL ELSE timestamptz '2001-02-03 04:05:06.789+05:30' + g * interval '1 hour 7 minutes 0.000123 seconds' END,
		       CASE WHEN g % 3 = 0 THEN NULL ELSE (g * 1.37 - 500)::numeric(10,2) END,
		       CASE WHEN g % 4 = 0 THEN NULL ELSE g * -7919 END,
		       CASE WHEN g % 3 = 0 THEN NULL ELSE g % 2 = 0 END,
		       CASE WHEN g % 9 = 0 THEN NULL ELSE ('{"a":  ' || g || ', "b" : [1, 2.50, "x"], "a": "dup"}')::json END,
		       CASE WHEN g % 8 = 0 THEN NULL ELSE ('{"id": ' || g || ', "tags": ["x", "y"], "nested": {"k": null}}')::jsonb END,
		       'unprotected ' || g
		FROM generate_series(1, 1003) g;`)

	f.mustRun("keys", "init")
	plan := f.mustRun("plan")
	for _, col := range []string{"c_text", "c_varchar", "c_date", "c_ts", "c_num", "c_int", "c_bool", "c_json", "c_jsonb"} {
		if !strings.Contains(plan.stdout, col+"_encrypted") {
			t.Errorf("plan does not show %s -> %s_encrypted:\n%s", col, col, plan.stdout)
		}
	}
	if !strings.Contains(plan.stdout, "site") || !strings.Contains(plan.stdout, "id") {
		t.Errorf("plan does not show the composite key:\n%s", plan.stdout)
	}

	f.mustRun("apply", "--workers", "2")
	f.verifyOK(rows)
	st := f.status()
	f.assertFullyEncrypted(st)
	if len(st.Columns) != 9 {
		t.Errorf("status lists %d columns, want 9", len(st.Columns))
	}
	c := f.conn()
	for _, cs := range st.Columns {
		if cs.Total != rows {
			t.Errorf("status %s.%s: total %d, want %d", cs.Table, cs.Column, cs.Total, rows)
		}
		// Status counts agree with the table itself.
		var nulls, enc int64
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := c.QueryRow(ctx, `SELECT count(*) FILTER (WHERE `+cs.Column+` IS NULL), count(`+cs.Column+`_encrypted) FROM visit`).Scan(&nulls, &enc)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if cs.Null != nulls || cs.Encrypted != enc {
			t.Errorf("status %s: null %d encrypted %d; the table has %d NULL plaintexts and %d ciphertexts", cs.Column, cs.Null, cs.Encrypted, nulls, enc)
		}
		if nulls == 0 {
			t.Errorf("%s has no NULLs: the test data should cover them", cs.Column)
		}
	}
	// Empty strings are values, not NULLs: they have a ciphertext.
	if n := queryInt(t, c, `SELECT count(*) FROM visit WHERE c_text = '' AND c_text_encrypted IS NULL`); n != 0 {
		t.Errorf("%d empty c_text values have no ciphertext", n)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM visit WHERE c_text = ''`); n == 0 {
		t.Error("test data has no empty strings")
	}
	// NULL plaintexts have no ciphertext.
	if n := queryInt(t, c, `SELECT count(*) FROM visit WHERE c_jsonb IS NULL AND c_jsonb_encrypted IS NOT NULL`); n != 0 {
		t.Errorf("%d NULL c_jsonb values got a ciphertext", n)
	}
	// The application's data is untouched, the row count is unchanged and
	// nothing is left marked.
	if n := queryInt(t, c, `SELECT count(*) FROM visit WHERE note = 'unprotected ' || id AND c_varchar IS NOT DISTINCT FROM CASE WHEN id % 5 = 0 THEN NULL WHEN id % 5 = 1 THEN '' ELSE left('v' || md5(id::text), 20) END`); n != rows {
		t.Errorf("%d of %d rows still hold the values the application wrote", n, rows)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM visit WHERE pgphi_pending`); n != 0 {
		t.Errorf("%d rows still marked pending", n)
	}

	// A second apply is a no-op that succeeds, and verify still passes.
	f.mustRun("apply")
	f.verifyOK(rows)

	// An application update after apply is caught by the next apply, even
	// one that changes a key column.
	f.exec(`UPDATE visit SET c_num = c_num + 1, c_json = '{"changed": true}' WHERE id % 50 = 0;
		UPDATE visit SET site = 'moved, "x"' WHERE id = 7;
		INSERT INTO visit (site, id, c_text, c_date) VALUES ('new', 1, 'late row', '2020-02-29')`)
	r := f.run("verify")
	if r.code != 1 || !strings.Contains(r.stdout+r.stderr, "pending") {
		t.Errorf("verify after application writes: want exit 1 reporting rows pending re-encryption, got %s", r)
	}
	f.mustRun("apply")
	f.verifyOK(rows + 1)
	st = f.status()
	f.assertFullyEncrypted(st)
	for _, cs := range st.Columns {
		if cs.Total != rows+1 {
			t.Errorf("status %s.%s: total %d, want %d", cs.Table, cs.Column, cs.Total, rows+1)
		}
	}
}
