//go:build unix

package keys

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

const canary = "Canary-pass-3c1d with spaces"

// clearSources empties every passphrase source for the test.
func clearSources(t *testing.T) {
	t.Helper()
	for _, k := range []string{EnvKeyFile, EnvPassphrase, EnvPassphraseFile, EnvPassphraseFD} {
		t.Setenv(k, "")
	}
	ForgetPassphrase()
	t.Cleanup(ForgetPassphrase)
}

func passphraseOf(t *testing.T) (string, error) {
	t.Helper()
	p, err := ProviderFromEnv()
	if err != nil {
		return "", err
	}
	pp, ok := p.(passphraseProvider)
	if !ok {
		t.Fatalf("provider %s, want passphrase", p.Name())
	}
	return pp.passphrase, nil
}

func TestPassphraseFromEnvIsRemoved(t *testing.T) {
	clearSources(t)
	t.Setenv(EnvPassphrase, canary)
	if got, err := passphraseOf(t); err != nil || got != canary {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, ok := os.LookupEnv(EnvPassphrase); ok {
		t.Fatal("PGPHI_PASSPHRASE is still in the environment")
	}
	// A child started afterwards, with the whole environment, does not get it.
	out, err := exec.Command("/usr/bin/env").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), canary) || strings.Contains(string(out), EnvPassphrase) {
		t.Fatal("a child inherited the passphrase")
	}
	// Read once: still available later.
	if got, err := passphraseOf(t); err != nil || got != canary {
		t.Fatalf("second read: %q, %v", got, err)
	}
}

func TestPassphraseFile(t *testing.T) {
	clearSources(t)
	path := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(path, []byte(canary+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvPassphraseFile, path)
	if got, err := passphraseOf(t); err != nil || got != canary {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, ok := os.LookupEnv(EnvPassphraseFile); ok {
		t.Error("PGPHI_PASSPHRASE_FILE is still in the environment")
	}

	// Attack: a passphrase file another user may read, or that another
	// user owns (and so could have written), is refused; the error never
	// holds the passphrase.
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		clearSources(t)
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		t.Setenv(EnvPassphraseFile, path)
		_, err := passphraseOf(t)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), canary) {
			t.Errorf("mode %o: %v", mode, err)
		}
	}
	if os.Geteuid() == 0 {
		clearSources(t)
		if err := os.Chmod(path, 0o400); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		t.Setenv(EnvPassphraseFile, path)
		if _, err := passphraseOf(t); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Errorf("a file owned by another user: %v", err)
		}
		// The key file obeys the same rule.
		kf := writeKeyFile(t, []byte(strings.Repeat("ab", 32)), 0o600)
		if err := os.Chown(kf, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := KeyFileProvider(kf).KEK(KEKParams{Kind: KindKeyFile}); err == nil || !strings.Contains(err.Error(), "owned by uid") {
			t.Errorf("a key file owned by another user: %v", err)
		}
	}
	clearSources(t)
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvPassphraseFile, empty)
	if _, err := passphraseOf(t); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty passphrase file: %v", err)
	}
}

func TestPassphraseFD(t *testing.T) {
	clearSources(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString(canary + "\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// pgphi closes the descriptor it reads: hand it a duplicate of its own,
	// so that r's finalizer cannot close the number again once another
	// test has reused it.
	fd, err := syscall.Dup(int(r.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	t.Setenv(EnvPassphraseFD, strconv.Itoa(fd))
	if got, err := passphraseOf(t); err != nil || got != canary {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, bad := range []string{"0", "2", "x", "-1", "987654"} {
		clearSources(t)
		t.Setenv(EnvPassphraseFD, bad)
		if _, err := passphraseOf(t); err == nil {
			t.Errorf("PGPHI_PASSPHRASE_FD=%s accepted", bad)
		}
	}
}

func TestPassphraseSourcesExclusive(t *testing.T) {
	clearSources(t)
	path := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(path, []byte("other"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvPassphrase, canary)
	t.Setenv(EnvPassphraseFile, path)
	_, err := passphraseOf(t)
	if err == nil || !strings.Contains(err.Error(), "only one") || strings.Contains(err.Error(), canary) {
		t.Fatalf("two sources: %v", err)
	}
	for _, k := range []string{EnvPassphrase, EnvPassphraseFile} {
		if _, ok := os.LookupEnv(k); ok {
			t.Errorf("%s left in the environment after a refusal", k)
		}
	}
}
