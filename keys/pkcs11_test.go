//go:build cgo

package keys

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/miekg/pkcs11"

	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/state"
)

// EnvTestSoftHSMModule overrides where the tests look for SoftHSM's module.
const EnvTestSoftHSMModule = "PGPHI_TEST_SOFTHSM_MODULE"

// softhsmModule returns the path of libsofthsm2.so, skipping the test when
// SoftHSM is not installed, unless CI is set (then the test fails).
func softhsmModule(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv(EnvTestSoftHSMModule), "/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/local/lib/softhsm/libsofthsm2.so", "/opt/homebrew/lib/softhsm/libsofthsm2.so"}
	_, utilErr := exec.LookPath("softhsm2-util")
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if _, err := os.Stat(c); err == nil && utilErr == nil {
			return c
		}
	}
	msg := "SoftHSM 2 is not installed (no libsofthsm2.so or no softhsm2-util; Debian: apt-get install softhsm2; or set " + EnvTestSoftHSMModule + ")"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + ": CI is set, so the PKCS#11 tests must run")
	}
	t.Skip(msg)
	return ""
}

// testToken is a fresh SoftHSM token in a temporary directory.
type testToken struct {
	module, label, pin string
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newSoftToken initializes a token in a temporary SOFTHSM2_CONF and returns it.
func newSoftToken(t *testing.T) *testToken {
	t.Helper()
	module := softhsmModule(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	tok := &testToken{module: module, label: "pgphi-test", pin: "pin-" + randomHex(8)}
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", tok.label,
		"--pin", tok.pin, "--so-pin", "so-"+randomHex(8)).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return tok
}

// session opens a logged-in session on the token for the test's own use.
func (tok *testToken) session(t *testing.T) (*pkcs11.Ctx, pkcs11.SessionHandle) {
	t.Helper()
	ctx, err := openModule(tok.module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { releaseModule(tok.module) })
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil || trimPadded(ti.Label) != tok.label {
			continue
		}
		sess, err := ctx.OpenSession(s, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		if err := ctx.Login(sess, pkcs11.CKU_USER, tok.pin); err != nil && !isCKR(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
			t.Fatal(err)
		}
		t.Cleanup(func() { ctx.CloseSession(sess) })
		return ctx, sess
	}
	t.Fatalf("token %q not found", tok.label)
	return nil, 0
}

// generateKEK makes a non-extractable, sensitive AES-256 key in the token
// with C_GenerateKey, usable for wrapping and for encryption.
func (tok *testToken) generateKEK(t *testing.T, label string, extra ...*pkcs11.Attribute) pkcs11.ObjectHandle {
	t.Helper()
	ctx, sess := tok.session(t)
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, KeySize),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(label)),
	}
	set := map[uint]bool{}
	for _, a := range extra {
		set[a.Type] = true
		tmpl = append(tmpl, a)
	}
	for _, a := range []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
	} {
		if !set[a.Type] {
			tmpl = append(tmpl, a)
		}
	}
	h, err := ctx.GenerateKey(sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, tmpl)
	if err != nil {
		t.Fatalf("C_GenerateKey: %v", err)
	}
	return h
}

func (tok *testToken) config(keyLabel, mech string) PKCS11Config {
	return PKCS11Config{Module: tok.module, TokenLabel: tok.label, Slot: -1, KeyLabel: keyLabel, Mechanism: mech, PIN: tok.pin}
}

func (tok *testToken) provider(t *testing.T, keyLabel, mech string) KeyWrapper {
	t.Helper()
	p, err := NewPKCS11Provider(tok.config(keyLabel, mech))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.(interface{ Close() error }).Close() })
	return p
}

// offered reports whether the token offers a mechanism.
func (tok *testToken) offered(t *testing.T, mech string) bool {
	ctx, sess := tok.session(t)
	si, err := ctx.GetSessionInfo(sess)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := ctx.GetMechanismList(si.SlotID)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Mechanism == mechanismCodes[mech] {
			return true
		}
	}
	return false
}

func noPIN(t *testing.T, tok *testToken, what string, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), tok.pin) {
		t.Fatalf("%s: the error shows the PIN: %v", what, err)
	}
}

func TestPKCS11KEKCannotBeExtracted(t *testing.T) {
	tok := newSoftToken(t)
	kek := tok.generateKEK(t, "pgphi-kek")
	ctx, sess := tok.session(t)
	_, err := ctx.GetAttributeValue(sess, kek, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if err == nil {
		t.Fatal("C_GetAttributeValue(CKA_VALUE) of the KEK succeeded")
	}
	if !isCKR(err, pkcs11.CKR_ATTRIBUTE_SENSITIVE) {
		t.Logf("C_GetAttributeValue(CKA_VALUE): %v (want CKR_ATTRIBUTE_SENSITIVE)", err)
	}
	// Nor can another key of the token wrap it out.
	other := tok.generateKEK(t, "other")
	if _, err := ctx.WrapKey(sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, other, kek); err == nil {
		t.Fatal("C_WrapKey exported the KEK")
	}
	// The provider refuses to use an extractable key as the KEK.
	tok.generateKEK(t, "loose", pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true))
	p := tok.provider(t, "loose", "")
	if _, err := p.NewParams(); err == nil || !strings.Contains(err.Error(), "can leave the token") {
		t.Fatalf("an extractable KEK was accepted: %v", err)
	}
	// And it never hands out the KEK.
	if k, err := tok.provider(t, "pgphi-kek", "").KEK(KEKParams{Kind: KindPKCS11}); err == nil || k != nil {
		t.Fatal("KEK returned key material")
	}
}

func TestPKCS11WrapUnwrapInToken(t *testing.T) {
	tok := newSoftToken(t)
	tok.generateKEK(t, "pgphi-kek")
	tok.generateKEK(t, "other-kek")
	for _, mech := range []string{MechKWP, MechKeyWrapPad, MechGCM} {
		t.Run(mech, func(t *testing.T) {
			if !tok.offered(t, mech) {
				t.Skipf("SoftHSM does not offer %s", mech)
			}
			p := tok.provider(t, "pgphi-kek", mech)
			params, err := p.NewParams()
			if err != nil {
				t.Fatal(err)
			}
			if params.Kind != KindPKCS11 || params.Mechanism != mech || params.KeyLabel != "pgphi-kek" ||
				params.TokenLabel != tok.label || params.TokenSerial == "" || string(params.KeyID) != "pgphi-kek" {
				t.Fatalf("params = %+v", params)
			}
			dk, _ := GenerateDataKey()
			wrapped, err := p.WrapKey(params, 7, dk)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(wrapped, dk) {
				t.Fatal("the wrapped key contains the data key")
			}
			again, err := p.WrapKey(params, 7, dk)
			if err != nil {
				t.Fatal(err)
			}
			if mech == MechGCM && bytes.Equal(again, wrapped) {
				t.Fatal("GCM wrapping repeated a nonce")
			}
			got, err := p.UnwrapKey(params, 7, wrapped)
			if err != nil || !bytes.Equal(got, dk) {
				t.Fatalf("UnwrapKey = %x, %v; want the data key", got, err)
			}
			// Bound to its key id.
			if _, err := p.UnwrapKey(params, 8, wrapped); !errors.Is(err, ErrWrongKEK) {
				t.Fatalf("unwrap under another key id: %v, want ErrWrongKEK", err)
			}
			// Tampered.
			bad := bytes.Clone(wrapped)
			bad[len(bad)-1] ^= 1
			if _, err := p.UnwrapKey(params, 7, bad); !errors.Is(err, ErrWrongKEK) {
				t.Fatalf("unwrap of a tampered key: %v, want ErrWrongKEK", err)
			}
			// Only this token key unwraps it: another key of the token
			// fails, and so does software unwrapping under any 32 bytes.
			op := tok.provider(t, "other-kek", mech)
			oparams, err := op.NewParams()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := op.UnwrapKey(oparams, 7, wrapped); !errors.Is(err, ErrWrongKEK) {
				t.Fatalf("another token key unwrapped it: %v", err)
			}
			if _, err := op.UnwrapKey(params, 7, wrapped); err == nil || !strings.Contains(err.Error(), "wrapped by the key labelled") {
				t.Fatalf("params of another key were accepted: %v", err)
			}
			if _, err := Unwrap(make([]byte, KeySize), 7, wrapped); err == nil {
				t.Fatal("software unwrapped a token-wrapped key")
			}
		})
	}
}

func TestPKCS11WrongPIN(t *testing.T) {
	tok := newSoftToken(t)
	tok.generateKEK(t, "pgphi-kek")
	cfg := tok.config("pgphi-kek", "")
	cfg.PIN = "wrong-" + randomHex(8)
	p, err := NewPKCS11Provider(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.(interface{ Close() error }).Close() })
	_, err = p.NewParams()
	if !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("wrong PIN: %v, want an ErrWrongKEK", err)
	}
	noPIN(t, tok, "wrong PIN", err)
	if strings.Contains(err.Error(), cfg.PIN) {
		t.Fatalf("the error shows the wrong PIN: %v", err)
	}
	// No token by that label, no key by that label.
	cfg = tok.config("no-such-key", "")
	p, _ = NewPKCS11Provider(cfg)
	_, err = p.NewParams()
	if !errors.Is(err, ErrNoKEK) {
		t.Fatalf("missing key: %v", err)
	}
	noPIN(t, tok, "missing key", err)
}

func TestPKCS11InitLoadThroughToken(t *testing.T) {
	tok := newSoftToken(t)
	tok.generateKEK(t, "pgphi-kek")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.Ensure(ctx, conn); err != nil {
		t.Fatal(err)
	}
	conn.Release()

	created, err := Init(ctx, pool, tok.provider(t, "pgphi-kek", ""))
	if err != nil || !created {
		t.Fatalf("Init = %v, %v", created, err)
	}
	var kind, mech, tokLabel, keyLabel string
	var wrapped []byte
	if err := pool.QueryRow(ctx, `SELECT k.kind, k.mechanism, k.token_label, k.key_label, d.wrapped
		FROM pgphi.kek k, pgphi.data_keys d WHERE d.key_id = 1`).Scan(&kind, &mech, &tokLabel, &keyLabel, &wrapped); err != nil {
		t.Fatal(err)
	}
	want := MechKeyWrapPad // SoftHSM offers RFC 5649 as CKM_AES_KEY_WRAP_PAD
	if tok.offered(t, MechKWP) {
		want = MechKWP
	}
	if kind != KindPKCS11 || mech != want || tokLabel != tok.label || keyLabel != "pgphi-kek" {
		t.Fatalf("pgphi.kek = %s %s %s %s, want pkcs11 %s %s pgphi-kek", kind, mech, tokLabel, keyLabel, want, tok.label)
	}
	if len(wrapped) != pkcs11WrappedSize {
		t.Fatalf("wrapped data key is %d bytes, want %d (RFC 5649 of 40 bytes)", len(wrapped), pkcs11WrappedSize)
	}

	// A new process: a fresh provider loads the keys and seals/opens.
	ring, err := Load(ctx, pool, tok.provider(t, "pgphi-kek", ""))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ring.Sealer("public.patients", "ssn")
	if err != nil {
		t.Fatal(err)
	}
	bind := envelope.Binding{Table: "public.patients", Column: "ssn", PrimaryKey: []string{"1"}}
	ct, err := s.Seal(nil, envelope.Value{Type: envelope.TypeText, Text: "123-45-6789"}, bind)
	if err != nil {
		t.Fatal(err)
	}
	// Rotation wraps the new key in the token too.
	p := tok.provider(t, "pgphi-kek", "")
	if id, err := Rotate(ctx, pool, p); err != nil || id != 2 {
		t.Fatalf("Rotate = %d, %v", id, err)
	}
	ring2, err := Load(ctx, pool, p)
	if err != nil {
		t.Fatal(err)
	}
	if ring2.ActiveKeyID() != 2 {
		t.Fatalf("active key %d, want 2", ring2.ActiveKeyID())
	}
	if pt, err := ring2.Opener("public.patients", "ssn").Open(ct, bind); err != nil || pt.Text != "123-45-6789" {
		t.Fatalf("Open after reload = %q, %v", pt, err)
	}
	// Init again is a check that the token unwraps the keys.
	if created, err := Init(ctx, pool, p); err != nil || created {
		t.Fatalf("second Init = %v, %v", created, err)
	}

	// Wrong PIN: an ErrWrongKEK (exit 2), without the PIN.
	cfg := tok.config("pgphi-kek", "")
	cfg.PIN = "wrong-" + randomHex(8)
	bad, _ := NewPKCS11Provider(cfg)
	_, err = Load(ctx, pool, bad)
	if !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("Load with a wrong PIN: %v, want ErrWrongKEK", err)
	}
	noPIN(t, tok, "Load with a wrong PIN", err)
	if strings.Contains(err.Error(), cfg.PIN) {
		t.Fatalf("error shows the wrong PIN: %v", err)
	}
	// Another key of the token: refused, naming the recorded key.
	tok.generateKEK(t, "other-kek")
	_, err = Load(ctx, pool, tok.provider(t, "other-kek", ""))
	if err == nil || !strings.Contains(err.Error(), `"pgphi-kek"`) {
		t.Fatalf("Load with another key: %v", err)
	}
	// A passphrase cannot open a pkcs11 key store.
	if _, err := Load(ctx, pool, PassphraseProvider("x")); err == nil || !strings.Contains(err.Error(), EnvPKCS11Module) {
		t.Fatalf("Load with a passphrase: %v", err)
	}

	// The PIN is nowhere in the database's pgphi schema.
	rows, err := pool.Query(ctx, `SELECT row_to_json(k)::text FROM pgphi.kek k
		UNION ALL SELECT row_to_json(d)::text FROM pgphi.data_keys d`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var row string
		if err := rows.Scan(&row); err != nil {
			t.Fatal(err)
		}
		n++
		if strings.Contains(row, tok.pin) || strings.Contains(row, hex.EncodeToString([]byte(tok.pin))) {
			t.Fatalf("the PIN is in the database: %s", row)
		}
	}
	if n != 3 {
		t.Fatalf("%d rows read, want 3", n)
	}
}

func TestPKCS11ConfigFromEnv(t *testing.T) {
	ForgetPassphrase()
	t.Cleanup(ForgetPassphrase)
	dir := t.TempDir()
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte("s3cret-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvPKCS11Module, "/nonexistent/libpkcs11.so")
	t.Setenv(EnvPKCS11Token, "tok")
	t.Setenv(EnvPKCS11KeyLabel, "kek")
	t.Setenv(EnvPKCS11KeyID, "0a0b")
	t.Setenv(EnvPKCS11Mechanism, "gcm")
	t.Setenv(EnvPKCS11PINFile, pinFile)
	cfg, err := PKCS11ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PIN != "s3cret-pin" || cfg.TokenLabel != "tok" || cfg.KeyLabel != "kek" || !bytes.Equal(cfg.KeyID, []byte{10, 11}) || cfg.Slot != -1 {
		t.Fatalf("cfg = %+v", cfg)
	}
	if _, ok := os.LookupEnv(EnvPKCS11PINFile); ok {
		t.Fatal("PGPHI_PKCS11_PIN_FILE is still in the environment")
	}
	// PGPHI_PKCS11_MODULE selects the pkcs11 provider.
	p, err := ProviderFromEnv()
	if err != nil || p.Name() != KindPKCS11 {
		t.Fatalf("ProviderFromEnv = %v, %v", p, err)
	}
	// A missing module is a clear error, without the PIN.
	_, err = p.(KeyWrapper).NewParams()
	if err == nil || strings.Contains(err.Error(), "s3cret-pin") {
		t.Fatalf("NewParams with no module: %v", err)
	}
	// PGPHI_PKCS11_PIN is read once and removed.
	ForgetPassphrase()
	t.Setenv(EnvPKCS11PIN, "other-pin")
	if cfg, err := PKCS11ConfigFromEnv(); err != nil || cfg.PIN != "other-pin" {
		t.Fatalf("PIN from PGPHI_PKCS11_PIN: %q, %v", cfg.PIN, err)
	}
	if _, ok := os.LookupEnv(EnvPKCS11PIN); ok {
		t.Fatal("PGPHI_PKCS11_PIN is still in the environment")
	}
	// Loose permissions on the PIN file are refused.
	ForgetPassphrase()
	os.Chmod(pinFile, 0o644)
	t.Setenv(EnvPKCS11PINFile, pinFile)
	if _, err := PKCS11ConfigFromEnv(); err == nil || strings.Contains(err.Error(), "s3cret-pin") {
		t.Fatalf("PIN file of mode 0644: %v", err)
	}
	// Nothing configured: ErrNoKEK naming what is missing.
	ForgetPassphrase()
	t.Setenv(EnvPKCS11Module, "")
	t.Setenv(EnvPKCS11Token, "")
	t.Setenv(EnvPKCS11KeyLabel, "")
	t.Setenv(EnvPKCS11KeyID, "")
	if _, err := ProviderOfKind(KindPKCS11); !errors.Is(err, ErrNoKEK) || !strings.Contains(err.Error(), EnvPKCS11Module) {
		t.Fatalf("ProviderOfKind(pkcs11) with nothing set: %v", err)
	}
}

// rfc5649Wrap is AES key wrap with padding (RFC 5649, NIST SP 800-38F KWP),
// for checking the token's output against docs/FORMAT.md.
func rfc5649Wrap(t *testing.T, kek, p []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	a := binary.BigEndian.AppendUint32([]byte{0xA6, 0x59, 0x59, 0xA6}, uint32(len(p)))
	padded := append(bytes.Clone(p), make([]byte, (8-len(p)%8)%8)...)
	n := len(padded) / 8
	r := make([][]byte, n)
	for i := range r {
		r[i] = padded[8*i : 8*i+8]
	}
	var buf [16]byte
	if n == 1 {
		copy(buf[:8], a)
		copy(buf[8:], r[0])
		block.Encrypt(buf[:], buf[:])
		return bytes.Clone(buf[:])
	}
	for j := 0; j < 6; j++ {
		for i := 0; i < n; i++ {
			copy(buf[:8], a)
			copy(buf[8:], r[i])
			block.Encrypt(buf[:], buf[:])
			tt := uint64(n*j + i + 1)
			a = binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(buf[:8])^tt)
			r[i] = bytes.Clone(buf[8:])
		}
	}
	out := bytes.Clone(a)
	for _, b := range r {
		out = append(out, b...)
	}
	return out
}

// TestPKCS11MatchesFormat checks, with a KEK that the test imports (and so
// knows), that the token's wrapping is what docs/FORMAT.md section 1.5
// says: RFC 5649 of data key || u32be(id) || "pgk1" for the key wrap
// mechanisms, and the layout of section 1.3 for CKM_AES_GCM.
func TestPKCS11MatchesFormat(t *testing.T) {
	tok := newSoftToken(t)
	kek := make([]byte, KeySize)
	rand.Read(kek)
	ctx, sess := tok.session(t)
	if _, err := ctx.CreateObject(sess, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "known"),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, kek),
	}); err != nil {
		t.Fatal(err)
	}
	dk, _ := GenerateDataKey()
	for _, mech := range []string{MechKWP, MechKeyWrapPad, MechGCM} {
		t.Run(mech, func(t *testing.T) {
			if !tok.offered(t, mech) {
				t.Skipf("SoftHSM does not offer %s", mech)
			}
			p := tok.provider(t, "known", mech)
			params, err := p.NewParams()
			if err != nil {
				t.Fatal(err)
			}
			wrapped, err := p.WrapKey(params, 5, dk)
			if err != nil {
				t.Fatal(err)
			}
			if mech == MechGCM {
				// Section 1.3: the software Unwrap opens it.
				got, err := Unwrap(kek, 5, wrapped)
				if err != nil || !bytes.Equal(got, dk) {
					t.Fatalf("software Unwrap of the token's GCM wrap: %v", err)
				}
				// And the token opens what software wrapped.
				sw, _ := Wrap(kek, 5, dk)
				if got, err := p.UnwrapKey(params, 5, sw); err != nil || !bytes.Equal(got, dk) {
					t.Fatalf("token unwrap of a software GCM wrap: %v", err)
				}
				return
			}
			value := append(binary.BigEndian.AppendUint32(bytes.Clone(dk), 5), "pgk1"...)
			if want := rfc5649Wrap(t, kek, value); !bytes.Equal(wrapped, want) {
				t.Fatalf("token wrap = %x, RFC 5649 = %x", wrapped, want)
			}
		})
	}
}
