package keys

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fastPassphrase returns a passphrase provider that accepts low iteration
// counts, to keep unit tests fast. The public constructor enforces
// MinPBKDF2Iterations.
func fastPassphrase(p string) KEKProvider {
	return passphraseProvider{passphrase: p, minIterations: 1}
}

var salt16 = []byte("0123456789abcdef")

func TestPassphraseKEK(t *testing.T) {
	params := KEKParams{Kind: KindPassphrase, Salt: salt16, Iterations: 1000}
	p := fastPassphrase("correct horse")
	if p.Name() != KindPassphrase {
		t.Fatalf("Name = %q", p.Name())
	}
	k, err := p.KEK(params)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := pbkdf2.Key(sha256.New, "correct horse", salt16, 1000, 32)
	if !bytes.Equal(k, want) {
		t.Fatal("KEK != PBKDF2-SHA256(passphrase, salt, iterations, 32)")
	}
	k2, _ := p.KEK(KEKParams{Kind: KindPassphrase, Salt: []byte("0123456789abcdeF"), Iterations: 1000})
	k3, _ := fastPassphrase("correct horsE").KEK(params)
	k4, _ := p.KEK(KEKParams{Kind: KindPassphrase, Salt: salt16, Iterations: 1001})
	if bytes.Equal(k, k2) || bytes.Equal(k, k3) || bytes.Equal(k, k4) {
		t.Fatal("KEK ignores salt, passphrase or iterations")
	}
}

func TestPassphraseRealIterations(t *testing.T) {
	if testing.Short() {
		t.Skip("600000 PBKDF2 iterations")
	}
	params, err := NewKEKParams(KindPassphrase)
	if err != nil {
		t.Fatal(err)
	}
	k, err := PassphraseProvider("correct horse battery staple").KEK(params)
	if err != nil {
		t.Fatal(err)
	}
	if len(k) != KeySize {
		t.Fatalf("len = %d", len(k))
	}
}

func TestPassphraseParamsEnforced(t *testing.T) {
	p := PassphraseProvider("pass")
	for name, params := range map[string]KEKParams{
		"few iterations":  {Kind: KindPassphrase, Salt: salt16, Iterations: MinPBKDF2Iterations - 1},
		"zero iterations": {Kind: KindPassphrase, Salt: salt16},
		"many iterations": {Kind: KindPassphrase, Salt: salt16, Iterations: maxPBKDF2Iterations + 1},
		"short salt":      {Kind: KindPassphrase, Salt: salt16[:15], Iterations: MinPBKDF2Iterations},
		"no salt":         {Kind: KindPassphrase, Iterations: MinPBKDF2Iterations},
		"keyfile kind":    {Kind: KindKeyFile},
		"empty kind":      {Salt: salt16, Iterations: MinPBKDF2Iterations},
	} {
		if k, err := p.KEK(params); err == nil || k != nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := PassphraseProvider("").KEK(KEKParams{Kind: KindPassphrase, Salt: salt16, Iterations: MinPBKDF2Iterations}); err == nil {
		t.Error("empty passphrase accepted")
	}
}

func TestNewKEKParams(t *testing.T) {
	a, err := NewKEKParams(KindPassphrase)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewKEKParams(KindPassphrase)
	if a.Kind != KindPassphrase || len(a.Salt) != 16 || a.Iterations != 600000 {
		t.Fatalf("params = %+v", a)
	}
	if bytes.Equal(a.Salt, b.Salt) {
		t.Fatal("salt is not random")
	}
	kf, err := NewKEKParams(KindKeyFile)
	if err != nil || kf.Kind != KindKeyFile || kf.Salt != nil || kf.Iterations != 0 {
		t.Fatalf("keyfile params = %+v, %v", kf, err)
	}
	if _, err := NewKEKParams("kms"); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

func writeKeyFile(t *testing.T, data []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pgphi.key")
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask-independent
		t.Fatal(err)
	}
	return path
}

func TestKeyFile(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(0xa0 + i)
	}
	hexKey := hex.EncodeToString(key)
	b64 := base64.StdEncoding.EncodeToString(key)
	textual := []byte("abcdefghijklmnopqrstuvwxyz012345") // 32 bytes: raw
	for name, tc := range map[string]struct {
		data []byte
		want []byte
	}{
		"raw":             {key, key},
		"raw textual":     {textual, textual},
		"hex":             {[]byte(hexKey), key},
		"hex newline":     {[]byte(hexKey + "\n"), key},
		"hex CRLF":        {[]byte(hexKey + "\r\n"), key},
		"hex upper":       {[]byte(strings.ToUpper(hexKey) + "\n"), key},
		"hex spaces":      {[]byte("  " + hexKey + " \n"), key},
		"base64":          {[]byte(b64), key},
		"base64 newline":  {[]byte(b64 + "\n"), key},
		"base64 unpadded": {[]byte(strings.TrimRight(b64, "=") + "\n"), key},
	} {
		t.Run(name, func(t *testing.T) {
			p := KeyFileProvider(writeKeyFile(t, tc.data, 0o600))
			if p.Name() != KindKeyFile {
				t.Fatalf("Name = %q", p.Name())
			}
			got, err := p.KEK(KEKParams{Kind: KindKeyFile})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatal("wrong key")
			}
		})
	}
}

func TestKeyFileInvalid(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	const secret = "s3cr3tcontent"
	for name, data := range map[string][]byte{
		"empty":           {},
		"raw 31":          key[:31],
		"raw 33":          append(bytes.Clone(key), 1),
		"hex 62":          []byte(hex.EncodeToString(key[:31]) + "\n"),
		"hex 66":          []byte(hex.EncodeToString(append(bytes.Clone(key), 1)) + "\n"),
		"bad hex":         []byte(strings.Repeat("g", 64) + "\n"),
		"base64 of 31":    []byte(base64.StdEncoding.EncodeToString(key[:31]) + "\n"),
		"base64 of 33":    []byte(base64.StdEncoding.EncodeToString(append(bytes.Clone(key), 1)) + "\n"),
		"urlsafe base64":  []byte(base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)) + "\n"),
		"passphrase text": []byte(secret + " is my passphrase\n"),
		"too large":       bytes.Repeat([]byte("a"), 5000),
		"split base64":    []byte(base64.StdEncoding.EncodeToString(key)[:20] + "\n" + base64.StdEncoding.EncodeToString(key)[20:] + "\n"),
		"split hex":       []byte(hex.EncodeToString(key)[:32] + " " + hex.EncodeToString(key)[32:]),
		"NBSP around hex": []byte("\u00a0" + hex.EncodeToString(key) + "\u00a0"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := KeyFileProvider(writeKeyFile(t, data, 0o600)).KEK(KEKParams{Kind: KindKeyFile})
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if strings.Contains(msg, secret) || strings.Contains(msg, "ZZZZ") || strings.Contains(msg, "5a5a") ||
				strings.Contains(msg, "gggg") || strings.Contains(msg, "aaaa") {
				t.Fatalf("error echoes file contents: %q", msg)
			}
		})
	}
}

func TestKeyFilePermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	key := []byte(strings.Repeat("ab", 32) + "\n")
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o601, 0o666} {
		path := writeKeyFile(t, key, mode)
		_, err := KeyFileProvider(path).KEK(KEKParams{Kind: KindKeyFile})
		if err == nil {
			t.Fatalf("mode %o accepted", mode)
		}
		if !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %o: error %q does not tell to chmod 600", mode, err)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		if _, err := KeyFileProvider(writeKeyFile(t, key, mode)).KEK(KEKParams{Kind: KindKeyFile}); err != nil {
			t.Errorf("mode %o: %v", mode, err)
		}
	}
}

func TestKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := KeyFileProvider(filepath.Join(dir, "missing")).KEK(KEKParams{Kind: KindKeyFile}); err == nil {
		t.Error("missing file accepted")
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := KeyFileProvider(dir).KEK(KEKParams{Kind: KindKeyFile}); err == nil {
		t.Error("directory accepted")
	}
	path := writeKeyFile(t, bytes.Repeat([]byte{1}, 32), 0o600)
	if _, err := KeyFileProvider(path).KEK(KEKParams{Kind: KindPassphrase, Salt: salt16, Iterations: MinPBKDF2Iterations}); err == nil {
		t.Error("passphrase params accepted by key file provider")
	}
}

func TestProviderFromEnv(t *testing.T) {
	t.Setenv(EnvKeyFile, "")
	t.Setenv(EnvPassphrase, "")
	_, err := ProviderFromEnv()
	if err == nil || !strings.Contains(err.Error(), EnvKeyFile) || !strings.Contains(err.Error(), EnvPassphrase) {
		t.Fatalf("neither set: err = %v", err)
	}

	t.Setenv(EnvPassphrase, "hunter2")
	p, err := ProviderFromEnv()
	if err != nil || p.Name() != KindPassphrase {
		t.Fatalf("passphrase: %v, %v", p, err)
	}

	path := writeKeyFile(t, bytes.Repeat([]byte{7}, 32), 0o600)
	t.Setenv(EnvKeyFile, path)
	p, err = ProviderFromEnv()
	if err != nil || p.Name() != KindKeyFile {
		t.Fatalf("key file: %v, %v", p, err)
	}
	k, err := p.KEK(KEKParams{Kind: KindKeyFile})
	if err != nil || !bytes.Equal(k, bytes.Repeat([]byte{7}, 32)) {
		t.Fatalf("key file KEK: %v", err)
	}

	t.Setenv(EnvPassphrase, "")
	if p, err := ProviderFromEnv(); err != nil || p.Name() != KindKeyFile {
		t.Fatalf("key file only: %v, %v", p, err)
	}
}
