package policy

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"

	"golang.org/x/crypto/ssh"
)

// Signer is one approver of the allowed signers file: a name, the pgphi
// role the approval counts for, the database role the approver logs in as
// (so that pgphi can tell when the executor of a command is its own
// approver), and the Ed25519 public key that identifies the approver.
type Signer struct {
	Name        string
	Role        Role
	DBRole      string // "-" when the approver never logs in to the database
	Key         ed25519.PublicKey
	Fingerprint string // "SHA256:...", as `ssh-keygen -l` prints it
}

// NoDBRole is the database role of an approver who never connects.
const NoDBRole = "-"

// LoadSigners reads the allowed signers file at path. Its format, one signer
// per line:
//
//	NAME ROLE DBROLE ssh-ed25519 AAAA... [comment]
//
// ROLE is dba, healthcare_admin or audit_officer; DBROLE is the PostgreSQL
// login role the approver uses ("-" for none): an executor connected as the
// DBROLE of an approver is that approver. Lines whose first
// non-blank character is # and blank lines are ignored. A key may appear
// only once; a name may have several keys (one per line) but only one role.
// Errors name path:line.
func LoadSigners(path string) ([]Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signers file: %w", err)
	}
	return ParseSigners(bytes.NewReader(data), path)
}

// ParseSigners reads an allowed signers file from r; name is used in errors.
func ParseSigners(r io.Reader, name string) ([]Signer, error) {
	var out []Signer
	keyLine := map[string]int{}  // fingerprint -> line
	roleOf := map[string]Role{}  // name -> role
	nameLine := map[string]int{} // name -> first line
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s", name, n, fmt.Sprintf(format, args...))
		}
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == ssh.KeyAlgoED25519 {
			return nil, fail("no database role: write NAME ROLE DBROLE ssh-ed25519 KEY, where DBROLE is the database role the approver logs in as (- for none)")
		}
		if len(f) < 5 {
			return nil, fail("want NAME ROLE DBROLE ssh-ed25519 KEY [comment], got %d field(s)", len(f))
		}
		dbRole := f[2]
		if len(dbRole) > 63 || strings.IndexFunc(dbRole, func(c rune) bool { return !unicode.IsPrint(c) }) >= 0 {
			return nil, fail("database role %q is not a valid PostgreSQL role name", dbRole)
		}
		f = append(f[:2], f[3:]...)
		for _, c := range f[0] {
			if !unicode.IsPrint(c) {
				return nil, fail("signer name contains a non-printable character")
			}
		}
		role, err := ParseRole(f[1])
		if err != nil {
			return nil, fail("%v", err)
		}
		if f[2] != ssh.KeyAlgoED25519 {
			return nil, fail("key type %q is not supported; approvers need ssh-ed25519 keys", f[2])
		}
		blob, err := base64.StdEncoding.DecodeString(f[3])
		if err != nil {
			return nil, fail("key is not valid base64")
		}
		pk, err := ssh.ParsePublicKey(blob)
		if err != nil {
			return nil, fail("key is not a valid SSH public key")
		}
		if pk.Type() != ssh.KeyAlgoED25519 {
			return nil, fail("key is a %s key, but the line says ssh-ed25519", pk.Type())
		}
		cpk, ok := pk.(ssh.CryptoPublicKey)
		if !ok {
			return nil, fail("key is not a valid ssh-ed25519 key")
		}
		pub, ok := cpk.CryptoPublicKey().(ed25519.PublicKey)
		if !ok || len(pub) != ed25519.PublicKeySize {
			return nil, fail("key is not a valid ssh-ed25519 key")
		}
		fp := ssh.FingerprintSHA256(pk)
		if l, dup := keyLine[fp]; dup {
			return nil, fail("key %s is already listed on line %d; a key identifies one signer", fp, l)
		}
		if r, seen := roleOf[f[0]]; seen && r != role {
			return nil, fail("signer %s is listed as %s on line %d; a signer has one role", f[0], r, nameLine[f[0]])
		}
		keyLine[fp] = n
		if _, seen := nameLine[f[0]]; !seen {
			nameLine[f[0]] = n
			roleOf[f[0]] = role
		}
		out = append(out, Signer{Name: f[0], Role: role, DBRole: dbRole, Key: pub, Fingerprint: fp})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("signers file %s: %w", name, err)
	}
	return out, nil
}

// signerByKey returns the signer whose key is pub.
func signerByKey(signers []Signer, pub ed25519.PublicKey) (Signer, bool) {
	for _, s := range signers {
		if s.Key.Equal(pub) {
			return s, true
		}
	}
	return Signer{}, false
}

// signerByFingerprint returns the signer whose key has fingerprint fp.
func signerByFingerprint(signers []Signer, fp string) (Signer, bool) {
	for _, s := range signers {
		if Fingerprint(s.Key) == fp {
			return s, true
		}
	}
	return Signer{}, false
}
