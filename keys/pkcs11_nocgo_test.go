//go:build !cgo

package keys

import (
	"errors"
	"os"
	"testing"
)

// Without cgo the PKCS#11 provider cannot load a module: its tests
// (pkcs11_test.go) are not built. CI must run them, so it fails there.
func TestPKCS11NeedsCgo(t *testing.T) {
	if os.Getenv("CI") != "" {
		t.Fatal("CI is set but the tests were built without cgo (CGO_ENABLED=0 or no C compiler): the PKCS#11 tests did not run")
	}
	_, err := NewPKCS11Provider(PKCS11Config{Module: "m", TokenLabel: "t", Slot: -1, KeyLabel: "k", PIN: "p"})
	if !errors.Is(err, ErrPKCS11Unavailable) {
		t.Fatalf("NewPKCS11Provider without cgo: %v", err)
	}
	t.Skip("built without cgo: the PKCS#11 provider tests need cgo and SoftHSM 2")
}
