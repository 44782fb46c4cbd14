package engine

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nyaruka/phonenumbers"

	"github.com/pgphi/pgphi/keys"
)

// TestIndependentTermsFromDatabase: terms pgphi wrote, before and after
// `keys rotate`, are recomputed by testdata/independent/search_db.mjs
// (Node.js standard library only, written from docs/SEARCH.md and
// docs/FORMAT.md) from nothing but the database's pgphi.kek,
// pgphi.data_keys and pgphi.blind_indexes, the key file and each row's
// value. Skipped when node is missing, unless CI is set.
func TestIndependentTermsFromDatabase(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node is required in CI: %v", err)
		}
		t.Skip("node not found on PATH: the independent implementation of the search spec was not run")
	}
	names := readNames(t)
	var b strings.Builder
	b.WriteString("CREATE TABLE p (id int PRIMARY KEY, nm text, tel text, dob date, seen timestamptz);\nINSERT INTO p VALUES\n")
	extras := []string{"", " ", "José  GARCÍA", "Ｏ’Brien", "D’Angelo-Smith", "Straße", "İlkay", "Zoë Saldaña", "Иван", "李小龍", "👍🏽 ok", "Nguyễn Thị"}
	n := 0
	row := func(nm, tel, dob, seen string) {
		if n > 0 {
			b.WriteString(",\n")
		}
		n++
		fmt.Fprintf(&b, "(%d, %s, %s, %s, %s)", n, nm, tel, dob, seen)
	}
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	for i := 0; i < 1500; i++ {
		nm := names[i%len(names)]
		switch i % 7 {
		case 1:
			nm = strings.ToUpper(nm) + " " + names[(i*31)%len(names)]
		case 2:
			nm = "O'" + nm
		case 3:
			nm = extras[i%len(extras)]
		}
		e164 := fmt.Sprintf("+442079460%03d", i%1000)
		if i%5 == 1 {
			e164 = fmt.Sprintf("+2547%08d", (i*7919)%100000000)
		}
		// The independent side has no libphonenumber: it is given only
		// valid E.164 numbers and values with fewer than 4 digits.
		if pn, err := phonenumbers.Parse(e164, ""); err != nil || !phonenumbers.IsValidNumber(pn) {
			t.Fatalf("test data: %s is not a valid number", e164)
		}
		tel := lit(e164)
		switch i % 5 {
		case 2:
			tel = "NULL"
		case 3:
			tel = lit([]string{"", "12", "n/a", "x1"}[i%4])
		}
		dob := lit(fmt.Sprintf("%04d-%02d-%02d", 1920+i%100, 1+i%12, 1+i%28))
		if i%9 == 0 {
			dob = "NULL"
		}
		seen := lit(fmt.Sprintf("2024-%02d-%02d %02d:%02d:%02d.%d+00", 1+i%12, 1+i%28, i%24, i%60, (i*7)%60, i%1000))
		if i%11 == 0 {
			seen = lit("infinity")
		}
		row(lit(nm), tel, dob, seen)
	}
	b.WriteString(";")
	f := setup(t, b.String(), `version: 1
tables:
  p:
    columns:
      nm: { class: pii, search: [exact, prefix, contains, phonetic], search_options: { token_size: 4, prefix_max: 6 } }
      tel: { class: pii, search: [phone], search_options: { phone_region: GB } }
      dob: { class: pii, search: [date] }
      seen: { class: pii, search: [date] }
`)
	f.apply(t)
	// Rotate the data key, write more rows, apply again: their terms still
	// derive from the key recorded at first apply.
	ctx := context.Background()
	provider := keys.KeyFileProvider(f.kek)
	if _, err := keys.Rotate(ctx, f.pool, provider); err != nil {
		t.Fatal(err)
	}
	if f.ring, err = keys.Load(ctx, f.pool, provider); err != nil {
		t.Fatal(err)
	}
	f.runner.Keys = f.ring
	if _, err := f.pool.Exec(ctx, `SET ROLE NONE; INSERT INTO public.p SELECT 10000 + g, 'Rotated ' || g, '+442079460' || lpad(g::text, 3, '0'), '2001-02-03', NULL FROM generate_series(1, 50) g`); err != nil {
		t.Fatal(err)
	}
	f.apply(t)
	var rotated int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM public.p WHERE substring(nm_encrypted FROM 2 FOR 4) = '\x00000002'::bytea`).Scan(&rotated); err != nil || rotated != 50 {
		t.Fatalf("rows written with the rotated key: %d, %v", rotated, err)
	}

	dump := map[string]any{}
	var kind string
	var salt []byte
	var iter int
	if err := f.pool.QueryRow(ctx, `SELECT kind, COALESCE(salt, ''), COALESCE(iterations, 0) FROM pgphi.kek`).Scan(&kind, &salt, &iter); err != nil {
		t.Fatal(err)
	}
	dump["kek"] = map[string]any{"kind": kind, "salt_hex": hex.EncodeToString(salt), "iterations": iter}
	secret, err := os.ReadFile(f.kek)
	if err != nil {
		t.Fatal(err)
	}
	dump["secret_b64"] = base64.StdEncoding.EncodeToString(secret)
	dump["data_keys"] = queryMaps(t, f, `SELECT key_id, encode(wrapped, 'hex') AS wrapped_hex, state FROM pgphi.data_keys`)
	dump["blind_indexes"] = queryMaps(t, f, `SELECT table_name, column_name, sub_kind, bits, key_id, format_version, options::text AS options FROM pgphi.blind_indexes WHERE state = 'active'`)
	var rows []map[string]any
	for _, c := range []string{"nm", "tel", "dob", "seen"} {
		for _, r := range queryMaps(t, f, fmt.Sprintf(`SELECT 'public.p' AS table, '%[1]s' AS column, %[1]s::text AS value, %[1]s_bidx::text[] AS bidx FROM public.p ORDER BY id`, c)) {
			rows = append(rows, r)
		}
	}
	dump["rows"] = rows
	path := filepath.Join(t.TempDir(), "dump.json")
	j, _ := json.Marshal(dump)
	if err := os.WriteFile(path, j, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(node, "../../testdata/independent/search_db.mjs", path).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("the independent implementation disagrees with the database: %v", err)
	}
	if !strings.Contains(string(out), "terms derive from data key 1;") || strings.Contains(string(out), "data key 1, 2") {
		t.Fatal("terms after keys rotate do not derive from the recorded key")
	}
}

func queryMaps(t *testing.T, f *fixture, sql string) []map[string]any {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []map[string]any
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		for i, fd := range rows.FieldDescriptions() {
			m[fd.Name] = vals[i]
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func readNames(t *testing.T) []string {
	t.Helper()
	fh, err := os.Open("../../phonetic/testdata/names.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var out []string
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, strings.SplitN(l, "\t", 2)[0])
		}
	}
	return out
}
