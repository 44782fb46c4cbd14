//go:build cgo

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
)

const hsmConfig = `version: 1
environment: test
tables:
  patient:
    columns:
      last_name: { class: pii, search: [exact] }
      notes: { class: phi }
`

// hsmToken makes a SoftHSM token in a temporary SOFTHSM2_CONF with a
// non-extractable AES-256 KEK labelled pgphi-kek, and returns the variables
// that point pgphi at it (the PIN in a file of mode 0600).
func hsmToken(t *testing.T) (env []string, pin string) {
	t.Helper()
	module := "/usr/lib/softhsm/libsofthsm2.so"
	if m := os.Getenv("PGPHI_TEST_SOFTHSM_MODULE"); m != "" {
		module = m
	}
	_, utilErr := exec.LookPath("softhsm2-util")
	if _, err := os.Stat(module); err != nil || utilErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("SoftHSM 2 is not installed (%s): CI is set, so this test must run", module)
		}
		t.Skipf("SoftHSM 2 is not installed (%s; apt-get install softhsm2)", module)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	writeFile(t, conf, "directories.tokendir = "+dir+"\nobjectstore.backend = file\nlog.level = ERROR\n")
	b := make([]byte, 8)
	rand.Read(b)
	pin = "pin-" + hex.EncodeToString(b)
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "pgphi", "--pin", pin, "--so-pin", "so-"+pin)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
	t.Setenv("SOFTHSM2_CONF", conf) // for this process's C_Initialize
	ctx := pkcs11.New(module)
	if err := ctx.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer func() { ctx.Finalize(); ctx.Destroy() }()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	slot := -1
	for _, s := range slots {
		if ti, err := ctx.GetTokenInfo(s); err == nil && strings.TrimRight(ti.Label, " \x00") == "pgphi" {
			slot = int(s)
		}
	}
	if slot < 0 {
		t.Fatal("token pgphi not found")
	}
	sess, err := ctx.OpenSession(uint(slot), pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.CloseSession(sess)
	if err := ctx.Login(sess, pkcs11.CKU_USER, pin); err != nil {
		t.Fatal(err)
	}
	defer ctx.Logout(sess)
	if _, err := ctx.GenerateKey(sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "pgphi-kek"),
	}); err != nil {
		t.Fatal(err)
	}
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"SOFTHSM2_CONF=" + conf, "PGPHI_PKCS11_MODULE=" + module, "PGPHI_PKCS11_TOKEN=pgphi",
		"PGPHI_PKCS11_KEY_LABEL=pgphi-kek", "PGPHI_PKCS11_PIN_FILE=" + pinFile}, pin
}

// TestHSMHoldsTheKEK runs keys init, apply, search, rotate and verify with
// the KEK in a SoftHSM token; a wrong PIN exits 2 without showing a PIN.
func TestHSMHoldsTheKEK(t *testing.T) {
	env, pin := hsmToken(t)
	f := newFixture(t, hsmConfig)
	f.env = env // no passphrase: the token is the only KEK
	f.exec(`CREATE TABLE patient (id bigint PRIMARY KEY, last_name text, notes text)`)
	f.exec(`INSERT INTO patient SELECT g, 'Last' || g, 'note ' || g FROM generate_series(1, 50) g`)

	r := f.mustRun("keys", "init", "--kek", "pkcs11")
	if !strings.Contains(r.stdout, "pkcs11") {
		t.Errorf("keys init: %s", r)
	}
	var kind, mech string
	if err := f.conn().QueryRow(t.Context(), "SELECT kind, mechanism FROM pgphi.kek").Scan(&kind, &mech); err != nil {
		t.Fatal(err)
	}
	if kind != "pkcs11" || (mech != "CKM_AES_KEY_WRAP_KWP" && mech != "CKM_AES_KEY_WRAP_PAD") {
		t.Fatalf("pgphi.kek: %s %s", kind, mech)
	}
	f.mustRun("apply", "--reason", "HSM e2e")
	f.verifyOK(50)
	if r := f.mustRun("search", "patient", "last_name", "--exact", "Last7", "--reason", "front desk"); strings.TrimSpace(r.stdout) != "7" {
		t.Errorf("search: %s", r)
	}
	f.mustRun("keys", "rotate")
	f.exec(`INSERT INTO patient VALUES (51, 'Last51', 'note 51')`)
	f.mustRun("apply", "--reason", "HSM e2e, after rotate") // encrypts row 51 under data key 2
	f.verifyOK(51)
	if r := f.mustRun("search", "patient", "last_name", "--exact", "Last51", "--reason", "front desk"); strings.TrimSpace(r.stdout) != "51" {
		t.Errorf("search after rotate: %s", r)
	}

	// A wrong PIN: exit 2, and no PIN in the output.
	bad := append([]string(nil), env...)
	for i, kv := range bad {
		if strings.HasPrefix(kv, "PGPHI_PKCS11_PIN_FILE=") {
			bad[i] = "PGPHI_PKCS11_PIN=wrong-" + pin[4:]
		}
	}
	f.env = bad
	r = f.expectCode(2, "verify")
	if !strings.Contains(r.stderr, "PIN") || strings.Contains(r.stdout+r.stderr, pin[4:]) {
		t.Errorf("wrong PIN: %s", r)
	}
	// The same token configured in the config file's keys: section, with
	// only SOFTHSM2_CONF in the environment.
	var conf, module, pinFile string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "SOFTHSM2_CONF":
			conf = v
		case "PGPHI_PKCS11_MODULE":
			module = v
		case "PGPHI_PKCS11_PIN_FILE":
			pinFile = v
		}
	}
	f.writeConfig(hsmConfig + "keys: { kek: pkcs11, module: " + module + ", token: pgphi, key_label: pgphi-kek, pin_file: " + pinFile + " }\n")
	f.env = []string{"SOFTHSM2_CONF=" + conf}
	f.verifyOK(51)

	// The PIN is nowhere in pgphi's schema, audit log included.
	var n int
	if err := f.conn().QueryRow(t.Context(), `SELECT count(*) FROM (
		SELECT row_to_json(k)::text AS j FROM pgphi.kek k
		UNION ALL SELECT row_to_json(a)::text FROM pgphi.audit_log a) s WHERE j LIKE '%' || $1 || '%'`, pin[4:]).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the PIN appears in %d rows of pgphi", n)
	}
}
