package blindindex

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"slices"
	"sync"
)

// KeySize is the size of every sub-kind's HMAC key.
const KeySize = 32

// MaxBits is the longest truncation: 56 bits below the 8-bit tag.
const MaxBits = 56

// Column computes the blind index terms and query plans of one protected
// column. It is safe for concurrent use.
type Column struct {
	kinds map[Kind]bool
	opt   Options
	subs  []SubKind
	fams  map[SubKind]*family
	// admit is, per tag, the expected share of rows that hold a given
	// term of the sub-kind (admitShare): what a query group of that term
	// lets through.
	admit map[byte]float64
}

// typicalRunes is the value length the admit estimate assumes for the
// sub-kinds whose number of terms grows with the value (contains,
// phonetic): a name.
const typicalRunes = 8

// admitShare is the expected share of rows holding one given term of a
// sub-kind with bits bits and about k terms per value: 1 - (1 - 2^-bits)^k.
func admitShare(bits int, k float64) float64 {
	return 1 - math.Pow(1-math.Ldexp(1, -bits), k)
}

// family is the keyed, truncated encoder of one sub-kind.
type family struct {
	tag  byte
	bits int
	pool sync.Pool // of hash.Hash (HMAC-SHA256 keyed with the sub-kind key)
}

// NewColumn prepares the terms of a column searchable by kinds.
//
// keys[s] is the 32-byte HMAC-SHA256 key of sub-kind s and bits[s] its
// truncation in bits (0..56; 0: the term is the tag alone), for every s
// in SubKinds(kinds, o). Callers
// derive a distinct key per table, column and sub-kind (HKDF); NewColumn
// refuses two sub-kinds sharing one key. Entries for other sub-kinds are
// ignored. Zero PrefixMin, PrefixMax and TokenSize in o take their defaults.
// Kinds must be known and not repeated.
func NewColumn(kinds []Kind, o Options, keys map[SubKind][]byte, bits map[SubKind]int) (*Column, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if len(kinds) == 0 {
		return nil, errors.New("blindindex: no search kinds")
	}
	c := &Column{kinds: map[Kind]bool{}, opt: o, fams: map[SubKind]*family{}, admit: map[byte]float64{}}
	for _, k := range kinds {
		if !slices.Contains(kindOrder, k) {
			return nil, fmt.Errorf("blindindex: unknown search kind `%s`", string(k))
		}
		if c.kinds[k] {
			return nil, fmt.Errorf("blindindex: search kind `%s` listed twice", string(k))
		}
		c.kinds[k] = true
	}
	c.subs = SubKinds(kinds, o)
	seen := map[string]SubKind{}
	for _, s := range c.subs {
		key, ok := keys[s]
		if !ok {
			return nil, fmt.Errorf("blindindex: no key for sub-kind %s", s)
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("blindindex: key of sub-kind %s has %d bytes, want %d", s, len(key), KeySize)
		}
		if other, dup := seen[string(key)]; dup {
			return nil, fmt.Errorf("blindindex: sub-kinds %s and %s share a key; derive one key per sub-kind", other, s)
		}
		seen[string(key)] = s
		b, ok := bits[s]
		if !ok {
			return nil, fmt.Errorf("blindindex: no truncation for sub-kind %s", s)
		}
		if b < 0 || b > MaxBits {
			return nil, fmt.Errorf("blindindex: truncation of sub-kind %s is %d bits, want 0..%d", s, b, MaxBits)
		}
		c.admit[Tag(s)] = admitShare(b, registry[kindOfSubKind(s, kinds, o)].termsPerRow(s, typicalRunes, o))
		k := slices.Clone(key)
		c.fams[s] = &family{tag: Tag(s), bits: b, pool: sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}
	}
	return c, nil
}

// Options returns the options in effect (defaults filled in).
func (c *Column) Options() Options { return c.opt }

// SubKinds returns the sub-kinds of the column in the order of SubKinds.
func (c *Column) SubKinds() []SubKind { return slices.Clone(c.subs) }

// Term returns the term of message msg in sub-kind s:
//
//	mac  = HMAC-SHA256(key[s], msg)
//	v    = first 7 bytes of mac as a big-endian 56-bit integer
//	term = int64(uint64(Tag(s)) << 56 | v >> (56 - bits[s]))
//
// Terms are non-negative (tags are below 0x80). Term panics if s is not a
// sub-kind of the column.
func (c *Column) Term(s SubKind, msg []byte) int64 {
	f := c.fams[s]
	if f == nil {
		panic("blindindex: sub-kind " + string(s) + " not configured")
	}
	return f.term(msg)
}

func (f *family) term(msg []byte) int64 {
	h := f.pool.Get().(hash.Hash)
	h.Reset()
	h.Write(msg)
	var buf [sha256.Size]byte
	sum := h.Sum(buf[:0])
	f.pool.Put(h)
	var b8 [8]byte
	copy(b8[1:], sum[:7])
	v := binary.BigEndian.Uint64(b8[:]) >> (MaxBits - f.bits)
	return int64(uint64(f.tag)<<56 | v)
}

func (c *Column) termString(s SubKind, msg string) int64 { return c.fams[s].term([]byte(msg)) }

// Terms appends the terms of one value to dst and returns the extended
// slice. value is the PostgreSQL canonical text of a non-null value (see
// docs/FORMAT.md section 2.4). The appended terms are sorted ascending and
// free of duplicates; dst[:len(dst)] is left as it was. A value contributes
// no terms of a kind when it yields nothing for that kind:
//
//   - exact: the normalized value is empty;
//   - prefix: per length N, the normalized value is shorter than N runes;
//   - contains: the normalized value is shorter than TokenSize runes;
//   - phonetic: no word of the value has a phonetic key (no Latin letters);
//   - phone: fewer than 4 digits in a value that is not a valid number;
//   - date: not a date "YYYY-MM-DD" (optionally followed by a time) with a
//     year 0001..9999, e.g. "infinity" or a BC date.
//
// Such values are never candidates of a query of that kind, and never match
// one: a query needs at least one term of its kind.
func (c *Column) Terms(dst []int64, value string) []int64 {
	start := len(dst)
	c.messages(value, func(s SubKind, msg string) { dst = append(dst, c.termString(s, msg)) })
	tail := dst[start:]
	slices.Sort(tail)
	tail = slices.Compact(tail)
	return dst[:start+len(tail)]
}

// messages calls fn with every (sub-kind, message) of a value, the messages
// that Terms hashes (docs/SEARCH.md section 3), possibly repeated. Sizing
// and leakage measurement count these before truncation.
func (c *Column) messages(value string, fn func(SubKind, string)) {
	v := &valueText{raw: value}
	for _, k := range kindOrder {
		if c.kinds[k] {
			registry[k].messages(c, v, fn)
		}
	}
}

// firstRunes returns the first n runes of s, and whether s has that many.
func firstRunes(s string, n int) (string, bool) {
	i := 0
	for k := range s {
		if i == n {
			return s[:k], true
		}
		i++
	}
	return s, i == n
}

// ngrams returns the distinct n-rune substrings of s in order of first
// occurrence; none if s is shorter than n runes.
func ngrams(s string, n int) []string {
	var starts []int
	for i := range s {
		starts = append(starts, i)
	}
	if len(starts) < n {
		return nil
	}
	starts = append(starts, len(s))
	seen := map[string]bool{}
	var out []string
	for i := 0; i+n < len(starts); i++ {
		g := s[starts[i]:starts[i+n]]
		if !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	return out
}
