package keys

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// KeySize is the length in bytes of every key in the hierarchy: KEKs, data
// keys and derived purpose keys.
const KeySize = 32

// Purpose names what a derived key is used for. It is part of the HKDF info
// string, so keys derived for different purposes are independent.
type Purpose string

// Purposes defined by format version 1.
const (
	PurposeField      Purpose = "field"
	PurposeBlindIndex Purpose = "blind-index"
	PurposeAudit      Purpose = "audit"
	// PurposeUnique keys the digests of unique rules (package unique):
	// DeriveKey(root, PurposeUnique, table, uniq_column).
	PurposeUnique Purpose = "unique"
)

const infoPrefix = "pgphi/v1/"

// DeriveKey derives a 32-byte key for purpose p and the given context strings
// from root, a 32-byte data key, with HKDF-SHA256 (RFC 5869), an empty salt
// and
//
//	info = "pgphi/v1/" || p || 0x00 || lp(context[0]) || ... || lp(context[n-1])
//
// where lp(x) = u32be(len(x)) || x. The info encoding is injective, so keys
// for different purposes, different contexts, or differently split contexts
// ("ab","c" versus "a","bc") are independent. p must be non-empty and must not
// contain a NUL byte.
func DeriveKey(root []byte, p Purpose, context ...string) ([]byte, error) {
	if len(root) != KeySize {
		return nil, fmt.Errorf("keys: data key must be %d bytes, got %d", KeySize, len(root))
	}
	if p == "" || strings.IndexByte(string(p), 0) >= 0 {
		return nil, errors.New("keys: invalid key purpose")
	}
	n := len(infoPrefix) + len(p) + 1
	for _, c := range context {
		if uint64(len(c)) > math.MaxUint32 {
			return nil, errors.New("keys: derivation context too long")
		}
		n += 4 + len(c)
	}
	info := make([]byte, 0, n)
	info = append(info, infoPrefix...)
	info = append(info, p...)
	info = append(info, 0)
	for _, c := range context {
		info = binary.BigEndian.AppendUint32(info, uint32(len(c)))
		info = append(info, c...)
	}
	return hkdf.Key(sha256.New, root, nil, string(info), KeySize)
}

// ColumnKey returns the field encryption key of column in table (schema
// qualified, e.g. "public.patient"): DeriveKey(root, PurposeField, table,
// column).
func ColumnKey(root []byte, table, column string) ([]byte, error) {
	return DeriveKey(root, PurposeField, table, column)
}
