package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// examples/decrypt-python is an offline decryptor written from
// docs/FORMAT.md alone. These tests give it what pgphi wrote on a real
// server and compare what it decrypts with the plaintext PostgreSQL holds.

const decryptConfig = `version: 1
environment: test
tables:
  visit:
    columns:
      note:    { class: phi }
      seen_on: { class: pii }
      amount:  { class: phi }
      info:    { class: phi }
`

// decryptCreateTable creates visit, keyed by (site, uid), with text, date,
// numeric and jsonb values, NULLs, empty strings, non-ASCII text and a
// planted canary in every note.
func decryptCreateTable(f *fixture, rows int, canary string) {
	f.t.Helper()
	f.exec(`CREATE TABLE visit (
		site int NOT NULL,
		uid varchar(20) NOT NULL,
		note text,
		seen_on date,
		amount numeric(12,4),
		info jsonb,
		ward int,
		PRIMARY KEY (site, uid))`)
	f.exec(`INSERT INTO visit
		SELECT g % 3, 'V' || g,
		       CASE WHEN g % 11 = 0 THEN NULL WHEN g % 13 = 0 THEN '' ELSE $2 || ' note ' || g || ' Zoë 患者 ' || repeat('x', g % 7) END,
		       CASE WHEN g % 9 = 0 THEN NULL WHEN g = 5 THEN date '0044-03-15 BC' WHEN g = 6 THEN 'infinity'::date ELSE date '1930-01-01' + g * 97 END,
		       CASE WHEN g % 8 = 0 THEN NULL WHEN g = 7 THEN 'NaN'::numeric ELSE (g * 12.345 - 700)::numeric(12,4) END,
		       CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('name', jsonb_build_object('given', 'Zoë'), 'contacts', jsonb_build_array(NULL, g), 'k' || g, true) END,
		       g % 4
		FROM generate_series(1, $1::int) g`, rows, canary)
}

// canonicalRows reads every protected value of visit as canonical text
// (docs/FORMAT.md §2.4, under its session settings), by "site|uid".
func canonicalRows(t *testing.T, f *fixture) map[string]map[string]*string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := f.conn()
	if _, err := c.Exec(ctx, `SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'`); err != nil {
		t.Fatal(err)
	}
	rows, err := c.Query(ctx, `SELECT site::text, uid::text, note::text, seen_on::text, amount::text, info::text FROM visit`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[string]*string{}
	for rows.Next() {
		var site, uid string
		var note, seen, amount, info *string
		if err := rows.Scan(&site, &uid, &note, &seen, &amount, &info); err != nil {
			t.Fatal(err)
		}
		out[site+"|"+uid] = map[string]*string{"note": note, "seen_on": seen, "amount": amount, "info": info}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

var decryptTypes = map[string]string{"note": "text", "seen_on": "date", "amount": "numeric", "info": "jsonb"}

// pyDecrypt runs the decryptor with args, stdin and extra descriptors
// (fd 3, 4, ...), and returns stdout, stderr and the exit code.
func pyDecrypt(t *testing.T, stdin []byte, extra []*os.File, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script := filepath.Join(moduleRoot(), "examples", "decrypt-python", "pgphi_decrypt.py")
	cmd := exec.CommandContext(ctx, python(t), append([]string{script}, args...)...)
	cmd.Env = pythonEnv()
	cmd.Dir = t.TempDir()
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.ExtraFiles = extra
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running the Python decryptor: %v", err)
	}
	if strings.Contains(errb.String(), "Traceback") {
		t.Errorf("the decryptor printed a Python traceback:\n%s", errb.String())
	}
	return out.String(), errb.String(), code
}

// secretPipe returns the read end of a pipe holding secret, to be passed as
// an inherited descriptor: the secret is in neither argv nor environment.
func secretPipe(t *testing.T, secret string) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString(secret); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { r.Close() })
	return r
}

func newCanary(t *testing.T) string {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	return canaryPrefix + hex.EncodeToString(rnd[:])
}

// TestPythonDecryptorFromDatabase: a passphrase KEK given through a file
// descriptor, data keys and rows read from the database, two data keys (a
// rotation in the middle), every type of the table compared with the
// plaintext. Then a ciphertext copied to another row, and a wrong
// passphrase, are refused without naming a value.
func TestPythonDecryptorFromDatabase(t *testing.T) {
	t.Parallel()
	python(t)
	canary := newCanary(t)
	f := newFixture(t, decryptConfig)
	const rows = 240
	decryptCreateTable(f, rows, canary)
	f.mustRun("keys", "init")
	f.mustRun("apply")
	// A second data key: values changed after the rotation are encrypted
	// again by apply's catch-up under the new key.
	f.mustRun("keys", "rotate")
	f.exec(`UPDATE visit SET note = note || ' (edited)', amount = amount + 1 WHERE uid IN (SELECT uid FROM visit ORDER BY uid LIMIT 40)`)
	f.mustRun("apply")
	f.verifyOK(rows)
	c := f.conn()
	if n := queryInt(t, c, `SELECT count(DISTINCT substring(note_encrypted FROM 2 FOR 4)) FROM visit WHERE note_encrypted IS NOT NULL`); n != 2 {
		t.Fatalf("the notes use %d data keys, want 2 (before and after the rotation)", n)
	}
	want := canonicalRows(t, f)

	out, errOut, code := pyDecrypt(t, nil, []*os.File{secretPipe(t, testPassphrase+"\n")},
		"--database-url", f.url, "--passphrase-fd", "3", "--table", "visit")
	if code != 0 {
		t.Fatalf("decryptor: exit %d\n%s", code, errOut)
	}
	if strings.Contains(errOut, canaryPrefix) {
		t.Errorf("the decryptor's messages contain a planted value:\n%s", errOut)
	}
	got := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Key    map[string]string `json:"key"`
			Values map[string]*struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"values"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("decryptor output line is not JSON: %v", err)
		}
		k := line.Key["site"] + "|" + line.Key["uid"]
		w, ok := want[k]
		if !ok {
			t.Errorf("decryptor returned a row %s that is not in the table", k)
			continue
		}
		got++
		for col, typ := range decryptTypes {
			v, present := line.Values[col]
			switch {
			case !present:
				t.Errorf("row %s: column %s missing from the decryptor's output", k, col)
			case w[col] == nil && v != nil:
				t.Errorf("row %s: %s is NULL, the decryptor returned a value", k, col)
			case w[col] != nil && v == nil:
				t.Errorf("row %s: %s: the decryptor returned NULL", k, col)
			case v != nil && (v.Text != *w[col] || v.Type != typ):
				t.Errorf("row %s: %s: decrypted (%s, %d bytes), want (%s, the plaintext's %d bytes), equal: %v", k, col, v.Type, len(v.Text), typ, len(*w[col]), v.Text == *w[col])
			}
		}
	}
	if got != rows {
		t.Errorf("decryptor returned %d rows, want %d", got, rows)
	}

	// A ciphertext moved to another row does not decrypt there.
	f.exec(`UPDATE visit SET note_encrypted = (SELECT note_encrypted FROM visit WHERE site = 1 AND uid = 'V1') WHERE site = 2 AND uid = 'V2'`)
	_, errOut, code = pyDecrypt(t, nil, []*os.File{secretPipe(t, testPassphrase)},
		"--database-url", f.url, "--passphrase-fd", "3", "--table", "public.visit")
	if code != 1 || !strings.Contains(errOut, "public.visit.note") || !strings.Contains(errOut, "decryption failed") {
		t.Errorf("a ciphertext copied to another row: want exit 1 naming public.visit.note, got %d:\n%s", code, errOut)
	}
	if strings.Contains(errOut, canaryPrefix) || strings.Contains(errOut, testPassphrase) {
		t.Errorf("the decryptor's error contains a value or the passphrase:\n%s", errOut)
	}

	// A wrong passphrase, in a file that others may not read.
	pf := filepath.Join(t.TempDir(), "passphrase")
	if err := os.WriteFile(pf, []byte("not the passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = pyDecrypt(t, nil, nil, "--database-url", f.url, "--passphrase-file", pf, "--table", "visit")
	if code != 3 || !strings.Contains(errOut, "wrong passphrase or key file") {
		t.Errorf("wrong passphrase: want exit 3 and 'wrong passphrase or key file', got %d:\n%s", code, errOut)
	}
	if err := os.Chmod(pf, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = pyDecrypt(t, nil, nil, "--database-url", f.url, "--passphrase-file", pf, "--table", "visit")
	if code != 2 || !strings.Contains(errOut, "chmod 600") {
		t.Errorf("a passphrase file readable by others: want exit 2 and 'chmod 600', got %d:\n%s", code, errOut)
	}
}

// keysExportSQL is the export README.md (examples/decrypt-python) documents:
// pgphi.kek and pgphi.data_keys as PostgreSQL renders them in JSON.
const keysExportSQL = `SELECT json_build_object('kek', (SELECT row_to_json(k) FROM pgphi.kek k), 'data_keys', (SELECT json_agg(d ORDER BY d.key_id) FROM pgphi.data_keys d))::text`

// TestPythonDecryptorFromExport: a key file KEK, the data keys from a JSON
// export of pgphi's key tables, ciphertexts given one per line on stdin with
// their binding, as a disaster recovery from dumps would.
func TestPythonDecryptorFromExport(t *testing.T) {
	t.Parallel()
	python(t)
	canary := newCanary(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "kek.hex")
	var kek [32]byte
	if _, err := rand.Read(kek[:]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(kek[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, decryptConfig)
	f.env = []string{"PGPHI_KEY_FILE=" + keyFile}
	const rows = 120
	decryptCreateTable(f, rows, canary)
	f.mustRun("keys", "init")
	f.mustRun("apply")
	f.verifyOK(rows)
	want := canonicalRows(t, f)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := f.conn()
	var export string
	if err := c.QueryRow(ctx, keysExportSQL).Scan(&export); err != nil {
		t.Fatal(err)
	}
	exportFile := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(exportFile, []byte(export), 0o600); err != nil {
		t.Fatal(err)
	}
	// Every value of every row, in a known order.
	type item struct{ key, col string }
	var order []item
	var in bytes.Buffer
	r, err := c.Query(ctx, `SELECT site::text, uid::text, note_encrypted, seen_on_encrypted, amount_encrypted, info_encrypted FROM visit ORDER BY site, uid`)
	if err != nil {
		t.Fatal(err)
	}
	cols := []string{"note", "seen_on", "amount", "info"}
	for r.Next() {
		var site, uid string
		cts := make([][]byte, 4)
		if err := r.Scan(&site, &uid, &cts[0], &cts[1], &cts[2], &cts[3]); err != nil {
			t.Fatal(err)
		}
		for i, col := range cols {
			var ct any
			if cts[i] != nil {
				ct = base64.StdEncoding.EncodeToString(cts[i])
			}
			line, _ := json.Marshal(map[string]any{"table": "public.visit", "column": col, "key": []string{site, uid}, "ciphertext": ct})
			in.Write(append(line, '\n'))
			order = append(order, item{site + "|" + uid, col})
		}
	}
	r.Close()
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := pyDecrypt(t, in.Bytes(), nil, "--keys", exportFile, "--key-file", keyFile)
	if code != 0 {
		t.Fatalf("decryptor: exit %d\n%s", code, errOut)
	}
	if strings.Contains(errOut, canaryPrefix) {
		t.Errorf("the decryptor's messages contain a planted value:\n%s", errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(order) {
		t.Fatalf("decryptor returned %d lines for %d values", len(lines), len(order))
	}
	for i, it := range order {
		w := want[it.key][it.col]
		if lines[i] == "null" {
			if w != nil {
				t.Errorf("%s %s: decrypted NULL, the plaintext is not NULL", it.key, it.col)
			}
			continue
		}
		var v struct{ Type, Text string }
		if err := json.Unmarshal([]byte(lines[i]), &v); err != nil {
			t.Fatalf("line %d is not JSON: %v", i+1, err)
		}
		if w == nil || v.Text != *w || v.Type != decryptTypes[it.col] {
			t.Errorf("%s %s: decrypted (%s) differs from the plaintext", it.key, it.col, v.Type)
		}
	}

	// The same line under another key (row) is refused, naming the line.
	var bad bytes.Buffer
	for _, l := range strings.Split(in.String(), "\n") {
		if strings.Contains(l, `"column":"note"`) && !strings.Contains(l, `"ciphertext":null`) {
			bad.WriteString(strings.Replace(l, `"key":["`, `"key":["9`, 1) + "\n")
			break
		}
	}
	_, errOut, code = pyDecrypt(t, bad.Bytes(), nil, "--keys", exportFile, "--key-file", keyFile)
	if code != 1 || !strings.Contains(errOut, "input line 1 (public.visit.note)") {
		t.Errorf("a ciphertext under another key: want exit 1 naming line 1 and public.visit.note, got %d:\n%s", code, errOut)
	}
	// Another key file does not unwrap the data keys.
	other := filepath.Join(dir, "other.b64")
	if err := os.WriteFile(other, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = pyDecrypt(t, in.Bytes(), nil, "--keys", exportFile, "--key-file", other)
	if code != 3 || strings.Contains(errOut, canaryPrefix) {
		t.Errorf("another key file: want exit 3, got %d:\n%s", code, errOut)
	}
}

// TestPythonDecryptorVectors: the decryptor agrees with every case of
// docs/FORMAT.md §4's vectors, error cases included (tampered, other row,
// unknown type byte, invalid UTF-8, malformed key files, wrong KEK).
func TestPythonDecryptorVectors(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(moduleRoot(), "testdata", "vectors")
	cmd := exec.Command(python(t), filepath.Join(moduleRoot(), "examples", "decrypt-python", "check_vectors.py"),
		filepath.Join(dir, "field_v1.json"), filepath.Join(dir, "keywrap_v1.json"))
	cmd.Env = pythonEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("check_vectors.py: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "field_v1.json: ") || !strings.Contains(string(out), "keywrap_v1.json: ") {
		t.Fatalf("check_vectors.py checked nothing:\n%s", out)
	}
	t.Logf("%s", out)
}
