package backup

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os/exec"
	"testing"

	"github.com/pgphi/pgphi/keys"
)

// A file of several stream segments: a change in a late segment, or a cut,
// is caught even when pg_restore stops reading early (here it reads
// nothing), because the rest of the stream is still read and authenticated.
func TestRestoreAuthenticatesTheWholeStream(t *testing.T) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1)")
	}
	kek := vectorProvider(t)
	signer := ed25519.NewKeyFromSeed(vectorSeed)
	params := keys.KEKParams{Kind: keys.KindKeyFile}
	key := seq(0x40)
	wrapped, err := keys.WrapSecretKey(kek, params, key)
	if err != nil {
		t.Fatal(err)
	}
	h := Header{Format: FormatTink, BackupID: "ffeeddccbbaa99887766554433221100", KEK: fromKeys(params), WrappedKey: wrapped}
	mjson, _ := json.Marshal(Manifest{Version: 1, BackupID: h.BackupID, Format: FormatTink})
	archive := make([]byte, 3<<20+12345)
	rand.Read(archive)
	var buf bytes.Buffer
	w, err := startFile(&buf, h, key, nil, mjson, ed25519.Sign(signer, signedMessage(mjson)))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(archive)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	pub := signer.Public().(ed25519.PublicKey)
	run := func(file []byte) error {
		o, err := Open(bytes.NewReader(file), kek, nil, []ed25519.PublicKey{pub})
		if err != nil {
			return err
		}
		return restore(context.Background(), o.Archive, truePath, 1, "none")
	}
	if err := run(data); err != nil {
		t.Fatalf("intact file: %v", err)
	}
	late := bytes.Clone(data)
	late[len(late)-(1<<20)] ^= 0x10
	if err := run(late); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a byte changed in a late segment: %v, want ErrCorrupt", err)
	}
	if err := run(data[:len(data)-(1<<20)-50]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a file cut inside a segment: %v, want ErrCorrupt", err)
	}
	// Cut exactly after the second whole segment: every remaining segment
	// authenticates, but none is marked last.
	hb, _ := encodeHeader(h)
	if err := run(data[:len(hb)+2<<20]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a file cut between segments: %v, want ErrCorrupt", err)
	}
}
