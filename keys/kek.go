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
// built-in providers are PassphraseProvider and KeyFileProvider; a KMS-backed
// provider can implement the same interface.
type KEKProvider interface {
	// Name returns the provider kind, which is also the KEKParams.Kind it
	// accepts ("passphrase", "keyfile", ...). It never includes secrets.
	Name() string
	// KEK returns the 32-byte KEK for params, or an error if params are
	// not for this provider or the KEK cannot be obtained.
	KEK(params KEKParams) ([]byte, error)
}

// KEKParams are the non-secret parameters stored next to wrapped data keys
// that are needed to recompute the KEK.
type KEKParams struct {
	// Kind is "passphrase" or "keyfile".
	Kind string
	// Salt is the PBKDF2 salt (passphrase only, at least 16 bytes).
	Salt []byte
	// Iterations is the PBKDF2 iteration count (passphrase only).
	Iterations int
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
	}
	return KEKParams{}, fmt.Errorf("keys: unknown KEK kind `%s` (want `%s` or `%s`)", kind, KindPassphrase, KindKeyFile)
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
)

// ProviderFromEnv returns the KEKProvider configured in the environment: a
// KeyFileProvider for the path in PGPHI_KEY_FILE if it is set and non-empty,
// otherwise a PassphraseProvider for the passphrase of PGPHI_PASSPHRASE,
// PGPHI_PASSPHRASE_FILE or PGPHI_PASSPHRASE_FD (read once by CaptureSecrets,
// which it calls, and removed from the environment), otherwise an error that
// explains the options.
func ProviderFromEnv() (KEKProvider, error) {
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
		" ("+EnvKeyFile+" wins if both are set)", ErrNoKEK)
}
