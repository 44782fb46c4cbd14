package e2e

import (
	"strings"
	"testing"
)

// keys rotate --reencrypt: a new active data key, every ciphertext moved
// to it (none left under key 1), verify passes, search finds the canary's
// row, and the canary value is in no output. Run again, it rotates again
// and moves everything to key 3.
func TestKeysRotateReencrypt(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
environment: test
tables:
  patient:
    columns:
      last_name: { class: pii, search: [exact] }
      ssn: { class: pii }
`)
	complCreatePatient(f, 300, 0)
	complExpect(t, f.run("keys", "init"), 0)
	complExpect(t, f.run("apply"), 0)
	r := f.run("keys", "rotate", "--reencrypt", "--reason", "yearly rotation")
	complExpect(t, r, 0, "data key 2 is now active", "public.patient: 600 ciphertexts re-encrypted under data key 2")
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM patient WHERE substr(last_name_encrypted, 2, 4) <> '\x00000002'::bytea OR substr(ssn_encrypted, 2, 4) <> '\x00000002'::bytea`); n != 0 {
		t.Fatalf("%d rows still under key 1", n)
	}
	v := f.run("verify")
	complExpect(t, v, 0)
	s := f.run("search", "patient", "last_name", "--exact", strings.ToLower(complCanary), "--reason", "test", "--json")
	complExpect(t, s, 0, `"keys":[["7"]]`)
	// The second one watched in Prometheus terms, as apply is.
	run := runScraped(t, f, "keys", "rotate", "--reencrypt", "--reason", "again")
	r2 := result{stdout: run.stdout, stderr: run.stderr}
	complExpect(t, r2, 0, "data key 3 is now active", "600 ciphertexts re-encrypted under data key 3")
	if v, ok := metricValue(run.final, "pgphi_info", map[string]string{"command": "keys rotate"}); !ok || v != 1 {
		t.Errorf("pgphi_info{command=keys rotate} = %v (%v)", v, ok)
	}
	if v, ok := metricValue(run.final, "pgphi_rows_encrypted_total", map[string]string{"phase": "reencrypt", "table": "public.patient"}); !ok || v != 300 {
		t.Errorf("pgphi_rows_encrypted_total{phase=reencrypt} = %v (%v), want 300", v, ok)
	}
	for _, b := range run.bodies {
		if strings.Contains(b, complCanary) || strings.Contains(b, strings.ToLower(complCanary)) {
			t.Fatal("a planted value appeared in a scrape")
		}
	}
	complAssertNoLeak(t, f, complCanary, r, v, s, r2)
}
