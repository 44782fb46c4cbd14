// Package envelope owns the pgphi field ciphertext format (version 1), its
// associated data and the plaintext value encoding.
//
// A field ciphertext is
//
//	version (0x01) || key_id (uint32, big-endian) || nonce (12 bytes) || AES-256-GCM ciphertext || tag (16 bytes)
//
// The plaintext is the value type byte followed by the value's canonical text.
// The associated data binds the ciphertext to its version, key id, table,
// column and primary key, so a ciphertext copied to another row, column or
// table fails to decrypt. See docs/FORMAT.md for the byte-level specification.
//
// This package does no key management: column keys are supplied by the
// caller (see package keys).
package envelope

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
)

// Version1 is the first byte of every version 1 field ciphertext.
const Version1 byte = 0x01

const (
	headerSize = 1 + 4 // version || key_id
	nonceSize  = 12
	tagSize    = 16

	// Overhead is the number of bytes a version 1 ciphertext adds to its
	// plaintext: the header (5), the nonce (12) and the GCM tag (16).
	Overhead = headerSize + nonceSize + tagSize

	// MinCiphertextSize is the length of the shortest well-formed version 1
	// ciphertext: Overhead plus the one-byte value type (empty text).
	MinCiphertextSize = Overhead + 1

	// ColumnKeySize is the required length of a column key, in bytes.
	ColumnKeySize = 32
)

// aadLabel is the domain separation prefix of the associated data.
const aadLabel = "pgphi-field"

// KeyID identifies the data key a ciphertext was sealed under. It is stored
// in clear in the ciphertext header and authenticated as associated data.
type KeyID uint32

// Binding is the location a ciphertext is bound to through the associated
// data. Opening a ciphertext with a Binding that differs in any field from the
// one it was sealed with fails with ErrDecrypt.
type Binding struct {
	// Table is the schema-qualified table name, e.g. "public.patient".
	Table string
	// Column is the column name.
	Column string
	// PrimaryKey holds the canonical text of each primary key component,
	// in key order.
	PrimaryKey []string
}

// check reports whether b can be encoded as associated data.
func (b Binding) check() error {
	if b.Table == "" {
		return errors.New("envelope: binding has an empty table name")
	}
	if b.Column == "" {
		return errors.New("envelope: binding has an empty column name")
	}
	if len(b.PrimaryKey) > math.MaxUint16 {
		return errors.New("envelope: binding has more than 65535 primary key components")
	}
	if uint64(len(b.Table)) > math.MaxUint32 || uint64(len(b.Column)) > math.MaxUint32 {
		return errors.New("envelope: binding name too long")
	}
	for _, k := range b.PrimaryKey {
		if uint64(len(k)) > math.MaxUint32 {
			return errors.New("envelope: binding primary key component too long")
		}
	}
	return nil
}

// ErrDecrypt is returned by Opener.Open when the ciphertext does not
// authenticate: the key is wrong, the ciphertext is bound to another row,
// column or table, or it was modified. Its message never includes data.
var ErrDecrypt = errors.New("envelope: cannot decrypt field: wrong key, wrong row or column, or tampered ciphertext")

// ErrFormat is returned (possibly wrapped) for ciphertexts that are
// malformed: truncated, of an unknown version, or carrying an unknown value
// type. Its message and wrapping messages never include data.
var ErrFormat = errors.New("envelope: malformed field ciphertext")

// ErrUnknownKey is returned by the KeyLookup built by StaticKeys for key ids
// it does not hold. Opener.Open wraps lookup errors, so errors.Is works on its
// result.
var ErrUnknownKey = errors.New("envelope: unknown key id")

// ParseHeader returns the version and key id of ct without authenticating
// it. It returns an error wrapping ErrFormat if ct is shorter than a
// well-formed ciphertext or its version is not Version1; in the latter case
// version is still returned.
func ParseHeader(ct []byte) (version byte, id KeyID, err error) {
	if len(ct) == 0 {
		return 0, 0, fmt.Errorf("%w: empty", ErrFormat)
	}
	if ct[0] != Version1 {
		return ct[0], 0, fmt.Errorf("%w: unknown version 0x%02x", ErrFormat, ct[0])
	}
	if len(ct) < MinCiphertextSize {
		return ct[0], 0, fmt.Errorf("%w: too short (%d bytes, need at least %d)", ErrFormat, len(ct), MinCiphertextSize)
	}
	return ct[0], KeyID(binary.BigEndian.Uint32(ct[1:headerSize])), nil
}

// AppendAAD appends the associated data of a ciphertext with the given
// version and key id, bound to b, to dst and returns the extended slice:
//
//	"pgphi-field" || version || u32be(id) || lp(table) || lp(column) ||
//	u16be(len(primary key)) || lp(pk_1) || ... || lp(pk_n)
//
// where lp(x) = u32be(len(x)) || x. The encoding is injective. AppendAAD
// panics if b has more than 65535 primary key components or a string longer
// than 2^32-1 bytes; Seal and Open reject such bindings with an error first.
func AppendAAD(dst []byte, version byte, id KeyID, b Binding) []byte {
	if len(b.PrimaryKey) > math.MaxUint16 {
		panic("envelope: too many primary key components")
	}
	dst = append(dst, aadLabel...)
	dst = append(dst, version)
	dst = binary.BigEndian.AppendUint32(dst, uint32(id))
	dst = appendLP(dst, b.Table)
	dst = appendLP(dst, b.Column)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(b.PrimaryKey)))
	for _, k := range b.PrimaryKey {
		dst = appendLP(dst, k)
	}
	return dst
}

func appendLP(dst []byte, s string) []byte {
	if uint64(len(s)) > math.MaxUint32 {
		panic("envelope: string too long for associated data")
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

// bufPool holds scratch buffers for associated data and plaintexts, so that
// sealing and opening millions of fields does not allocate per call.
var bufPool = sync.Pool{
	New: func() any {
		b := make([]byte, 0, 256)
		return &b
	},
}

const maxPooledBuf = 64 << 10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

// putBuf zeroes b (it may have held primary key values or plaintext) and
// returns it to the pool.
func putBuf(p *[]byte, b []byte) {
	clear(b)
	if cap(b) > maxPooledBuf {
		return
	}
	*p = b[:0]
	bufPool.Put(p)
}

// sliceForAppend extends in by n bytes, reusing its capacity when possible,
// and returns the whole slice and the new tail.
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	tail = head[len(in):]
	return
}
