package backup

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgphi/pgphi/keys"
)

// The test vector of docs/FORMAT.md ("Backup files"): a FormatTink file
// whose stream key is wrapped by a key-file KEK, with a manifest signed by
// a fixed Ed25519 key. Tink's stream header is random (salt, nonce prefix),
// so the vector is a stored file: this test opens it as a reader written
// from the specification would, and PGPHI_WRITE_BACKUP_VECTOR=1 writes a
// new one.
const vectorFile = "testdata/vector-tink.pgphi"

// vectorKEK is bytes 0x00..0x1f; vectorSeed is 0x20..0x3f; the archive is
// vectorArchive.
var (
	vectorKEK     = seq(0x00)
	vectorSeed    = seq(0x20)
	vectorArchive = []byte("PGDMP pgphi backup test vector: stands for a pg_dump custom-format archive\n")
)

func seq(start byte) []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func vectorProvider(t *testing.T) keys.KEKProvider {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(path, vectorKEK, 0o600); err != nil {
		t.Fatal(err)
	}
	return keys.KeyFileProvider(path)
}

func TestBackupVector(t *testing.T) {
	kek := vectorProvider(t)
	signer := ed25519.NewKeyFromSeed(vectorSeed)
	pub := signer.Public().(ed25519.PublicKey)
	if os.Getenv("PGPHI_WRITE_BACKUP_VECTOR") != "" {
		params := keys.KEKParams{Kind: keys.KindKeyFile}
		key := seq(0x40)
		wrapped, err := keys.WrapSecretKey(kek, params, key)
		if err != nil {
			t.Fatal(err)
		}
		h := Header{Format: FormatTink, BackupID: "000102030405060708090a0b0c0d0e0f", KEK: fromKeys(params), WrappedKey: wrapped}
		m := Manifest{Version: 1, BackupID: h.BackupID, Format: FormatTink, Database: "clinic", ServerVersion: "16.4",
			TakenAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), PlanID: "plan-0123456789abcdef0123", KeyIDs: []uint32{1},
			Tables:     []TableSum{{Table: "public.patient", Rows: 2, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Ordered: true}},
			SigningKey: "SHA256:test"}
		mjson, _ := json.Marshal(m)
		var buf bytes.Buffer
		w, err := startFile(&buf, h, key, nil, mjson, ed25519.Sign(signer, signedMessage(mjson)))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(vectorArchive)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorFile, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(vectorFile)
	if err != nil {
		t.Fatal(err)
	}
	o, err := Open(bytes.NewReader(data), kek, nil, []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	archive, err := io.ReadAll(o.Archive)
	if err != nil || !bytes.Equal(archive, vectorArchive) {
		t.Fatalf("archive = %q, %v", archive, err)
	}
	if o.Manifest.Database != "clinic" || o.Manifest.Rows() != 2 || o.Header.KEK.Kind != keys.KindKeyFile || o.Digest == "" {
		t.Fatalf("opened %+v", o)
	}

	// Every single-bit change is caught: in the header (associated data or
	// wrapped key), in the manifest, its signature, or the archive.
	for i := 0; i < len(data); i += max(1, len(data)/97) {
		bad := bytes.Clone(data)
		bad[i] ^= 0x04
		if err := readAll(bad, kek, pub); err == nil {
			t.Fatalf("a flipped bit at byte %d of %d was not caught", i, len(data))
		}
	}
	for _, n := range []int{0, 10, len(Magic) + 4, len(data) / 2, len(data) - 1} {
		if err := readAll(data[:n], kek, pub); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: %v, want ErrCorrupt", n, err)
		}
	}
	// Another KEK; another signer.
	other := keys.KeyFileProvider(writeKey(t, seq(0x60)))
	if _, err := Open(bytes.NewReader(data), other, nil, []ed25519.PublicKey{pub}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("another KEK: %v, want ErrWrongKey", err)
	}
	otherPub := ed25519.NewKeyFromSeed(seq(0x80)).Public().(ed25519.PublicKey)
	if _, err := Open(bytes.NewReader(data), kek, nil, []ed25519.PublicKey{otherPub}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another signer: %v, want ErrBadSignature", err)
	}
}

func readAll(data []byte, kek keys.KEKProvider, pub ed25519.PublicKey) error {
	o, err := Open(bytes.NewReader(data), kek, nil, []ed25519.PublicKey{pub})
	if err != nil {
		return err
	}
	_, err = io.ReadAll(o.Archive)
	return err
}

func writeKey(t *testing.T, k []byte) string {
	path := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(path, k, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
