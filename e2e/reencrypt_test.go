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
	r2 := f.run("keys", "rotate", "--reencrypt", "--reason", "again")
	complExpect(t, r2, 0, "data key 3 is now active", "600 ciphertexts re-encrypted under data key 3")
	complAssertNoLeak(t, f, complCanary, r, v, s, r2)
}
