package config

import (
	"errors"
	"strings"
	"testing"
)

const keysTables = "tables:\n  patient:\n    columns:\n      ssn: { class: phi }\n"

func TestKeysSection(t *testing.T) {
	cfg, err := Parse("pgphi.yaml", []byte("version: 1\nkeys:\n  kek: pkcs11\n  module: /usr/lib/softhsm/libsofthsm2.so\n  token: pgphi\n  key_label: pgphi-kek\n  key_id: \"0a0B\"\n  mechanism: kwp\n  pin_file: pin\n"+keysTables))
	if err != nil {
		t.Fatal(err)
	}
	want := Keys{KEK: "pkcs11", Module: "/usr/lib/softhsm/libsofthsm2.so", Token: "pgphi", Slot: -1, KeyLabel: "pgphi-kek", KeyID: "0a0B", Mechanism: "kwp", PinFile: "pin"}
	if cfg.Keys != want {
		t.Fatalf("Keys = %+v, want %+v", cfg.Keys, want)
	}
	if cfg, err := Parse("pgphi.yaml", []byte("version: 1\n"+keysTables)); err != nil || cfg.Keys.KEK != "" {
		t.Fatalf("no keys section: %+v, %v", cfg.Keys, err)
	}
	for _, c := range []struct{ yaml, want string }{
		{"keys: { kek: pkcs11, module: m, token: t, key_label: k, pin: \"1234\" }", "a secret never goes in the config file"},
		{"keys: { kek: passphrase, passphrase: x }", "a secret never goes in the config file"},
		{"keys: { kek: hsm }", `unknown keys.kek "hsm"`},
		{"keys: { kek: pkcs11, token: t, key_label: k }", "needs the module"},
		{"keys: { kek: pkcs11, module: m, key_label: k }", "needs the token"},
		{"keys: { kek: pkcs11, module: m, slot: 0 }", "needs the key"},
		{"keys: { module: m, token: t, key_label: k }", "for `kek: pkcs11`"},
		{"keys: { kek: pkcs11, module: m, token: t, key_id: xyz }", "not hexadecimal"},
		{"keys: { kek: pkcs11, module: m, token: t, key_label: k, mechanism: cbc }", "unknown keys.mechanism"},
	} {
		_, err := Parse("pgphi.yaml", []byte("version: 1\n"+c.yaml+"\n"+keysTables))
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.yaml, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "1234") {
			t.Errorf("%s: the error shows the PIN: %v", c.yaml, err)
		}
	}
}
