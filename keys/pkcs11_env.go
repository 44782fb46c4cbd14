package keys

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Environment variables that configure the PKCS#11 KEK provider. The PIN is
// read once, like the passphrase, by CaptureSecrets from PGPHI_PKCS11_PIN or
// PGPHI_PKCS11_PIN_FILE (a file of mode 0600 or 0400 owned by the user
// running pgphi), and both variables are then removed from the environment.
const (
	EnvPKCS11Module    = "PGPHI_PKCS11_MODULE"    // path of the PKCS#11 module (.so)
	EnvPKCS11Token     = "PGPHI_PKCS11_TOKEN"     // token label
	EnvPKCS11Serial    = "PGPHI_PKCS11_SERIAL"    // token serial number (instead of or with the label)
	EnvPKCS11Slot      = "PGPHI_PKCS11_SLOT"      // slot id (instead of a label or serial)
	EnvPKCS11KeyLabel  = "PGPHI_PKCS11_KEY_LABEL" // CKA_LABEL of the KEK
	EnvPKCS11KeyID     = "PGPHI_PKCS11_KEY_ID"    // CKA_ID of the KEK, hexadecimal
	EnvPKCS11Mechanism = "PGPHI_PKCS11_MECHANISM" // auto (default), kwp, pad or gcm
	EnvPKCS11PIN       = "PGPHI_PKCS11_PIN"
	EnvPKCS11PINFile   = "PGPHI_PKCS11_PIN_FILE"
)

// PKCS#11 wrapping mechanisms, as recorded in KEKParams.Mechanism.
const (
	// MechKWP is AES key wrap with padding, RFC 5649 / NIST SP 800-38F KWP
	// (PKCS#11 3.0 CKM_AES_KEY_WRAP_KWP, 0x210B).
	MechKWP = "CKM_AES_KEY_WRAP_KWP"
	// MechKeyWrapPad is CKM_AES_KEY_WRAP_PAD (0x210A), which SoftHSM and
	// some older tokens implement as RFC 5649; used only when the token does
	// not offer MechKWP.
	MechKeyWrapPad = "CKM_AES_KEY_WRAP_PAD"
	// MechGCM is AES-256-GCM encryption in the token (CKM_AES_GCM) with the
	// same layout and associated data as Wrap; many HSMs refuse a nonce
	// chosen by the caller, and the token's own nonce is then used.
	MechGCM = "CKM_AES_GCM"
)

// PKCS11Config says where the KEK is: which module, which token, which key,
// and the PIN that logs in to the token. Only the PIN is secret.
type PKCS11Config struct {
	Module      string // path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so
	TokenLabel  string // the token's label (CK_TOKEN_INFO.label)
	TokenSerial string // the token's serial number
	Slot        int    // the slot id, or -1 to find the token by label or serial
	KeyLabel    string // CKA_LABEL of the KEK
	KeyID       []byte // CKA_ID of the KEK
	// Mechanism is "" or "auto" (KWP, else the token's RFC 5649 key wrap
	// with padding, else GCM, as the token and the key allow), or one of
	// MechKWP, MechKeyWrapPad, MechGCM, or their short names kwp, pad, gcm.
	// It applies to `keys init`; afterwards the recorded mechanism is used.
	Mechanism string
	PIN       string // the user PIN; never printed nor stored
}

// KEKDefaults is what a config file says about the KEK (`keys:`); each
// PGPHI_* variable overrides its field. It holds no secret: PINFile is the
// path of a file holding the PIN.
type KEKDefaults struct {
	Kind    string       // passphrase, keyfile or pkcs11; "" to decide from the environment
	PKCS11  PKCS11Config // module, token and key; its PIN is ignored
	PINFile string
}

var kekDefaults struct {
	sync.Mutex
	d KEKDefaults
}

// UseKEKDefaults sets the defaults ProviderFromEnv and PKCS11ConfigFromEnv
// use where the environment says nothing.
func UseKEKDefaults(d KEKDefaults) {
	kekDefaults.Lock()
	defer kekDefaults.Unlock()
	d.PKCS11.PIN = ""
	kekDefaults.d = d
}

func currentKEKDefaults() KEKDefaults {
	kekDefaults.Lock()
	defer kekDefaults.Unlock()
	return kekDefaults.d
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// PKCS11ConfigFromEnv reads a PKCS11Config from the PGPHI_PKCS11_*
// variables, and the PIN captured by CaptureSecrets; where a variable is not
// set, from the defaults of UseKEKDefaults (the config file), whose PIN file
// is read when no PIN was captured.
func PKCS11ConfigFromEnv() (PKCS11Config, error) {
	def := currentKEKDefaults()
	cfg := PKCS11Config{
		Module:      envOr(EnvPKCS11Module, def.PKCS11.Module),
		TokenLabel:  envOr(EnvPKCS11Token, def.PKCS11.TokenLabel),
		TokenSerial: envOr(EnvPKCS11Serial, def.PKCS11.TokenSerial),
		Slot:        -1,
		KeyLabel:    envOr(EnvPKCS11KeyLabel, def.PKCS11.KeyLabel),
		KeyID:       def.PKCS11.KeyID,
		Mechanism:   envOr(EnvPKCS11Mechanism, def.PKCS11.Mechanism),
	}
	if def.Kind == KindPKCS11 && os.Getenv(EnvPKCS11Slot) == "" {
		cfg.Slot = def.PKCS11.Slot
	}
	if s := os.Getenv(EnvPKCS11Slot); s != "" {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return PKCS11Config{}, fmt.Errorf("keys: %s must be a slot number, got `%s`", EnvPKCS11Slot, s)
		}
		cfg.Slot = int(n)
	}
	if s := os.Getenv(EnvPKCS11KeyID); s != "" {
		id, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
		if err != nil {
			return PKCS11Config{}, fmt.Errorf("keys: %s must be hexadecimal, got `%s`", EnvPKCS11KeyID, s)
		}
		cfg.KeyID = id
	}
	pin, err := capturedPIN()
	if err != nil {
		return PKCS11Config{}, err
	}
	if pin == "" && def.PINFile != "" {
		if pin, err = readPINFile(def.PINFile); err != nil {
			return PKCS11Config{}, err
		}
	}
	cfg.PIN = pin
	return cfg, cfg.validate()
}

func (c PKCS11Config) validate() error {
	var missing []string
	if c.Module == "" {
		missing = append(missing, EnvPKCS11Module+" (the module, e.g. /usr/lib/softhsm/libsofthsm2.so)")
	}
	if c.TokenLabel == "" && c.TokenSerial == "" && c.Slot < 0 {
		missing = append(missing, EnvPKCS11Token+" (or "+EnvPKCS11Serial+" or "+EnvPKCS11Slot+")")
	}
	if c.KeyLabel == "" && len(c.KeyID) == 0 {
		missing = append(missing, EnvPKCS11KeyLabel+" (or "+EnvPKCS11KeyID+")")
	}
	if c.PIN == "" {
		missing = append(missing, EnvPKCS11PINFile+" (or "+EnvPKCS11PIN+")")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: the pkcs11 KEK needs %s", ErrNoKEK, strings.Join(missing, ", "))
	}
	if _, err := canonicalMechanism(c.Mechanism); err != nil {
		return err
	}
	return nil
}

// canonicalMechanism maps a configured mechanism to its recorded name, or ""
// for auto.
func canonicalMechanism(m string) (string, error) {
	switch strings.ToLower(m) {
	case "", "auto":
		return "", nil
	case "kwp", strings.ToLower(MechKWP):
		return MechKWP, nil
	case "pad", strings.ToLower(MechKeyWrapPad):
		return MechKeyWrapPad, nil
	case "gcm", strings.ToLower(MechGCM):
		return MechGCM, nil
	}
	return "", fmt.Errorf("keys: unknown PKCS#11 mechanism `%s` (want auto, kwp, pad or gcm)", m)
}

// errWrongPIN is returned when the token refuses the PIN. It is an
// ErrWrongKEK: the operator gave the wrong secret.
type errWrongPIN struct{ msg string }

func (e *errWrongPIN) Error() string        { return e.msg }
func (e *errWrongPIN) Is(target error) bool { return target == ErrWrongKEK }

// ErrPKCS11Unavailable is returned by NewPKCS11Provider in a binary built
// without cgo.
var ErrPKCS11Unavailable = errors.New("keys: this pgphi was built without cgo and cannot load a PKCS#11 module: build it with CGO_ENABLED=1")
