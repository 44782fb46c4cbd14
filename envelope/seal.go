package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"
)

// newAEAD returns AES-256-GCM with random 96-bit nonces under key, the only
// GCM construction approved in FIPS 140-3 mode of crypto/cipher.
func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != ColumnKeySize {
		return nil, fmt.Errorf("envelope: column key must be %d bytes, got %d", ColumnKeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// A Sealer encrypts field values of one column under one column key.
//
// A Sealer is safe for concurrent use by multiple goroutines. Nonces are
// random, so a single column key must not seal more than 2^32 values; rotate
// the data key well before that.
type Sealer struct {
	id   KeyID
	aead cipher.AEAD
}

// NewSealer returns a Sealer that encrypts under columnKey, which must be
// ColumnKeySize (32) bytes, and labels its ciphertexts with id. The Sealer
// does not retain columnKey.
func NewSealer(id KeyID, columnKey []byte) (*Sealer, error) {
	aead, err := newAEAD(columnKey)
	if err != nil {
		return nil, err
	}
	return &Sealer{id: id, aead: aead}, nil
}

// KeyID returns the key id written in the header of every ciphertext s
// produces.
func (s *Sealer) KeyID() KeyID { return s.id }

// Seal appends to dst the version 1 ciphertext of v bound to b, and returns
// the extended slice. The ciphertext is len(v.Text)+1+Overhead bytes long and
// opens only with the same column key and a Binding equal to b.
//
// Seal returns an error, and no ciphertext, if v.Type is not a version 1
// value type, v.Text is not valid UTF-8 or b has an empty table or column.
// If dst has enough spare capacity Seal does not allocate; dst and the
// backing array of v.Text must not overlap.
func (s *Sealer) Seal(dst []byte, v Value, b Binding) ([]byte, error) {
	if !v.Type.known() {
		return nil, fmt.Errorf("envelope: cannot seal value of unknown type %v", v.Type)
	}
	if !utf8.ValidString(v.Text) {
		return nil, errors.New("envelope: cannot seal value: text is not valid UTF-8")
	}
	if err := b.check(); err != nil {
		return nil, err
	}
	return s.seal(dst, byte(v.Type), v.Text, b), nil
}

// seal writes the ciphertext of typ || text without validating its inputs.
func (s *Sealer) seal(dst []byte, typ byte, text string, b Binding) []byte {
	p := getBuf()
	aad := AppendAAD((*p)[:0], Version1, s.id, b)

	ptLen := 1 + len(text)
	ret, out := sliceForAppend(dst, Overhead+ptLen)
	out[0] = Version1
	binary.BigEndian.PutUint32(out[1:headerSize], uint32(s.id))

	// Lay the plaintext out where the nonce will go. The AEAD's output starts
	// at the same address, an exact overlap that the cipher.AEAD contract
	// allows, so the plaintext is moved and encrypted in place without any
	// extra buffer, and overwritten by the nonce and ciphertext.
	pt := out[headerSize : headerSize+ptLen]
	pt[0] = typ
	copy(pt[1:], text)
	s.aead.Seal(out[:headerSize], nil, pt, aad)

	putBuf(p, aad)
	return ret
}

// KeyLookup returns the 32-byte column key for key id id, or an error if
// the key is not available. The returned slice must not be modified
// afterwards.
type KeyLookup func(id KeyID) (columnKey []byte, err error)

// StaticKeys returns a KeyLookup serving the given column keys, and an error
// wrapping ErrUnknownKey for any other key id. The map is read on every
// lookup and must not be modified concurrently.
func StaticKeys(keys map[KeyID][]byte) KeyLookup {
	return func(id KeyID) ([]byte, error) {
		k, ok := keys[id]
		if !ok {
			return nil, ErrUnknownKey
		}
		return k, nil
	}
}

// An Opener decrypts field ciphertexts of one column, under whichever of
// several column keys (for example during key rotation) the ciphertext header
// names.
//
// An Opener is safe for concurrent use by multiple goroutines. It calls the
// lookup at most once per key id that succeeds and caches the resulting
// cipher; failed lookups are retried on the next Open.
type Opener struct {
	lookup KeyLookup

	mu    sync.RWMutex
	aeads map[KeyID]cipher.AEAD
}

// NewOpener returns an Opener that obtains column keys from lookup.
func NewOpener(lookup KeyLookup) *Opener {
	return &Opener{lookup: lookup, aeads: make(map[KeyID]cipher.AEAD)}
}

func (o *Opener) aead(id KeyID) (cipher.AEAD, error) {
	o.mu.RLock()
	a, ok := o.aeads[id]
	o.mu.RUnlock()
	if ok {
		return a, nil
	}
	key, err := o.lookup(id)
	if err != nil {
		return nil, fmt.Errorf("envelope: key id %d: %w", id, err)
	}
	a, err = newAEAD(key)
	if err != nil {
		return nil, fmt.Errorf("envelope: key id %d: %w", id, err)
	}
	o.mu.Lock()
	if cached, ok := o.aeads[id]; ok {
		a = cached
	} else {
		o.aeads[id] = a
	}
	o.mu.Unlock()
	return a, nil
}

// Open authenticates and decrypts ct, which must have been sealed bound to
// b, and returns the value.
//
// Open returns an error wrapping ErrFormat if ct is truncated, has an unknown
// version, or (after successful authentication) an unknown value type or
// non-UTF-8 text; the lookup's error, wrapped with the key id, if the key id
// is not available; and ErrDecrypt if authentication fails. No error message
// includes plaintext, key or binding data. Open never returns unauthenticated
// data.
func (o *Opener) Open(ct []byte, b Binding) (Value, error) {
	_, id, err := ParseHeader(ct)
	if err != nil {
		return Value{}, err
	}
	if err := b.check(); err != nil {
		return Value{}, err
	}
	aead, err := o.aead(id)
	if err != nil {
		return Value{}, err
	}

	ap := getBuf()
	aad := AppendAAD((*ap)[:0], Version1, id, b)
	pp := getBuf()
	pt, err := aead.Open((*pp)[:0], nil, ct[headerSize:], aad)
	putBuf(ap, aad)
	if err != nil {
		putBuf(pp, (*pp)[:0])
		return Value{}, ErrDecrypt
	}

	var v Value
	switch {
	case len(pt) == 0:
		err = fmt.Errorf("%w: empty plaintext", ErrFormat)
	case !ValueType(pt[0]).known():
		err = fmt.Errorf("%w: unknown value type 0x%02x", ErrFormat, pt[0])
	case !utf8.Valid(pt[1:]):
		err = fmt.Errorf("%w: value text is not valid UTF-8", ErrFormat)
	default:
		v = Value{Type: ValueType(pt[0]), Text: string(pt[1:])}
	}
	putBuf(pp, pt)
	return v, err
}
