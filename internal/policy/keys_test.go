package policy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestLoadPrivateKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, openssh := range []bool{false, true} {
		k := newKey(t, dir, fmt.Sprintf("k%v", openssh), DBA, openssh)
		got, err := LoadPrivateKey(k.path)
		if err != nil {
			t.Fatalf("openssh=%v: %v", openssh, err)
		}
		if !got.Equal(k.priv) {
			t.Fatalf("openssh=%v: loaded a different key", openssh)
		}
	}
}

func TestLoadPrivateKeyRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	enc, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "c", []byte("secret passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecSSH, err := ssh.MarshalPrivateKey(ec, "")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, data string
		want       []string
	}{
		{"encrypted-openssh", string(pemEncode(enc)), []string{"passphrase", "unencrypted copy"}},
		{"encrypted-pkcs8", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBAA==\n-----END ENCRYPTED PRIVATE KEY-----\n", []string{"encrypted PKCS#8", "unencrypted copy"}},
		{"ecdsa-pkcs8", string(pemEncode(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})), []string{"is a ECDSA key; approvals need an Ed25519 key"}},
		{"ecdsa-openssh", string(pemEncode(ecSSH)), []string{"is a ECDSA key; approvals need an Ed25519 key"}},
		{"garbage", "not a key at all", []string{"not a PEM or OpenSSH private key"}},
		{"bad-pkcs8", "-----BEGIN PRIVATE KEY-----\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n-----END PRIVATE KEY-----\n", []string{"not a valid PKCS#8"}},
		{"bad-openssh", "-----BEGIN OPENSSH PRIVATE KEY-----\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n-----END OPENSSH PRIVATE KEY-----\n", []string{"not a valid OpenSSH private key"}},
		{"rsa-label", "-----BEGIN RSA PRIVATE KEY-----\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n-----END RSA PRIVATE KEY-----\n", []string{"not supported"}},
	}
	for _, c := range cases {
		path := filepath.Join(dir, c.name)
		if err := os.WriteFile(path, []byte(c.data), 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := LoadPrivateKey(path)
		if err == nil || k != nil {
			t.Errorf("%s: loaded", c.name)
			continue
		}
		msg := err.Error()
		for _, w := range append(c.want, path) {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: error %q does not mention %q", c.name, msg, w)
			}
		}
		for _, line := range strings.Split(c.data, "\n") {
			if len(line) > 8 && !strings.HasPrefix(line, "-----") && strings.Contains(msg, line) {
				t.Errorf("%s: error echoes the file's contents: %s", c.name, msg)
			}
		}
	}
	if _, err := LoadPrivateKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file loaded")
	}
}

// TestSshKeygenInterop checks fingerprints against `ssh-keygen -l` and loads
// a key made by ssh-keygen, when ssh-keygen is installed.
func TestSshKeygenInterop(t *testing.T) {
	t.Parallel()
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Skip("ssh-keygen not installed")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	priv, err := LoadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	pubLine, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(keygen, "-l", "-E", "sha256", "-f", path+".pub").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Fields(string(out))[1]
	pub := priv.Public().(ed25519.PublicKey)
	if got := Fingerprint(pub); got != want {
		t.Fatalf("Fingerprint = %s, ssh-keygen says %s", got, want)
	}
	f := strings.Fields(string(pubLine))
	if got := AuthorizedKey(pub); got != f[0]+" "+f[1] {
		t.Fatalf("AuthorizedKey = %s, want %s %s", got, f[0], f[1])
	}
	signers, err := ParseSigners(strings.NewReader("dora dba dora "+string(pubLine)), "s")
	if err != nil || len(signers) != 1 || signers[0].Fingerprint != want || !signers[0].Key.Equal(pub) {
		t.Fatalf("signers = %+v, %v", signers, err)
	}
}

func TestLoadSigners(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if len(f.signers) != 4 {
		t.Fatalf("%d signers, want 4", len(f.signers))
	}
	s := f.signers[0]
	if s.Name != "alice" || s.Role != DBA || !s.Key.Equal(f.alice.pub) || s.Fingerprint != Fingerprint(f.alice.pub) || !strings.HasPrefix(s.Fingerprint, "SHA256:") {
		t.Fatalf("first signer = %+v", s)
	}
	if f.signers[2].Name != "bob" || !f.signers[2].Key.Equal(f.bob2.pub) {
		t.Fatalf("bob's second key: %+v", f.signers[2])
	}
	if _, err := LoadSigners(filepath.Join(f.dir, "missing")); err == nil {
		t.Fatal("missing signers file loaded")
	}

	ecdsaLine := func() string {
		ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pk, _ := ssh.NewPublicKey(&ec.PublicKey)
		return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
	}()
	ecBlob := strings.Fields(ecdsaLine)[1]
	alice := signerLine(f.alice)
	cases := []struct {
		line, want string
	}{
		{"alice dba", "want NAME ROLE DBROLE ssh-ed25519 KEY [comment], got 2 field(s)"},
		{"alice dba " + AuthorizedKey(f.alice.pub), "no database role: write NAME ROLE DBROLE ssh-ed25519 KEY"},
		{"alice dba alice " + AuthorizedKey(f.alice.pub)[:11], "got 4 field(s)"},
		{"alice admin alice " + AuthorizedKey(f.alice.pub), "unknown role `admin`"},
		{"alice dba alice " + ecdsaLine, `key type "ecdsa-sha2-nistp256" is not supported`},
		{"alice dba alice ssh-ed25519 " + ecBlob, "is a ecdsa-sha2-nistp256 key, but the line says ssh-ed25519"},
		{"alice dba alice ssh-ed25519 !!!notbase64", "not valid base64"},
		{"alice dba alice ssh-ed25519 " + base64.StdEncoding.EncodeToString([]byte("junk")), "not a valid SSH public key"},
		{"alice\x01 dba alice " + AuthorizedKey(f.alice.pub), "non-printable"},
		{"alice dba al\x01ice " + AuthorizedKey(f.alice.pub), "is not a valid PostgreSQL role name"},
		{"carol dba carol " + AuthorizedKey(f.alice.pub), "is already listed on line 2"},
		{"alice healthcare_admin alice " + AuthorizedKey(f.carol.pub), "signer alice is listed as dba on line 2; a signer has one role"},
	}
	for _, c := range cases {
		_, err := ParseSigners(strings.NewReader("# approvers\n"+alice+"\n\n"+c.line+"\n"), "signers.txt")
		if err == nil || !strings.HasPrefix(err.Error(), "signers.txt:4: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("line %q: err = %v, want signers.txt:4: ...%s", c.line, err, c.want)
		}
	}
	// An empty file (or only comments) lists nobody.
	if s, err := ParseSigners(strings.NewReader("# nobody yet\n\n"), "x"); err != nil || len(s) != 0 {
		t.Fatalf("empty: %v, %v", s, err)
	}
}

func TestMessageAndSign(t *testing.T) {
	t.Parallel()
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tg := Target{PlanID: "p1", Command: "apply", Environment: "production", SystemIdentifier: "7301", Database: "lims", Expires: exp}
	const want = "pgphi-approval-v2\np1\napply\nproduction\n7301\nlims\n2030-01-02T03:04:05Z\n"
	if got := string(Message(tg)); got != want {
		t.Fatalf("Message = %q", got)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sig := Sign(priv, tg)
	if !ed25519.Verify(pub, []byte(want), sig) || !Verify(pub, tg, sig) {
		t.Fatal("signature does not verify over the documented message")
	}
	// Every field is bound: another plan, command, environment, cluster,
	// database or expiry does not verify.
	for _, change := range []func(*Target){
		func(x *Target) { x.PlanID = "p2" },
		func(x *Target) { x.Command = "cleanup" },
		func(x *Target) { x.Environment = "staging" },
		func(x *Target) { x.SystemIdentifier = "7302" },
		func(x *Target) { x.Database = "other" },
		func(x *Target) { x.Expires = exp.Add(time.Second) },
	} {
		other := tg
		change(&other)
		if Verify(pub, other, sig) {
			t.Errorf("signature verifies for %+v", other)
		}
	}
	// A version 1 signature (plan id and environment only) does not verify.
	if Verify(pub, tg, ed25519.Sign(priv, []byte("pgphi-approval-v1\np1\nproduction\n"))) {
		t.Error("a v1 signature verifies as v2")
	}
	if Verify(pub, tg, sig[:63]) || Verify(pub[:31], tg, sig) {
		t.Error("malformed inputs verify")
	}
}
