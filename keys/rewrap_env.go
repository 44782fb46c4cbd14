package keys

import (
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Environment variables naming the new KEK of `pgphi keys rewrap`, beside
// the current one's. Like the current passphrase and PIN, the new ones come
// from a variable, a file (mode 0600 or 0400) or a descriptor, are read once
// by CaptureSecrets and removed from the environment; never from arguments.
const (
	EnvNewKEK            = "PGPHI_NEW_KEK" // passphrase, keyfile or pkcs11
	EnvNewPassphrase     = "PGPHI_NEW_PASSPHRASE"
	EnvNewPassphraseFile = "PGPHI_NEW_PASSPHRASE_FILE"
	EnvNewPassphraseFD   = "PGPHI_NEW_PASSPHRASE_FD"
	EnvNewKeyFile        = "PGPHI_NEW_KEY_FILE"
	// EnvNewPKCS11Prefix starts the new token's variables:
	// PGPHI_NEW_PKCS11_MODULE, _TOKEN, _SERIAL, _SLOT, _KEY_LABEL, _KEY_ID,
	// _MECHANISM, _PIN and _PIN_FILE, as PGPHI_PKCS11_* for the current one.
	EnvNewPKCS11Prefix = "PGPHI_NEW_PKCS11_"
)

// newSecrets are the new KEK's passphrase and PIN, captured with the others.
var newSecrets struct {
	pass, pin       string
	passErr, pinErr error
}

// captureNewLocked reads the new passphrase and the new PIN once, from
// whichever source is set, and removes every source from the environment.
// Called by CaptureSecrets with captured locked.
func captureNewLocked() {
	take := func(names ...string) (string, string, error) {
		var set []string
		values := map[string]string{}
		for _, k := range names {
			if v, ok := os.LookupEnv(k); ok {
				os.Unsetenv(k)
				if v != "" {
					values[k] = v
					set = append(set, k)
				}
			}
		}
		switch len(set) {
		case 0:
			return "", "", nil
		case 1:
			return set[0], values[set[0]], nil
		}
		return "", "", fmt.Errorf("keys: %s are all set: set only one source", strings.Join(set, " and "))
	}
	if name, v, err := take(EnvNewPassphrase, EnvNewPassphraseFile, EnvNewPassphraseFD); err != nil || name != "" {
		newSecrets.pass, newSecrets.passErr = "", err
		if err == nil {
			newSecrets.pass, newSecrets.passErr = readNamedSecret(name, v, EnvNewPassphraseFile, EnvNewPassphraseFD)
		}
	}
	pinVar, pinFileVar := EnvNewPKCS11Prefix+"PIN", EnvNewPKCS11Prefix+"PIN_FILE"
	if name, v, err := take(pinVar, pinFileVar); err != nil || name != "" {
		newSecrets.pin, newSecrets.pinErr = "", err
		if err == nil {
			newSecrets.pin, newSecrets.pinErr = readNamedSecret(name, v, pinFileVar, "")
		}
	}
}

// readNamedSecret returns the secret given by variable name: its value, or
// what the file or descriptor it names holds.
func readNamedSecret(name, v, fileVar, fdVar string) (string, error) {
	var s string
	var err error
	switch name {
	case fileVar:
		s, err = readPassphraseFile(v)
	case fdVar:
		s, err = readPassphraseFD(v)
	default:
		s = v
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if s == "" {
		return "", fmt.Errorf("keys: %s gives an empty secret", name)
	}
	return s, nil
}

// NewProviderFromEnv returns the provider of the new KEK that `keys rewrap`
// moves the data keys to, of the kind named by PGPHI_NEW_KEK: a passphrase
// (PGPHI_NEW_PASSPHRASE[_FILE|_FD]), a key file (PGPHI_NEW_KEY_FILE) or a
// PKCS#11 token (PGPHI_NEW_PKCS11_*).
func NewProviderFromEnv() (KEKProvider, error) {
	_ = CaptureSecrets()
	captured.Lock()
	pass, passErr, pin, pinErr := newSecrets.pass, newSecrets.passErr, newSecrets.pin, newSecrets.pinErr
	captured.Unlock()
	switch kind := os.Getenv(EnvNewKEK); kind {
	case KindPassphrase:
		if passErr != nil {
			return nil, passErr
		}
		if pass == "" {
			return nil, fmt.Errorf("%w: the new passphrase KEK needs %s, %s or %s", ErrNoKEK, EnvNewPassphraseFile, EnvNewPassphraseFD, EnvNewPassphrase)
		}
		return PassphraseProvider(pass), nil
	case KindKeyFile:
		path := os.Getenv(EnvNewKeyFile)
		if path == "" {
			return nil, fmt.Errorf("%w: the new keyfile KEK needs %s", ErrNoKEK, EnvNewKeyFile)
		}
		return KeyFileProvider(path), nil
	case KindPKCS11:
		if pinErr != nil {
			return nil, pinErr
		}
		get := func(s string) string { return os.Getenv(EnvNewPKCS11Prefix + s) }
		cfg := PKCS11Config{Module: get("MODULE"), TokenLabel: get("TOKEN"), TokenSerial: get("SERIAL"), Slot: -1,
			KeyLabel: get("KEY_LABEL"), Mechanism: get("MECHANISM"), PIN: pin}
		if s := get("SLOT"); s != "" {
			n, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("keys: %sSLOT must be a slot number, got `%s`", EnvNewPKCS11Prefix, s)
			}
			cfg.Slot = int(n)
		}
		if s := get("KEY_ID"); s != "" {
			id, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
			if err != nil {
				return nil, fmt.Errorf("keys: %sKEY_ID must be hexadecimal, got `%s`", EnvNewPKCS11Prefix, s)
			}
			cfg.KeyID = id
		}
		if err := cfg.validate(); err != nil {
			return nil, fmt.Errorf("%w (for the new KEK, the same variables with the prefix %s)", err, EnvNewPKCS11Prefix)
		}
		return NewPKCS11Provider(cfg)
	case "":
		return nil, fmt.Errorf("%w: set %s to the new KEK's kind (passphrase, keyfile or pkcs11) and give it as for the current one, with the prefix PGPHI_NEW_", ErrNoKEK, EnvNewKEK)
	default:
		return nil, fmt.Errorf("keys: %s: unknown KEK kind `%s` (want `%s`, `%s` or `%s`)", EnvNewKEK, kind, KindPassphrase, KindKeyFile, KindPKCS11)
	}
}
