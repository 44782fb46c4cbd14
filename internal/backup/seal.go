package backup

import (
	"errors"
	"fmt"
	"io"

	"filippo.io/age"
	"github.com/tink-crypto/tink-go/v2/streamingaead/subtle"
)

// Tink's AES256_GCM_HKDF_1MB streaming AEAD parameters.
const (
	tinkHKDF          = "SHA256"
	tinkKeySize       = 32
	tinkSegmentSize   = 1 << 20
	tinkFirstSegOffst = 0
)

func tinkAEAD(key []byte) (*subtle.AESGCMHKDF, error) {
	return subtle.NewAESGCMHKDF(key, tinkHKDF, tinkKeySize, tinkSegmentSize, tinkFirstSegOffst)
}

// encryptingWriter returns the writer of the body after header.
func encryptingWriter(w io.Writer, h Header, headerBytes, key []byte, recipients []age.Recipient) (io.WriteCloser, error) {
	switch h.Format {
	case FormatTink:
		a, err := tinkAEAD(key)
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		return a.NewEncryptingWriter(w, headerBytes)
	case FormatAge:
		return age.Encrypt(w, recipients...)
	}
	return nil, fmt.Errorf("backup: unknown format %q", h.Format)
}

// decryptingReader returns the reader of the body after header. Every error
// it returns later wraps ErrCorrupt.
func decryptingReader(r io.Reader, h Header, headerBytes, key []byte, identities []age.Identity) (io.Reader, error) {
	switch h.Format {
	case FormatTink:
		a, err := tinkAEAD(key)
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		dr, err := a.NewDecryptingReader(r, headerBytes)
		if err != nil {
			return nil, corrupt("starting decryption", err)
		}
		return corruptReader{dr}, nil
	case FormatAge:
		dr, err := age.Decrypt(r, identities...)
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, fmt.Errorf("%w: none of the given age identities is a recipient of this backup", ErrWrongKey)
		}
		if err != nil {
			return nil, corrupt("starting decryption", err)
		}
		return corruptReader{dr}, nil
	}
	return nil, fmt.Errorf("backup: unknown format %q", h.Format)
}

// ErrWrongKey is wrapped when the KEK or identity given cannot open the
// backup's key.
var ErrWrongKey = errors.New("backup: the key given does not open this backup")

// ErrBadSignature is wrapped when the manifest is not signed by a trusted key.
var ErrBadSignature = errors.New("backup: manifest signature not valid")

func corrupt(what string, err error) error {
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: %s: the file ends too early (truncated)", ErrCorrupt, what)
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, what, err)
}

// corruptReader marks every decryption failure as ErrCorrupt.
type corruptReader struct{ r io.Reader }

func (c corruptReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: decryption failed (%v): a byte was changed or the file was cut short", ErrCorrupt, err)
	}
	return n, err
}
