package policy

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

type testKey struct {
	name string
	role Role
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	path string // private key file
	// dbRole is the database role in the signers file (default: name).
	dbRole string
}

type fixture struct {
	dir                            string
	alice, bob, bob2, carol, mallo *testKey
	signersPath                    string
	signers                        []Signer
}

var prodPolicy = Requirements{"production": {DBA: 1, HealthcareAdmin: 1}}

// newKey generates a key and writes its private half to dir, as PKCS#8 PEM
// or as an unencrypted OpenSSH key.
func newKey(t *testing.T, dir, name string, role Role, openssh bool) *testKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	if openssh {
		block, err := ssh.MarshalPrivateKey(priv, name+"@example")
		if err != nil {
			t.Fatal(err)
		}
		data = pemEncode(block)
	} else {
		data, err = MarshalPrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, name+".key")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return &testKey{name: name, role: role, priv: priv, pub: pub, path: path}
}

func signerLine(k *testKey) string {
	db := k.dbRole
	if db == "" {
		db = k.name
	}
	return fmt.Sprintf("%s %s %s %s %s@laptop", k.name, k.role, db, AuthorizedKey(k.pub), k.name)
}

func writeSigners(t *testing.T, path string, lines ...string) []Signer {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigners(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir, signersPath: filepath.Join(dir, "allowed_signers")}
	f.alice = newKey(t, dir, "alice", DBA, false)
	f.bob = newKey(t, dir, "bob", HealthcareAdmin, true)
	f.bob2 = newKey(t, dir, "bob2", HealthcareAdmin, false)
	f.bob2.name = "bob" // bob's second key
	f.carol = newKey(t, dir, "carol", HealthcareAdmin, true)
	f.mallo = newKey(t, dir, "mallory", DBA, false)
	f.signers = writeSigners(t, f.signersPath,
		"# pgphi approvers",
		"",
		signerLine(f.alice),
		"   # indented comment",
		signerLine(f.bob),
		signerLine(f.bob2),
		signerLine(f.carol),
	)
	return f
}

func pemEncode(b *pem.Block) []byte { return pem.EncodeToMemory(b) }
