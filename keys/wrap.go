package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

// WrappedKeySize is the length of a wrapped data key: a 12-byte nonce, the
// 32-byte encrypted key and a 16-byte GCM tag.
const WrappedKeySize = 12 + KeySize + 16

const wrapLabel = "pgphi-keywrap-v1"

// ErrWrongKEK is returned by Unwrap when the wrapped key does not
// authenticate under the KEK: the passphrase or key file is wrong (or the
// wrapped key was modified or stored under another key id).
var ErrWrongKEK = errors.New("keys: cannot unwrap data key: wrong passphrase or key file")

// GenerateDataKey returns a new 32-byte data key from crypto/rand.
func GenerateDataKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return k, nil
}

func newWrapAEAD(kek []byte) (cipher.AEAD, error) {
	if len(kek) != KeySize {
		return nil, fmt.Errorf("keys: KEK must be %d bytes, got %d", KeySize, len(kek))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

func wrapAAD(id uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte(wrapLabel), id)
}

// Wrap encrypts the 32-byte dataKey under the 32-byte kek with AES-256-GCM
// and a random nonce, binding it to key id id through the associated data
// "pgphi-keywrap-v1" || u32be(id). It returns nonce || ciphertext || tag,
// WrappedKeySize bytes, which Unwrap(kek, id, ...) reverses.
func Wrap(kek []byte, id uint32, dataKey []byte) ([]byte, error) {
	aead, err := newWrapAEAD(kek)
	if err != nil {
		return nil, err
	}
	return wrapWith(aead, id, dataKey)
}

func wrapWith(aead cipher.AEAD, id uint32, dataKey []byte) ([]byte, error) {
	if len(dataKey) != KeySize {
		return nil, fmt.Errorf("keys: data key must be %d bytes, got %d", KeySize, len(dataKey))
	}
	return aead.Seal(make([]byte, 0, WrappedKeySize), nil, dataKey, wrapAAD(id)), nil
}

// Unwrap authenticates and decrypts a data key produced by Wrap(kek, id, ...).
// It returns ErrWrongKEK if authentication fails, and a different error if
// kek or wrapped has the wrong length.
func Unwrap(kek []byte, id uint32, wrapped []byte) ([]byte, error) {
	aead, err := newWrapAEAD(kek)
	if err != nil {
		return nil, err
	}
	if len(wrapped) != WrappedKeySize {
		return nil, fmt.Errorf("keys: wrapped data key is malformed: want %d bytes, got %d", WrappedKeySize, len(wrapped))
	}
	dk, err := aead.Open(make([]byte, 0, KeySize), nil, wrapped, wrapAAD(id))
	if err != nil {
		return nil, ErrWrongKEK
	}
	return dk, nil
}
