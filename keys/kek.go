package keys

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// KEK kinds, as recorded in KEKParams.Kind and returned by the Name method of
// the built-in providers.
const (
	KindPassphrase = "passphrase"
	KindKeyFile    = "keyfile"
	KindPKCS11     = "pkcs11"
)

// MinPBKDF2Iterations is the minimum PBKDF2-SHA256 iteration count accepted
// for passphrase KEKs (OWASP 2023 recommendation).
const MinPBKDF2Iterations = 600_000

// maxPBKDF2Iterations bounds the work a tampered KEKParams can request.
const maxPBKDF2Iterations = 100_000_000

// SaltSize is the length of the random salt NewKEKParams generates, and the
// minimum salt length accepted for passphrase KEKs (NIST SP 800-132).
const SaltSize = 16

// maxKeyFileSize bounds how much of a key file is read.
const maxKeyFileSize = 4096

// A KEKProvider produces the key-encryption key that wraps data keys. The
// built-in providers are PassphraseProvider and KeyFileProvider, which derive
// or read the KEK, and PKCS11Provider, whose KEK never leaves its token and
// which therefore also implements KeyWrapper; a KMS-backed provider can
// implement the same interfaces.
type KEKProvider interface {
	// Name returns the provider kind, which is also the KEKParams.Kind it
	// accepts ("passphrase", "keyfile", ...). It never includes secrets.
	Name() string
	// KEK returns the 32-byte KEK for params, or an error if params are
	// not for this provider or the KEK cannot be obtained.
	KEK(params KEKParams) ([]byte, error)
}

// A KeyWrapper is a KEKProvider whose KEK cannot be handed out (an HSM key):
// it wraps and unwraps data keys itself. Init, Load and Rotate use these
// methods instead of KEK when a provider implements them; KEK then returns
// an error.
type KeyWrapper interface {
	KEKProvider
	// NewParams describes the KEK a new key store is initialized with: the
	// kind, the mechanism and the identifiers of the key (never a secret).
	NewParams() (KEKParams, error)
	// WrapKey wraps the 32-byte data key with key id id under the KEK
	// described by params.
	WrapKey(params KEKParams, id uint32, dataKey []byte) ([]byte, error)
	// UnwrapKey reverses WrapKey. A wrapped key that does not authenticate
	// under the KEK gives an error that Is ErrWrongKEK.
	UnwrapKey(params KEKParams, id uint32, wrapped []byte) ([]byte, error)
}

// KEKParams are the non-secret parameters stored next to wrapped data keys
// that are needed to recompute the KEK, or to find it in a token.
type KEKParams struct {
	// Kind is "passphrase", "keyfile" or "pkcs11".
	Kind string
	// Salt is the PBKDF2 salt (passphrase only, at least 16 bytes).
	Salt []byte
	// Iterations is the PBKDF2 iteration count (passphrase only).
	Iterations int
	// Mechanism is the PKCS#11 mechanism that wraps data keys
	// (pkcs11 only): "CKM_AES_KEY_WRAP_KWP", "CKM_AES_KEY_WRAP_PAD" or
	// "CKM_AES_GCM".
	Mechanism string
	// TokenLabel and TokenSerial identify the token holding the KEK, and
	// KeyLabel and KeyID the KEK in it (pkcs11 only; KeyLabel or KeyID may
	// be empty, not both). They are recorded for the operator and checked
	// against the configured token and key; no PIN is ever recorded.
	TokenLabel  string
	TokenSerial string
	KeyLabel    string
	KeyID       []byte
}

// NewKEKParams returns fresh parameters for a new KEK of the given kind: for
// "passphrase", a random 16-byte salt and MinPBKDF2Iterations iterations;
// for "keyfile", no salt and zero iterations.
func NewKEKParams(kind string) (KEKParams, error) {
	switch kind {
	case KindPassphrase:
		salt := make([]byte, SaltSize)
		if _, err := rand.Read(salt); err != nil {
			return KEKParams{}, err
		}
		return KEKParams{Kind: KindPassphrase, Salt: salt, Iterations: MinPBKDF2Iterations}, nil
	case KindKeyFile:
		return KEKParams{Kind: KindKeyFile}, nil
	case KindPKCS11:
		return KEKParams{}, fmt.Errorf("keys: the parameters of a `%s` KEK come from its token: use the provider's NewParams", KindPKCS11)
	}
	return KEKParams{}, fmt.Errorf("keys: unknown KEK kind `%s` (want `%s`, `%s` or `%s`)", kind, KindPassphrase, KindKeyFile, KindPKCS11)
}

type passphraseProvider struct {
	passphrase    string
	minIterations int
}

// PassphraseProvider returns a KEKProvider that derives the KEK as
// PBKDF2-HMAC-SHA256(passphrase, params.Salt, params.Iterations, 32). The
// passphrase is used as the exact bytes given, without normalization. KEK
// rejects params whose Kind is not "passphrase", whose salt is shorter than
// 16 bytes, or whose iteration count is below MinPBKDF2Iterations (or
// absurdly high), and an empty passphrase.
func PassphraseProvider(passphrase string) KEKProvider {
	return passphraseProvider{passphrase: passphrase, minIterations: MinPBKDF2Iterations}
}

func (p passphraseProvider) Name() string { return KindPassphrase }

func (p passphraseProvider) KEK(params KEKParams) ([]byte, error) {
	if params.Kind != KindPassphrase {
		return nil, fmt.Errorf("keys: data keys are wrapped with a `%s` KEK, but a passphrase was provided", params.Kind)
	}
	if p.passphrase == "" {
		return nil, errors.New("keys: empty passphrase")
	}
	if len(params.Salt) < SaltSize {
		return nil, fmt.Errorf("keys: PBKDF2 salt must be at least %d bytes, got %d", SaltSize, len(params.Salt))
	}
	if params.Iterations < p.minIterations {
		return nil, fmt.Errorf("keys: PBKDF2 iteration count %d is below the minimum %d", params.Iterations, p.minIterations)
	}
	if params.Iterations > maxPBKDF2Iterations {
		return nil, fmt.Errorf("keys: PBKDF2 iteration count %d is above the maximum %d", params.Iterations, maxPBKDF2Iterations)
	}
	return pbkdf2.Key(sha256.New, p.passphrase, params.Salt, params.Iterations, KeySize)
}

type keyFileProvider struct {
	path string
}

// KeyFileProvider returns a KEKProvider that reads the KEK from the file at
// path on every call to KEK. The file must hold exactly 32 raw bytes, or 64
// hexadecimal characters, or the standard base64 encoding (padded or not) of
// 32 bytes; the text forms may be surrounded by ASCII white space such as a
// trailing newline, but contain none. A file of exactly 32 bytes is always read as raw.
//
// On Unix systems KEK refuses a file whose permissions allow any access by
// group or others (mode & 0o077 != 0) or that another user owns. Errors name the path and the file
// length but never the contents. KEK rejects params whose Kind is not
// "keyfile".
func KeyFileProvider(path string) KEKProvider {
	return keyFileProvider{path: path}
}

func (p keyFileProvider) Name() string { return KindKeyFile }

func (p keyFileProvider) KEK(params KEKParams) ([]byte, error) {
	if params.Kind != KindKeyFile {
		return nil, fmt.Errorf("keys: data keys are wrapped with a `%s` KEK, but a key file was provided", params.Kind)
	}
	return readKeyFile(p.path)
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keys: cannot open key file: %w", err)
	}
	defer f.Close()
	if err := checkSecretFile(f, path, "key file"); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("keys: cannot read key file: %w", err)
	}
	defer clear(data)
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("keys: key file %s is too large to be a key", path)
	}
	key, err := parseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("keys: key file %s: %w", path, err)
	}
	return key, nil
}

// asciiSpace is the white space allowed around a textual key.
const asciiSpace = " \t\r\n\v\f"

// parseKeyFile decodes the contents of a key file. Its errors never include
// the contents.
func parseKeyFile(data []byte) ([]byte, error) {
	if len(data) == KeySize {
		return bytes.Clone(data), nil
	}
	text := bytes.Trim(data, asciiSpace)
	if bytes.ContainsAny(text, asciiSpace) {
		return nil, fmt.Errorf("want 32 raw bytes, 64 hex characters or base64 of 32 bytes, got %d bytes with inner white space", len(data))
	}
	if len(text) == 2*KeySize {
		key := make([]byte, KeySize)
		if _, err := hex.Decode(key, text); err == nil {
			return key, nil
		}
		clear(key)
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding} {
		if enc.DecodedLen(len(text)) < KeySize || enc.DecodedLen(len(text)) > KeySize+2 {
			continue
		}
		key := make([]byte, enc.DecodedLen(len(text)))
		n, err := enc.Decode(key, text)
		if err == nil && n == KeySize {
			return key[:KeySize], nil
		}
		clear(key)
	}
	return nil, fmt.Errorf("want 32 raw bytes, 64 hex characters or base64 of 32 bytes, got %d bytes that are none of these", len(data))
}

// Environment variables read by ProviderFromEnv.
const (
	EnvKeyFile    = "PGPHI_KEY_FILE"
	EnvPassphrase = "PGPHI_PASSPHRASE"
	// EnvKEK chooses the provider kind explicitly: passphrase, keyfile or
	// pkcs11 (`pgphi keys init --kek KIND` sets it).
	EnvKEK = "PGPHI_KEK"
)

// ProviderFromEnv returns the KEKProvider configured in the environment: the
// kind named by PGPHI_KEK if set, or by the config file (UseKEKDefaults)
// (ProviderOfKind), else a PKCS#11 provider if
// PGPHI_PKCS11_MODULE is set (PKCS11ConfigFromEnv), else a KeyFileProvider
// for the path in PGPHI_KEY_FILE if it is set and non-empty, otherwise a
// PassphraseProvider for the passphrase of PGPHI_PASSPHRASE,
// PGPHI_PASSPHRASE_FILE or PGPHI_PASSPHRASE_FD (read once by CaptureSecrets,
// which it calls, and removed from the environment), otherwise an error that
// explains the options.
func ProviderFromEnv() (KEKProvider, error) {
	if kind := envOr(EnvKEK, currentKEKDefaults().Kind); kind != "" {
		return ProviderOfKind(kind)
	}
	if os.Getenv(EnvPKCS11Module) != "" {
		return ProviderOfKind(KindPKCS11)
	}
	return providerFromEnv()
}

// ProviderOfKind returns the provider of the given kind configured in the
// environment: for "pkcs11", NewPKCS11Provider(PKCS11ConfigFromEnv()); for
// "keyfile", PGPHI_KEY_FILE; for "passphrase", the captured passphrase.
func ProviderOfKind(kind string) (KEKProvider, error) {
	switch kind {
	case KindPKCS11:
		cfg, err := PKCS11ConfigFromEnv()
		if err != nil {
			return nil, err
		}
		return NewPKCS11Provider(cfg)
	case KindKeyFile:
		path := os.Getenv(EnvKeyFile)
		if path == "" {
			return nil, fmt.Errorf("%w: the `%s` KEK needs %s (the path of a key file)", ErrNoKEK, KindKeyFile, EnvKeyFile)
		}
		return KeyFileProvider(path), nil
	case KindPassphrase:
		pass, err := capturedPassphrase()
		if err != nil {
			return nil, err
		}
		if pass == "" {
			return nil, fmt.Errorf("%w: the `%s` KEK needs %s, %s or %s", ErrNoKEK, KindPassphrase, EnvPassphraseFile, EnvPassphraseFD, EnvPassphrase)
		}
		return PassphraseProvider(pass), nil
	}
	return nil, fmt.Errorf("keys: unknown KEK kind `%s` (want `%s`, `%s` or `%s`)", kind, KindPassphrase, KindKeyFile, KindPKCS11)
}

func providerFromEnv() (KEKProvider, error) {
	pass, err := capturedPassphrase()
	if path := os.Getenv(EnvKeyFile); path != "" {
		return KeyFileProvider(path), nil
	}
	if err != nil {
		return nil, err
	}
	if pass != "" {
		return PassphraseProvider(pass), nil
	}
	return nil, fmt.Errorf("%w: set "+EnvKeyFile+
		" to the path of a key file (32 random bytes, raw, hex or base64, mode 0600; e.g. `(umask 077; openssl rand -hex 32 > pgphi.key)`),"+
		" or give a passphrase in "+EnvPassphraseFile+" (a file of mode 0600), "+EnvPassphraseFD+" (an open file descriptor) or "+EnvPassphrase+
		" ("+EnvKeyFile+" wins if both are set), or an HSM key with "+EnvPKCS11Module+", "+EnvPKCS11Token+", "+EnvPKCS11KeyLabel+" and "+EnvPKCS11PIN+"[_FILE]", ErrNoKEK)
}
