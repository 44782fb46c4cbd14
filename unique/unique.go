// Package unique is the keyed digest that keeps a UNIQUE constraint, primary
// key or unique index of protected columns enforced once the plaintext is
// gone: the value of a `<column>_uniq bytea` column that carries a unique
// index of its own (spec: docs/FORMAT.md §5, with a test vector).
//
// It owns three things: which column types pgphi can carry (those whose
// equality it reproduces exactly in Go), the equality text of a value (the
// text two values share exactly when the type's own equality says they are
// equal: not the search normalization, so "Smith" and "SMITH" stay distinct
// under a deterministic collation), and the digest: a full-length
// HMAC-SHA-256 of the length-prefixed tuple of a rule's members.
package unique

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// DigestSize is the length of a digest: the full HMAC-SHA-256 output, so
// that two distinct values never share one (truncation would make distinct
// values collide and the index refuse a legitimate row).
const DigestSize = sha256.Size

// Domain separates digests from every other HMAC pgphi computes.
const Domain = "pgphi/v1/unique"

// ErrType says a column's type has an equality pgphi cannot reproduce.
var ErrType = errors.New("unique: type not supported")

// Supported reports whether pgphi reproduces the equality of baseType (as
// the catalog names it, domains resolved, without modifiers) exactly in Go.
// Floats are refused (-0 = 0, and NaN), and so are types whose equal values
// have different texts that pgphi does not normalize (interval, timetz,
// json, citext, arrays, ranges, geometric types).
func Supported(baseType string) error {
	switch baseType {
	case "text", "character varying", "varchar", "character", "bpchar", "char", "name",
		"smallint", "integer", "bigint", "int2", "int4", "int8",
		"uuid", "date", "timestamp without time zone", "timestamp with time zone", "timestamp", "timestamptz",
		"boolean", "bool", "bytea", "numeric", "decimal", "inet", "macaddr":
		return nil
	case "real", "double precision", "float4", "float8":
		return fmt.Errorf("%w: %s (floating point: -0 equals 0 and NaN equals NaN, with other texts)", ErrType, baseType)
	}
	return fmt.Errorf("%w: %s (pgphi does not reproduce its equality)", ErrType, baseType)
}

// EqualityText turns a value's canonical text (docs/FORMAT.md §2.4) into
// its equality text: numeric loses trailing fractional zeros (1.50 = 1.5),
// character(n) loses trailing spaces (they do not count in its equality);
// every other supported type's canonical text already is one.
func EqualityText(baseType, canonical string) string {
	switch baseType {
	case "numeric", "decimal":
		if strings.ContainsRune(canonical, '.') && !strings.ContainsAny(canonical, "eEN") {
			canonical = strings.TrimRight(canonical, "0")
			canonical = strings.TrimSuffix(canonical, ".")
			if canonical == "-0" {
				canonical = "0"
			}
		}
	case "character", "bpchar", "char":
		canonical = strings.TrimRight(canonical, " ")
	}
	return canonical
}

// Digest is HMAC-SHA-256(key, Domain || 0x00 || u16be(n) || m_1 || ... ||
// m_n), where a member m_i is 0x00 for SQL NULL and 0x01 || u32be(len) ||
// its equality text otherwise. With nullsDistinct (PostgreSQL's default), a
// tuple with a NULL member is never a duplicate: Digest returns nil (the
// column stays NULL, which the unique index lets through).
func Digest(key []byte, nullsDistinct bool, members []*string) []byte {
	if nullsDistinct {
		for _, m := range members {
			if m == nil {
				return nil
			}
		}
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(Domain))
	var hdr [3]byte
	binary.BigEndian.PutUint16(hdr[1:], uint16(len(members)))
	mac.Write(hdr[:])
	for _, m := range members {
		if m == nil {
			mac.Write([]byte{0})
			continue
		}
		var lp [5]byte
		lp[0] = 1
		binary.BigEndian.PutUint32(lp[1:], uint32(len(*m)))
		mac.Write(lp[:])
		mac.Write([]byte(*m))
	}
	return mac.Sum(nil)
}
