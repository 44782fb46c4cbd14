package backup

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/pgphi/pgphi/keys"
)

// Magic starts every backup file.
const Magic = "pgphi-backup-v1\n"

// Formats of the encrypted body, as recorded in the header, the manifest and
// pgphi.backups.
const (
	// FormatTink is Tink's streaming AEAD AES256_GCM_HKDF_1MB: HKDF-SHA256,
	// AES-256-GCM, 1 MiB ciphertext segments, the header as associated data.
	FormatTink = "tink-aes256-gcm-hkdf-1mb"
	// FormatAge is age v1 with X25519 recipients (ChaCha20-Poly1305): not
	// FIPS-approved, only where FIPS 140 is not required.
	FormatAge = "age"
)

// maxHeaderSize and maxManifestSize bound what is read before anything is
// authenticated.
const (
	maxHeaderSize   = 64 << 10
	maxManifestSize = 64 << 20
)

// ErrCorrupt is wrapped by every error that means the file was changed,
// truncated, or is not a pgphi backup.
var ErrCorrupt = errors.New("backup: the file is damaged, truncated or was changed")

// Header is the cleartext part of a backup file. It holds no secret.
type Header struct {
	Format   string `json:"format"`
	BackupID string `json:"backup_id"`
	// KEK describes the key-encryption key that wraps WrappedKey
	// (FormatTink only).
	KEK *KEKParams `json:"kek,omitempty"`
	// WrappedKey is the stream's 32-byte key wrapped under the KEK as data
	// keys are, with key id 0 (FormatTink only).
	WrappedKey []byte `json:"wrapped_key,omitempty"`
	// Recipients are the age recipients (FormatAge only).
	Recipients []string `json:"age_recipients,omitempty"`
}

// KEKParams are keys.KEKParams as the header stores them.
type KEKParams struct {
	Kind        string `json:"kind"`
	Salt        []byte `json:"salt,omitempty"`
	Iterations  int    `json:"iterations,omitempty"`
	Mechanism   string `json:"mechanism,omitempty"`
	TokenLabel  string `json:"token_label,omitempty"`
	TokenSerial string `json:"token_serial,omitempty"`
	KeyLabel    string `json:"key_label,omitempty"`
	KeyID       []byte `json:"key_id,omitempty"`
}

func fromKeys(p keys.KEKParams) *KEKParams {
	return &KEKParams{Kind: p.Kind, Salt: p.Salt, Iterations: p.Iterations, Mechanism: p.Mechanism,
		TokenLabel: p.TokenLabel, TokenSerial: p.TokenSerial, KeyLabel: p.KeyLabel, KeyID: p.KeyID}
}

func (p *KEKParams) keys() keys.KEKParams {
	return keys.KEKParams{Kind: p.Kind, Salt: p.Salt, Iterations: p.Iterations, Mechanism: p.Mechanism,
		TokenLabel: p.TokenLabel, TokenSerial: p.TokenSerial, KeyLabel: p.KeyLabel, KeyID: p.KeyID}
}

var backupIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// newBackupID returns 16 random bytes in hex.
func newBackupID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// encodeHeader returns Magic || u32be(len(json)) || json: the exact bytes
// the stream authenticates as associated data.
func encodeHeader(h Header) ([]byte, error) {
	body, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	out := append([]byte(Magic), binary.BigEndian.AppendUint32(nil, uint32(len(body)))...)
	return append(out, body...), nil
}

// readHeader reads and parses the header, returning it and its exact bytes.
func readHeader(r io.Reader) (Header, []byte, error) {
	pre := make([]byte, len(Magic)+4)
	if _, err := io.ReadFull(r, pre); err == io.EOF {
		return Header{}, nil, fmt.Errorf("%w: not a pgphi backup file (it is empty)", ErrCorrupt)
	} else if err != nil {
		return Header{}, nil, fmt.Errorf("%w: not a pgphi backup file (too short for a header)", ErrCorrupt)
	}
	if !bytes.Equal(pre[:len(Magic)], []byte(Magic)) {
		return Header{}, nil, fmt.Errorf("%w: not a pgphi backup file (no %q at its start)", ErrCorrupt, Magic[:len(Magic)-1])
	}
	n := binary.BigEndian.Uint32(pre[len(Magic):])
	if n == 0 || n > maxHeaderSize {
		return Header{}, nil, fmt.Errorf("%w: header length %d", ErrCorrupt, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Header{}, nil, fmt.Errorf("%w: header cut short (%v)", ErrCorrupt, err)
	}
	var h Header
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return Header{}, nil, fmt.Errorf("%w: header is not valid (%v)", ErrCorrupt, err)
	}
	if !backupIDPattern.MatchString(h.BackupID) {
		return Header{}, nil, fmt.Errorf("%w: header has no valid backup id", ErrCorrupt)
	}
	switch h.Format {
	case FormatTink:
		if h.KEK == nil || len(h.WrappedKey) == 0 {
			return Header{}, nil, fmt.Errorf("%w: %s header without a wrapped key", ErrCorrupt, FormatTink)
		}
	case FormatAge:
	default:
		return Header{}, nil, fmt.Errorf("%w: unknown format %q", ErrCorrupt, h.Format)
	}
	return h, append(pre, body...), nil
}
