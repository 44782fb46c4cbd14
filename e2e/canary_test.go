package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// canaryPrefix starts every planted value; it must never show up outside the
// protected plaintext columns.
const canaryPrefix = "CANARY-7f3a-"

// TestCanaryValuesNeverLeak plants unique values in the protected columns,
// including one that cannot be encrypted, and runs every command an operator
// would; no output, file or pgphi state may contain any of them.
func TestCanaryValuesNeverLeak(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "")
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	run := hex.EncodeToString(rnd[:])
	canary := canaryPrefix + run // every planted value contains it

	const badID = 4242
	f.exec(`CREATE TABLE patient (
			id int PRIMARY KEY,
			first_name text,
			notes text,
			clinical_info json,
			created_at timestamptz DEFAULT now())`)
	f.exec(`INSERT INTO patient (id, first_name, notes, clinical_info)
		SELECT g,
		       $1 || '-fn-' || g,
		       'note ' || $1 || '-nt-' || g,
		       json_build_object('symptom', $1 || '-js-' || g, 'n', g)
		FROM generate_series(1, 300) g`, canary)
	f.exec(`INSERT INTO patient (id, first_name, notes, clinical_info)
		VALUES ($2, $1 || '-fn-bad', $1 || '-huge-' || repeat('x', 5000), '{"ok": true}');`, canary, badID)

	var outputs []result
	record := func(r result) result { outputs = append(outputs, r); return r }

	// init --suggest proposes the columns by name; the operator caps value size.
	r := record(f.mustRun("init", "--suggest"))
	suggested, err := os.ReadFile(f.config)
	if err != nil {
		t.Fatalf("init --suggest wrote no config: %v\n%s", err, r)
	}
	for _, col := range []string{"first_name", "notes", "clinical_info"} {
		if !strings.Contains(string(suggested), col+":") {
			t.Errorf("init --suggest does not propose %s:\n%s", col, suggested)
		}
	}
	f.writeConfig(string(suggested) + "encryption: { max_value_bytes: 4096 }\n")

	record(f.mustRun("keys", "init"))
	record(f.mustRun("keys", "list"))
	record(f.mustRun("plan"))
	record(f.mustRun("plan", "--json"))

	r = record(f.run("apply", "--batch-size", "50"))
	if r.code != 1 {
		t.Fatalf("apply with an oversized value: want exit 1, got %s", r)
	}
	msg := r.stderr
	for _, want := range []string{"patient", "notes", "4242", "max_value_bytes"} {
		if !strings.Contains(msg, want) {
			t.Errorf("apply error does not name %q (table, column, key, cause):\n%s", want, msg)
		}
	}
	c := f.conn()
	var ctNull bool
	var plain string
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err = c.QueryRow(ctx, `SELECT notes_encrypted IS NULL, notes FROM patient WHERE id = $1`, badID).Scan(&ctNull, &plain)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if !ctNull {
		t.Error("the oversized value got a ciphertext")
	}
	if plain != canary+"-huge-"+strings.Repeat("x", 5000) {
		t.Error("the oversized value's plaintext was changed")
	}

	st := record(f.run("status"))
	if st.code != 0 {
		t.Errorf("status after a failed apply: %s", st)
	}
	if !strings.Contains(st.stdout, "4242") {
		t.Errorf("status does not list the failed row:\n%s", st.stdout)
	}
	record(f.run("status", "--json"))
	if v := record(f.run("verify")); v.code != 1 {
		t.Errorf("verify with a value left unencrypted: want exit 1, got %s", v)
	}
	record(f.run("verify", "--json"))

	// Tamper, so that verify prints mismatches too.
	f.exec(`UPDATE patient SET first_name_encrypted = notes_encrypted WHERE id = 7 AND notes_encrypted IS NOT NULL`)
	record(f.run("verify"))

	// The operator fixes the value and runs apply again.
	f.exec(`UPDATE patient SET notes = 'short' WHERE id = $1`, badID)
	f.exec(`UPDATE patient SET first_name_encrypted = NULL WHERE id = 7`)
	record(f.mustRun("apply"))
	record(f.verifyOK(301))
	record(f.mustRun("status", "--json"))
	record(f.mustRun("status"))
	f.assertFullyEncrypted(f.status())

	// Nothing pgphi printed or wrote contains a planted value.
	for _, o := range outputs {
		if strings.Contains(o.stdout, canaryPrefix) || strings.Contains(o.stderr, canaryPrefix) {
			t.Errorf("a planted value leaked into the output of: %s", o)
		}
	}
	_ = filepath.WalkDir(f.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("reading %s: %v", path, err)
			return nil
		}
		if strings.Contains(string(b), canaryPrefix) {
			t.Errorf("a planted value leaked into %s", path)
		}
		return nil
	})
	// Nor pgphi's state in the database, nor the ciphertexts themselves.
	for _, q := range []string{
		`SELECT count(*) FROM (SELECT row_to_json(x)::text AS j FROM pgphi.failures x) s WHERE j LIKE '%' || $1 || '%'`,
		`SELECT count(*) FROM (SELECT row_to_json(x)::text AS j FROM pgphi.plans x) s WHERE j LIKE '%' || $1 || '%'`,
		`SELECT count(*) FROM (SELECT row_to_json(x)::text AS j FROM pgphi.chunks x) s WHERE j LIKE '%' || $1 || '%'`,
		`SELECT count(*) FROM patient WHERE position(convert_to($1, 'UTF8') IN coalesce(first_name_encrypted, '') || coalesce(notes_encrypted, '') || coalesce(clinical_info_encrypted, '')) > 0`,
	} {
		if n := queryInt(t, c, q, canaryPrefix); n != 0 {
			t.Errorf("%d rows contain a planted value: %s", n, q)
		}
	}
	// Every pgphi table, whatever its name, is free of planted values.
	rows, err := c.Query(context.Background(), `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgphi' AND c.relkind = 'r'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	for _, tbl := range tables {
		q := `SELECT count(*) FROM (SELECT row_to_json(x)::text AS j FROM pgphi.` + `"` + tbl + `"` + ` x) s WHERE j LIKE '%' || $1 || '%'`
		if n := queryInt(t, c, q, canaryPrefix); n != 0 {
			t.Errorf("pgphi.%s holds %d rows with a planted value", tbl, n)
		}
	}
}
