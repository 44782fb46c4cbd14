package blindindex

import (
	"math"
	"math/bits"
)

// Distinct counts distinct 64-bit hashes in bounded memory: exactly up to
// ExactDistinct of them, then with a HyperLogLog sketch (Flajolet, Fusy,
// Gandouet and Meunier, 2007, with the small-range correction of Heule,
// Nunkesser and Hall, 2013) of 2^14 six-bit registers, whose relative
// standard error is 1.04/sqrt(2^14) ≈ 0.8%. Inputs must already be uniform
// (pgphi feeds HMAC outputs), so no hashing is done here. The sketch is
// written out here instead of taken from a library because it is 40 lines
// and none of the Go HyperLogLog libraries is among the modules pgphi may
// depend on. The zero value is ready to use.
type Distinct struct {
	exact map[uint64]struct{}
	regs  []uint8 // nil until the exact set overflows
}

// ExactDistinct is the number of distinct hashes Distinct counts exactly.
const ExactDistinct = 1 << 16

const hllP = 14

// Add counts h.
func (d *Distinct) Add(h uint64) {
	if d.regs != nil {
		d.addSketch(h)
		return
	}
	if d.exact == nil {
		d.exact = map[uint64]struct{}{}
	}
	d.exact[h] = struct{}{}
	if len(d.exact) > ExactDistinct {
		d.regs = make([]uint8, 1<<hllP)
		for x := range d.exact {
			d.addSketch(x)
		}
		d.exact = nil
	}
}

func (d *Distinct) addSketch(h uint64) {
	idx := h >> (64 - hllP)
	rho := uint8(bits.LeadingZeros64(h<<hllP|1<<(hllP-1))) + 1
	if rho > d.regs[idx] {
		d.regs[idx] = rho
	}
}

// Count returns the number of distinct hashes added: exact while at most
// ExactDistinct were, else the sketch's estimate.
func (d *Distinct) Count() int64 {
	if d.regs == nil {
		return int64(len(d.exact))
	}
	m := float64(len(d.regs))
	var sum float64
	zeros := 0
	for _, r := range d.regs {
		sum += math.Ldexp(1, -int(r))
		if r == 0 {
			zeros++
		}
	}
	e := 0.7213 / (1 + 1.079/m) * m * m / sum
	if e <= 2.5*m && zeros > 0 {
		e = m * math.Log(m/float64(zeros))
	}
	return int64(math.Round(e))
}

// Exact reports whether Count is exact.
func (d *Distinct) Exact() bool { return d.regs == nil }
