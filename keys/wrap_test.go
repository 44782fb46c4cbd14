package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "regenerate ../testdata/vectors/keywrap_v1.json")

func TestWrapRoundTrip(t *testing.T) {
	kek, _ := GenerateDataKey()
	dk, err := GenerateDataKey()
	if err != nil {
		t.Fatal(err)
	}
	dk2, _ := GenerateDataKey()
	if len(dk) != KeySize || bytes.Equal(dk, dk2) {
		t.Fatal("GenerateDataKey")
	}
	w, err := Wrap(kek, 7, dk)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != WrappedKeySize || WrappedKeySize != 60 {
		t.Fatalf("len = %d", len(w))
	}
	if bytes.Contains(w, dk[:8]) {
		t.Fatal("wrapped key contains the data key")
	}
	w2, _ := Wrap(kek, 7, dk)
	if bytes.Equal(w, w2) {
		t.Fatal("nonce is not random")
	}
	got, err := Unwrap(kek, 7, w)
	if err != nil || !bytes.Equal(got, dk) {
		t.Fatalf("Unwrap: %v", err)
	}
}

func TestUnwrapFailures(t *testing.T) {
	kek, _ := GenerateDataKey()
	dk, _ := GenerateDataKey()
	w, _ := Wrap(kek, 7, dk)

	other, _ := GenerateDataKey()
	if _, err := Unwrap(other, 7, w); err != ErrWrongKEK {
		t.Fatalf("wrong KEK: err = %v", err)
	}
	if _, err := Unwrap(kek, 8, w); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("wrong key id: err = %v", err)
	}
	for i := range w {
		for bit := range 8 {
			bad := bytes.Clone(w)
			bad[i] ^= 1 << bit
			if _, err := Unwrap(kek, 7, bad); !errors.Is(err, ErrWrongKEK) {
				t.Fatalf("flip %d/%d: err = %v", i, bit, err)
			}
		}
	}
	for _, bad := range [][]byte{nil, w[:59], append(bytes.Clone(w), 0)} {
		if k, err := Unwrap(kek, 7, bad); err == nil || k != nil || errors.Is(err, ErrWrongKEK) {
			t.Fatalf("len %d: err = %v", len(bad), err)
		}
	}
	if _, err := Unwrap(kek[:16], 7, w); err == nil {
		t.Fatal("16-byte KEK accepted")
	}
	if _, err := Wrap(kek[:31], 7, dk); err == nil {
		t.Fatal("31-byte KEK accepted")
	}
	if _, err := Wrap(kek, 7, dk[:16]); err == nil {
		t.Fatal("16-byte data key accepted")
	}
}

// End to end: a passphrase KEK wraps a data key, a wrong passphrase gives
// ErrWrongKEK.
func TestWrongPassphrase(t *testing.T) {
	params := KEKParams{Kind: KindPassphrase, Salt: salt16, Iterations: 1000}
	good, _ := fastPassphrase("right").KEK(params)
	bad, _ := fastPassphrase("wrong").KEK(params)
	dk, _ := GenerateDataKey()
	w, _ := Wrap(good, 1, dk)
	if _, err := Unwrap(bad, 1, w); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("err = %v", err)
	}
	if ErrWrongKEK.Error() != "keys: cannot unwrap data key: wrong passphrase or key file" {
		t.Fatal("message changed")
	}
}

// ---- test vectors ----

const keywrapVectorsPath = "../testdata/vectors/keywrap_v1.json"

type kekSpec struct {
	Kind       string `json:"kind"`
	Passphrase string `json:"passphrase,omitempty"`
	SaltHex    string `json:"salt_hex,omitempty"`
	Iterations int    `json:"iterations,omitempty"`
	KeyFileB64 string `json:"key_file_b64,omitempty"`
}

type keywrapVector struct {
	Name       string  `json:"name"`
	Comment    string  `json:"comment,omitempty"`
	KEK        kekSpec `json:"kek"`
	KEKHex     string  `json:"kek_hex,omitempty"`
	KeyID      uint32  `json:"key_id"`
	WrappedHex string  `json:"wrapped_hex"`
	DataKeyHex string  `json:"data_key_hex,omitempty"`
	Error      bool    `json:"error,omitempty"`
}

// fixedNonceAEAD behaves like cipher.NewGCMWithRandomNonce with a fixed
// nonce, to make the vectors reproducible.
type fixedNonceAEAD struct {
	gcm   cipher.AEAD
	nonce []byte
}

func (a fixedNonceAEAD) NonceSize() int { return 0 }
func (a fixedNonceAEAD) Overhead() int  { return 12 + 16 }
func (a fixedNonceAEAD) Seal(dst, nonce, plaintext, aad []byte) []byte {
	return a.gcm.Seal(append(dst, a.nonce...), a.nonce, bytes.Clone(plaintext), aad)
}
func (a fixedNonceAEAD) Open(dst, nonce, ciphertext, aad []byte) ([]byte, error) {
	panic("not implemented")
}

// kekFor computes the KEK a vector's kek spec describes with the public
// providers (which enforce MinPBKDF2Iterations).
func kekFor(t *testing.T, s kekSpec) ([]byte, error) {
	t.Helper()
	switch s.Kind {
	case KindPassphrase:
		salt, err := hex.DecodeString(s.SaltHex)
		if err != nil {
			t.Fatal(err)
		}
		return PassphraseProvider(s.Passphrase).KEK(KEKParams{Kind: KindPassphrase, Salt: salt, Iterations: s.Iterations})
	case KindKeyFile:
		data, err := base64.StdEncoding.DecodeString(s.KeyFileB64)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "key")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return KeyFileProvider(path).KEK(KEKParams{Kind: KindKeyFile})
	}
	t.Fatalf("unknown kind %q", s.Kind)
	return nil, nil
}

func generateKeywrapVectors(t *testing.T) []keywrapVector {
	h := func(s string) []byte { x := sha256.Sum256([]byte("pgphi keywrap test vector: " + s)); return x[:] }
	wrapFixed := func(name string, kek []byte, id uint32, dk []byte) []byte {
		block, err := aes.NewCipher(kek)
		if err != nil {
			t.Fatal(err)
		}
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			t.Skipf("cannot build fixed-nonce GCM (FIPS 140-only mode?): %v", err)
		}
		w, err := wrapWith(fixedNonceAEAD{gcm: gcm, nonce: h("nonce " + name)[:12]}, id, dk)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	keks := map[string][]byte{}
	var vs []keywrapVector
	byName := map[string]keywrapVector{}
	add := func(v keywrapVector) { vs = append(vs, v); byName[v.Name] = v }
	pos := func(name, comment string, spec kekSpec, id uint32) {
		key := spec.Passphrase + "|" + spec.SaltHex + "|" + spec.KeyFileB64
		kek, ok := keks[key]
		if !ok {
			var err error
			if kek, err = kekFor(t, spec); err != nil {
				t.Fatal(err)
			}
			keks[key] = kek
		}
		dk := h("data key " + name)
		add(keywrapVector{Name: name, Comment: comment, KEK: spec, KEKHex: hex.EncodeToString(kek), KeyID: id,
			WrappedHex: hex.EncodeToString(wrapFixed(name, kek, id, dk)), DataKeyHex: hex.EncodeToString(dk)})
	}
	pass := kekSpec{Kind: KindPassphrase, Passphrase: "correct horse battery staple — Zoë", SaltHex: hex.EncodeToString(h("salt")[:16]), Iterations: 600_000}
	fileKey := h("key file")
	b64 := base64.StdEncoding.EncodeToString
	pos("passphrase", "PBKDF2-SHA256, 600000 iterations, 16-byte salt", pass, 1)
	pos("passphrase_key_id_2", "same KEK, second data key", pass, 2)
	pos("keyfile_raw", "key file of 32 raw bytes", kekSpec{Kind: KindKeyFile, KeyFileB64: b64(fileKey)}, 1)
	pos("keyfile_hex", "key file of 64 hex digits and a newline",
		kekSpec{Kind: KindKeyFile, KeyFileB64: b64([]byte(hex.EncodeToString(fileKey) + "\n"))}, 0xfffffffe)
	pos("keyfile_base64", "key file of padded base64 and a newline",
		kekSpec{Kind: KindKeyFile, KeyFileB64: b64([]byte(b64(fileKey) + "\n"))}, 3)

	neg := func(name, comment, from string, edit func(v *keywrapVector)) {
		v := byName[from]
		v.Name, v.Comment, v.DataKeyHex, v.Error = name, comment, "", true
		edit(&v)
		if kek, err := kekFor(t, v.KEK); err == nil {
			v.KEKHex = hex.EncodeToString(kek)
		} else {
			v.KEKHex = ""
		}
		add(v)
	}
	editW := func(f func(w []byte) []byte) func(v *keywrapVector) {
		return func(v *keywrapVector) {
			w, _ := hex.DecodeString(v.WrappedHex)
			v.WrappedHex = hex.EncodeToString(f(w))
		}
	}
	neg("err_wrong_passphrase", "passphrase differs in case", "passphrase",
		func(v *keywrapVector) { v.KEK.Passphrase = "Correct horse battery staple — Zoë" })
	neg("err_wrong_key_file", "another key file", "keyfile_raw",
		func(v *keywrapVector) { v.KEK.KeyFileB64 = b64(h("another key file")) })
	neg("err_wrong_key_id", "wrapped key stored under another key id", "keyfile_hex",
		func(v *keywrapVector) { v.KeyID = 1 })
	neg("err_flipped_bit", "bit flipped in the encrypted data key", "keyfile_raw",
		editW(func(w []byte) []byte { w[20] ^= 0x04; return w }))
	neg("err_truncated", "tag truncated to 15 bytes", "keyfile_raw",
		editW(func(w []byte) []byte { return w[:59] }))
	neg("err_key_file_31_bytes", "key file of 31 raw bytes is invalid", "keyfile_raw",
		func(v *keywrapVector) { v.KEK.KeyFileB64 = b64(fileKey[:31]) })
	neg("err_key_file_hex_62", "key file of 62 hex digits is invalid", "keyfile_hex",
		func(v *keywrapVector) { v.KEK.KeyFileB64 = b64([]byte(hex.EncodeToString(fileKey[:31]) + "\n")) })
	return vs
}

func TestKeywrapVectors(t *testing.T) {
	if testing.Short() {
		t.Skip("600000 PBKDF2 iterations")
	}
	if *update {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(generateKeywrapVectors(t)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keywrapVectorsPath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(keywrapVectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var vs []keywrapVector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 10 {
		t.Fatalf("only %d vectors", len(vs))
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			kek, err := kekFor(t, v.KEK)
			if err != nil {
				if v.Error && v.KEKHex == "" {
					return
				}
				t.Fatalf("KEK: %v", err)
			}
			if hex.EncodeToString(kek) != v.KEKHex {
				t.Fatal("KEK mismatch")
			}
			w, _ := hex.DecodeString(v.WrappedHex)
			dk, err := Unwrap(kek, v.KeyID, w)
			if v.Error {
				if err == nil {
					t.Fatal("Unwrap succeeded, want error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Unwrap: %v", err)
			}
			if hex.EncodeToString(dk) != v.DataKeyHex {
				t.Fatal("data key mismatch")
			}
		})
	}
	t.Run("reproducible", func(t *testing.T) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(generateKeywrapVectors(t)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), data) {
			t.Fatalf("%s differs from the generator output; run go test ./keys -run TestKeywrapVectors -update", keywrapVectorsPath)
		}
	})
}

// TestKeywrapVectorsNode checks the vectors with the independent Node.js
// implementation. Skipped without node unless CI is set.
func TestKeywrapVectorsNode(t *testing.T) {
	if testing.Short() {
		t.Skip("600000 PBKDF2 iterations")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node is required in CI: %v", err)
		}
		t.Skip("node not found on PATH")
	}
	out, err := exec.Command(node, "../testdata/vectors/verify_keywrap_v1.mjs", keywrapVectorsPath).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("node: %v", err)
	}
}
