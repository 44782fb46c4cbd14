package keys

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Environment variables that give the passphrase without putting the
// passphrase itself in the environment: a file (mode 0600 or 0400, owned by
// the user running pgphi) or an inherited file descriptor (e.g.
// `PGPHI_PASSPHRASE_FD=3 pgphi ... 3<file`, or a pipe from a secret
// manager). At most one of PGPHI_PASSPHRASE, PGPHI_PASSPHRASE_FILE and
// PGPHI_PASSPHRASE_FD may be set. One trailing newline is removed from what
// a file or descriptor holds.
const (
	EnvPassphraseFile = "PGPHI_PASSPHRASE_FILE"
	EnvPassphraseFD   = "PGPHI_PASSPHRASE_FD"
)

// maxPassphraseSize bounds what is read from a passphrase file or descriptor.
const maxPassphraseSize = 4096

// captured is the passphrase CaptureSecrets took out of the environment.
var captured struct {
	sync.Mutex
	pass string
	err  error // a passphrase source was set but could not be read

	pin    string // the PKCS#11 user PIN
	pinErr error  // a PIN source was set but could not be read
}

// CaptureSecrets reads the passphrase once from whichever of
// PGPHI_PASSPHRASE, PGPHI_PASSPHRASE_FILE or PGPHI_PASSPHRASE_FD is set,
// keeps it in memory for ProviderFromEnv, and removes all three variables
// from the process environment, so that no child process (hook, pg_repack)
// can inherit them. os.Unsetenv does not clear /proc/PID/environ, which
// keeps the environment the process started with: ProtectProcess, called
// first, makes that file unreadable to other processes.
//
// When none is set, an earlier capture stays. A source that cannot be read
// (two sources, a file with loose permissions or another owner, a bad
// descriptor, an empty passphrase) is remembered as an error that
// ProviderFromEnv returns, and returned. Errors name the variable and the
// path, never the passphrase.
func CaptureSecrets() error {
	captured.Lock()
	defer captured.Unlock()
	capturePINLocked()
	captureNewLocked()
	values := map[string]string{}
	var set []string
	for _, k := range []string{EnvPassphrase, EnvPassphraseFile, EnvPassphraseFD} {
		v, ok := os.LookupEnv(k)
		if !ok {
			continue
		}
		os.Unsetenv(k)
		if v != "" {
			values[k] = v
			set = append(set, k)
		}
	}
	if len(set) == 0 {
		return captured.err
	}
	captured.pass, captured.err = "", nil
	if len(set) > 1 {
		captured.err = fmt.Errorf("keys: %s are all set: set only one passphrase source", strings.Join(set, " and "))
		return captured.err
	}
	var pass string
	var err error
	switch set[0] {
	case EnvPassphrase:
		pass = values[EnvPassphrase]
	case EnvPassphraseFile:
		pass, err = readPassphraseFile(values[EnvPassphraseFile])
	case EnvPassphraseFD:
		pass, err = readPassphraseFD(values[EnvPassphraseFD])
	}
	if err == nil && pass == "" {
		err = fmt.Errorf("keys: %s gives an empty passphrase", set[0])
	}
	captured.pass, captured.err = pass, err
	return err
}

// capturePINLocked reads the PKCS#11 PIN once from PGPHI_PKCS11_PIN or
// PGPHI_PKCS11_PIN_FILE and removes both from the environment.
func capturePINLocked() {
	values := map[string]string{}
	var set []string
	for _, k := range []string{EnvPKCS11PIN, EnvPKCS11PINFile} {
		v, ok := os.LookupEnv(k)
		if !ok {
			continue
		}
		os.Unsetenv(k)
		if v != "" {
			values[k] = v
			set = append(set, k)
		}
	}
	if len(set) == 0 {
		return
	}
	captured.pin, captured.pinErr = "", nil
	if len(set) > 1 {
		captured.pinErr = fmt.Errorf("keys: %s are both set: set only one PIN source", strings.Join(set, " and "))
		return
	}
	pin := values[EnvPKCS11PIN]
	var err error
	if set[0] == EnvPKCS11PINFile {
		pin, err = readPINFile(values[EnvPKCS11PINFile])
	}
	if err == nil && pin == "" {
		err = fmt.Errorf("keys: %s gives an empty PIN", set[0])
	}
	captured.pin, captured.pinErr = pin, err
}

func readPINFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("keys: %s: cannot open the PIN file: %w", EnvPKCS11PINFile, err)
	}
	defer f.Close()
	if err := checkSecretFile(f, path, "PIN file"); err != nil {
		return "", err
	}
	return readPassphrase(f, EnvPKCS11PINFile+" "+path)
}

// capturedPIN captures the environment's secrets, if any, and returns the
// PKCS#11 PIN held.
func capturedPIN() (string, error) {
	_ = CaptureSecrets()
	captured.Lock()
	defer captured.Unlock()
	return captured.pin, captured.pinErr
}

// UsePassphrase sets the passphrase ProviderFromEnv uses, as if it had been
// captured from the environment (the demo's random passphrase).
func UsePassphrase(pass string) {
	captured.Lock()
	defer captured.Unlock()
	captured.pass, captured.err = pass, nil
}

// ForgetPassphrase drops a captured passphrase or PIN, or a capture error.
func ForgetPassphrase() {
	captured.Lock()
	defer captured.Unlock()
	captured.pass, captured.err = "", nil
	captured.pin, captured.pinErr = "", nil
	newSecrets.pass, newSecrets.passErr, newSecrets.pin, newSecrets.pinErr = "", nil, "", nil
}

// capturedPassphrase captures the environment's passphrase, if any, and
// returns what is held.
func capturedPassphrase() (string, error) {
	if err := CaptureSecrets(); err != nil {
		return "", err
	}
	captured.Lock()
	defer captured.Unlock()
	return captured.pass, captured.err
}

func readPassphraseFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("keys: %s: cannot open the passphrase file: %w", EnvPassphraseFile, err)
	}
	defer f.Close()
	if err := checkSecretFile(f, path, "passphrase file"); err != nil {
		return "", err
	}
	return readPassphrase(f, EnvPassphraseFile+" "+path)
}

func readPassphraseFD(s string) (string, error) {
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 0 {
		return "", fmt.Errorf("keys: %s must be a file descriptor number, got `%s`", EnvPassphraseFD, s)
	}
	if fd <= 2 {
		return "", fmt.Errorf("keys: %s=%d is a standard stream: give the passphrase on a descriptor of its own (3 or more)", EnvPassphraseFD, fd)
	}
	f := os.NewFile(uintptr(fd), "passphrase-fd")
	if f == nil {
		return "", fmt.Errorf("keys: %s=%d is not an open file descriptor", EnvPassphraseFD, fd)
	}
	defer f.Close() // read once: nobody else in this process reads it again
	if _, err := f.Stat(); err != nil {
		return "", fmt.Errorf("keys: %s=%d is not an open file descriptor: %w", EnvPassphraseFD, fd, err)
	}
	return readPassphrase(f, fmt.Sprintf("%s=%d", EnvPassphraseFD, fd))
}

// readPassphrase reads a whole passphrase and removes one trailing newline.
func readPassphrase(r io.Reader, what string) (string, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxPassphraseSize+1))
	defer clear(data)
	if err != nil {
		return "", fmt.Errorf("keys: reading %s: %w", what, err)
	}
	if len(data) > maxPassphraseSize {
		return "", fmt.Errorf("keys: %s is longer than %d bytes: not a passphrase", what, maxPassphraseSize)
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	if len(data) == 0 {
		return "", fmt.Errorf("keys: %s holds an empty passphrase", what)
	}
	return string(data), nil
}

// checkSecretFile refuses a secret file that is not a regular file, that
// group or others may access, or (on Unix) that another user owns.
func checkSecretFile(f *os.File, path, what string) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("keys: cannot stat %s %s: %w", what, path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("keys: %s %s is not a regular file", what, path)
	}
	if permsEnforced && fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("keys: %s %s is accessible by group or others (mode %04o); run: chmod 600 %s",
			what, path, fi.Mode().Perm(), path)
	}
	if uid, ok := fileOwner(fi); ok && uid != os.Geteuid() {
		return fmt.Errorf("keys: %s %s is owned by uid %d, not by the user running pgphi (uid %d)", what, path, uid, os.Geteuid())
	}
	return nil
}

// ErrNoKEK is wrapped by ProviderFromEnv's error when no KEK source is set.
var ErrNoKEK = errors.New("keys: no key-encryption key configured")
