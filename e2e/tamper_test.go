package e2e

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestTamperingIsDetected changes ciphertexts behind pgphi's back, the way
// an attacker with write access to the table could, and checks that verify
// fails and names exactly the affected values.
func TestTamperingIsDetected(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
environment: test
tables:
  patient:
    columns:
      first_name: { class: pii }
      last_name: { class: pii }
  visit:
    columns:
      notes: { class: phi }
`)
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, first_name text, last_name text);
		INSERT INTO patient SELECT g, 'First' || g, 'Last' || g FROM generate_series(1, 200) g;
		CREATE TABLE visit (vid bigint PRIMARY KEY, notes text);
		INSERT INTO visit SELECT g, 'same note' FROM generate_series(1, 12000) g;`)
	f.mustRun("keys", "init")
	f.mustRun("apply")
	f.verifyOK(200 + 12000)

	// (a) swap the ciphertexts of two rows in one column;
	// (b) flip one bit in the middle of another row's ciphertext;
	// (c) copy a ciphertext from column A to column B of the same row;
	// (d) swap two rows' ciphertexts of identical plaintexts in another,
	//     larger table (more rows than verify reads in one batch), and flip
	//     bits in two more of its rows.
	f.exec(`
		UPDATE patient p SET first_name_encrypted = o.first_name_encrypted
		FROM patient o WHERE (p.id, o.id) IN ((10, 11), (11, 10));
		UPDATE patient SET last_name_encrypted = set_byte(last_name_encrypted, length(last_name_encrypted) / 2,
			get_byte(last_name_encrypted, length(last_name_encrypted) / 2) # 1) WHERE id = 20;
		UPDATE patient SET last_name_encrypted = first_name_encrypted WHERE id = 30;
		UPDATE visit v SET notes_encrypted = o.notes_encrypted
		FROM visit o WHERE (v.vid, o.vid) IN ((3, 4), (4, 3));
		UPDATE visit SET notes_encrypted = set_byte(notes_encrypted, 7, get_byte(notes_encrypted, 7) # 128) WHERE vid IN (500, 9999);`)
	// Tampering with ciphertext alone does not mark the rows for re-encryption.
	if n := queryInt(t, f.conn(), `SELECT (SELECT count(*) FROM patient WHERE pgphi_pending) + (SELECT count(*) FROM visit WHERE pgphi_pending)`); n != 0 {
		t.Fatalf("%d rows marked pending after touching only ciphertexts", n)
	}

	want := []string{
		"public.patient.first_name (id)=(10)",
		"public.patient.first_name (id)=(11)",
		"public.patient.last_name (id)=(20)",
		"public.patient.last_name (id)=(30)",
		"public.visit.notes (vid)=(3)",
		"public.visit.notes (vid)=(4)",
		"public.visit.notes (vid)=(500)",
		"public.visit.notes (vid)=(9999)",
	}

	r := f.run("verify")
	if r.code != 1 {
		t.Fatalf("verify after tampering: want exit 1, got %s", r)
	}
	line := regexp.MustCompile(`^MISMATCH (\S+) at (\(.*?\)=\(.*?\)): `)
	var got []string
	for _, l := range strings.Split(r.stdout, "\n") {
		if !strings.HasPrefix(l, "MISMATCH") {
			continue
		}
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("cannot parse verify line %q", l)
			continue
		}
		got = append(got, m[1]+" "+m[2])
	}
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("verify names:\n  %s\nwant exactly:\n  %s\nfull output:\n%s", strings.Join(got, "\n  "), strings.Join(want, "\n  "), r)
	}
	if !strings.Contains(r.stdout, "8 mismatches") {
		t.Errorf("verify summary does not count 8 mismatches:\n%s", r.stdout)
	}
	for _, leak := range []string{"First10", "First11", "Last20", "Last30", "same note"} {
		if strings.Contains(r.stdout+r.stderr, leak) {
			t.Errorf("verify printed the plaintext %q", leak)
		}
	}

	// The JSON form names the same values.
	r = f.run("verify", "--json")
	if r.code != 1 {
		t.Fatalf("verify --json after tampering: want exit 1, got %s", r)
	}
	var v struct {
		OK     bool `json:"ok"`
		Result struct {
			Mismatches int64 `json:"mismatches"`
			Examples   []struct {
				Table      string   `json:"table"`
				Column     string   `json:"column"`
				KeyColumns []string `json:"key_columns"`
				Key        []string `json:"key"`
			} `json:"examples"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, r.stdout)
	}
	got = nil
	for _, e := range v.Result.Examples {
		got = append(got, e.Table+"."+e.Column+" ("+strings.Join(e.KeyColumns, ", ")+")=("+strings.Join(e.Key, ", ")+")")
	}
	sort.Strings(got)
	if v.OK || v.Result.Mismatches != 8 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("verify --json: ok=%v mismatches=%d names:\n  %s\nwant exactly:\n  %s", v.OK, v.Result.Mismatches, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}
