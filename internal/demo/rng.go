package demo

import (
	"math/bits"
	"time"
)

// rng is a tiny splitmix64 generator. It is used instead of math/rand so
// that the generated data set is byte-for-byte stable across Go releases:
// the demo, the benchmarks and the tests all rely on "same seed, same rows".
type rng struct{ s uint64 }

// Stream identifiers: every table (and sub-part of a row) draws from its own
// stream so that adding a column to one generator does not reshuffle the
// others, and so that rows for patient i can be regenerated independently of
// every other patient (which is what lets Populate stream each table).
const (
	streamPatient uint64 = iota + 1
	streamIdent
	streamResults
	streamMutation
	streamClinical
	streamFixed
)

func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// newRNG derives an independent generator for (seed, stream, i, j).
func newRNG(seed int64, stream uint64, i, j int) rng {
	s := mix64(uint64(seed) + 0x9e3779b97f4a7c15*stream)
	s = mix64(s ^ (uint64(i) + 0x632be59bd9b4e019))
	s = mix64(s ^ (uint64(j) + 0x85ebca77c2b2ae63))
	return rng{s: s}
}

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	return mix64(r.s)
}

// intn returns a uniform int in [0, n). n must be > 0.
func (r *rng) intn(n int) int {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int(hi)
}

// between returns a uniform int in [lo, hi].
func (r *rng) between(lo, hi int) int { return lo + r.intn(hi-lo+1) }

// float returns a uniform float64 in [0, 1).
func (r *rng) float() float64 { return float64(r.next()>>11) / (1 << 53) }

// chance reports true with probability p.
func (r *rng) chance(p float64) bool { return r.float() < p }

func pick[T any](r *rng, s []T) T { return s[r.intn(len(s))] }

// weighted returns an index into w chosen with probability proportional to
// its weight.
func weighted(r *rng, w []int) int {
	total := 0
	for _, x := range w {
		total += x
	}
	n := r.intn(total)
	for i, x := range w {
		if n < x {
			return i
		}
		n -= x
	}
	return len(w) - 1
}

// digits returns n random decimal digits.
func (r *rng) digits(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + r.intn(10))
	}
	return string(b)
}

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// ulid returns a 26-character ULID (Crockford base32: 48-bit millisecond
// timestamp followed by 80 random bits) for the given time, drawing the random
// part from r. Like real ULIDs the uids sort roughly by creation time.
func (r *rng) ulid(t time.Time) string {
	var b [26]byte
	ms := uint64(t.UnixMilli())
	for i := 9; i >= 0; i-- {
		b[i] = crockford[ms&31]
		ms >>= 5
	}
	hi := r.next() & 0xffff
	lo := r.next()
	for i := 25; i >= 10; i-- {
		b[i] = crockford[lo&31]
		lo = lo>>5 | (hi&31)<<59
		hi >>= 5
	}
	return string(b[:])
}

// fill expands a template: '#' is a random digit, '%' a random non-zero
// digit, '~' the next byte of prefix, '?' a random upper-case letter;
// everything else is copied.
func (r *rng) fill(tmpl, prefix string) string {
	b := make([]byte, 0, len(tmpl))
	p := 0
	for i := 0; i < len(tmpl); i++ {
		switch c := tmpl[i]; c {
		case '#':
			b = append(b, byte('0'+r.intn(10)))
		case '%':
			b = append(b, byte('1'+r.intn(9)))
		case '?':
			b = append(b, byte('A'+r.intn(26)))
		case '~':
			if p < len(prefix) {
				b = append(b, prefix[p])
				p++
			}
		default:
			b = append(b, c)
		}
	}
	return string(b)
}
