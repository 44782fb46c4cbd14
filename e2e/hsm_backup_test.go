//go:build cgo

package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHSMBackupAndRewrap: with the KEK in a SoftHSM token, a backup's key is
// wrapped in the token and the backup restore-verifies through it; rewrap
// then moves the data keys out to a passphrase (the token no longer opens
// the database), while the earlier backup still needs, and opens with, the
// token.
func TestHSMBackupAndRewrap(t *testing.T) {
	env, pin := hsmToken(t)
	f := newFixture(t, "")
	key, _ := complKey(t, f.dir, "auditor")
	f.writeConfig(strings.Replace(hsmConfig, "tables:\n", "audit: { signing_key: "+key+" }\ntables:\n", 1))
	f.env = env
	f.exec(`CREATE TABLE patient (id bigint PRIMARY KEY, last_name text, notes text)`)
	f.exec(`INSERT INTO patient SELECT g, 'Last' || g, $1 || g FROM generate_series(1, 30) g`, kbCanary)
	f.mustRun("keys", "init", "--kek", "pkcs11")
	f.mustRun("apply", "--reason", "HSM backup")
	file := filepath.Join(f.dir, "hsm.pgphi")
	f.mustRun("backup", "--out", file)
	data, _ := os.ReadFile(file)
	if bytes.Contains(data, []byte(kbCanary)) || !bytes.Contains(data, []byte(`"kind":"pkcs11"`)) {
		t.Fatal("the backup holds a plaintext value, or its key is not wrapped by the token")
	}
	complExpect(t, f.run("backup", "verify", file), 0, "60 values in 30 rows decrypt and match")

	passFile := filepath.Join(f.dir, "pass")
	if err := os.WriteFile(passFile, []byte("after the HSM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.env = append(append([]string(nil), env...), "PGPHI_NEW_KEK=passphrase", "PGPHI_NEW_PASSPHRASE_FILE="+passFile)
	complExpect(t, f.run("keys", "rewrap"), 0, "from a pkcs11 KEK to a passphrase KEK")
	f.env = env
	complExpect(t, f.run("verify"), 2, "wrapped with a passphrase KEK")
	f.env = []string{"PGPHI_PASSPHRASE_FILE=" + passFile}
	f.verifyOK(30)
	complExpect(t, f.run("backup", "verify", file), 2, "pkcs11 KEK")
	f.env = env
	complExpect(t, f.run("backup", "verify", file), 0, "match the signed manifest")
	for _, r := range []result{f.run("keys", "status")} {
		if strings.Contains(r.stdout+r.stderr, pin[4:]) {
			t.Error("the PIN reached an output")
		}
	}
}
