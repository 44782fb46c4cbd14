package blindindex

import (
	"container/heap"
	"crypto/rand"
	"math"
	"slices"
)

// Sizing by distinct values.
//
// A term hides its message among the other messages of its sub-kind that
// truncation maps to it, so what matters is the number D of distinct
// messages of the sub-kind, not the number of rows: 20 first names over
// 100,000 rows are 20 messages. A Sizer reads a column's values once, counts
// D per sub-kind and the distinct values V of the column (values with the
// same messages in every sub-kind count once: nothing can tell them apart),
// and chooses bits under two budgets:
//
//   - per sub-kind: the largest bits with D / 2^bits >= 2, so each term is
//     shared by at least two distinct messages on average;
//   - per column: the whole term array of a value must also be shared by at
//     least two distinct values on average. Each sub-kind's term splits the
//     values that share the others, so their bits add up; the Sizer
//     simulates the arrays of (a sample of) the distinct values under a
//     throwaway key and takes one bit at a time from the sub-kind with the
//     most bits (ties: the order of reduceOrder) until the mean is >= 2.
//
// docs/SEARCH.md section 4 gives the reasoning and the numbers.

// SampleValues bounds the distinct values a Sizer keeps to simulate the
// joint budget: the values with the smallest hashes (a uniform sample of
// the distinct values, KMV), about 8 bytes per term each.
const SampleValues = 1 << 15

// TargetShare is the mean number of distinct values (or messages) that must
// share each term and each term array.
const TargetShare = 2.0

// Sizer reads the values of one column and proposes bits per sub-kind.
// It holds O(SampleValues) values and one Distinct per sub-kind. It is not
// safe for concurrent use.
type Sizer struct {
	col    *Column
	subs   []SubKind
	byTag  map[byte]int
	fams   []Distinct
	values Distinct
	rows   int64
	sample kmv
	buf    []int64
	sets   map[uint64]struct{} // reused by simulate
	simBuf []int64
	// seen holds up to seenMax values already added: adding a value again
	// changes nothing but the row count (every count is of distinct
	// messages), so a repeated value (a common surname, a birth date) is
	// not hashed again.
	seen map[string]struct{}
}

// seenMax bounds the values a Sizer remembers having added.
const seenMax = 1 << 16

// NewSizer prepares the sizing of a column searchable by kinds with options
// o. keys are the sub-kinds' HMAC keys the terms will be written with (as
// for NewColumn); with them the simulated term arrays are the real ones, so
// the budget holds exactly on the values read (when they fit the sample).
// nil keys: random keys that are thrown away, which give the same counts in
// expectation (a plan, before the keys are chosen).
func NewSizer(kinds []Kind, o Options, keys map[SubKind][]byte) (*Sizer, error) {
	o = o.withDefaults()
	subs := SubKinds(kinds, o)
	if keys == nil {
		keys = map[SubKind][]byte{}
		for _, s := range subs {
			k := make([]byte, KeySize)
			_, _ = rand.Read(k)
			keys[s] = k
		}
	}
	bitsBy := map[SubKind]int{}
	for _, s := range subs {
		bitsBy[s] = MaxBits
	}
	col, err := NewColumn(kinds, o, keys, bitsBy)
	if err != nil {
		return nil, err
	}
	sz := &Sizer{col: col, subs: subs, byTag: map[byte]int{}, fams: make([]Distinct, len(subs)), sample: kmv{max: SampleValues, terms: map[uint64][]int64{}}, seen: map[string]struct{}{}}
	for i, s := range subs {
		sz.byTag[Tag(s)] = i
	}
	return sz, nil
}

// Add reads one non-null value (canonical text).
func (s *Sizer) Add(value string) {
	s.rows++
	if _, again := s.seen[value]; again {
		return
	}
	if len(s.seen) < seenMax {
		s.seen[value] = struct{}{}
	}
	s.buf = s.col.Terms(s.buf[:0], value) // 56-bit terms: distinct messages, practically
	for _, t := range s.buf {
		s.fams[s.byTag[byte(t>>56)]].Add(uint64(t) << 8)
	}
	h := hashTerms(s.buf)
	s.values.Add(h)
	s.sample.offer(h, s.buf)
}

// Sizing is a Sizer's result.
type Sizing struct {
	Rows        int64 // non-null values read
	Values      int64 // distinct values (estimated beyond ExactDistinct)
	ValuesExact bool
	Families    []FamilySizing // in SubKinds order
	// ValuesPerSet is the simulated mean number of distinct values sharing
	// one whole term array with these bits.
	ValuesPerSet float64
	Sampled      int // distinct values in the simulation
}

// FamilySizing is the sizing of one sub-kind.
type FamilySizing struct {
	SubKind     SubKind
	Values      int64 // distinct messages (estimated beyond ExactDistinct)
	Exact       bool
	Bits        int
	Cap         int // bits the per-sub-kind budget alone would allow
	MeanPerTerm float64
}

// Bits returns the chosen bits by sub-kind.
func (z Sizing) Bits() map[SubKind]int {
	out := map[SubKind]int{}
	for _, f := range z.Families {
		out[f.SubKind] = f.Bits
	}
	return out
}

// BitsForDistinct is the per-sub-kind budget: the largest bits (0..56) with
// d / 2^bits >= 2; 0 when d < 4 (every term of the sub-kind is then its
// tag alone, which still finds every match).
func BitsForDistinct(d int64) int {
	b := 0
	for b < MaxBits && math.Ldexp(float64(d), -(b+1)) >= TargetShare {
		b++
	}
	return b
}

// reduceClass says which sub-kinds give up bits first when the term
// arrays are too distinct:
//
//   - class 0: the sub-kinds with several terms per value (contains,
//     phonetic). Their term sets single values out quickly (six n-grams of
//     3 bits each are 18 bits of array), while a query, which needs a row
//     to hold all of its terms, is filtered little by them;
//   - class 1: single-term sub-kinds whose own queries AND them with other
//     sub-kinds (an exact query ANDs the value's prefix terms, a phone
//     query the last four and area, a date query the month and year, a
//     longer prefix query the shorter prefixes);
//   - class 2: the single-term sub-kinds queried alone (the shortest prefix,
//     last four, area, year), which also serve the queries of class 1.
//
// Within a class the sub-kind with the most bits gives one up; ties go by
// reduceRank.
func reduceClass(s SubKind, o Options) int {
	if k := ownerOf(s); k != nil {
		c, _ := k.budget(s, o)
		return c
	}
	return 2
}

func reduceRank(s SubKind) int {
	if k := ownerOf(s); k != nil {
		_, r := k.budget(s, Options{}.withDefaults())
		return r
	}
	return 70
}

// Sizing chooses the bits. See the package comment on sizing.
func (s *Sizer) Sizing() Sizing {
	z := Sizing{Rows: s.rows, Values: s.values.Count(), ValuesExact: s.values.Exact(), Sampled: len(s.sample.terms)}
	finest := -1
	for i, sub := range s.subs {
		d := s.fams[i].Count()
		b := BitsForDistinct(d)
		z.Families = append(z.Families, FamilySizing{SubKind: sub, Values: d, Exact: s.fams[i].Exact(), Bits: b, Cap: b})
		if finest < 0 || d > z.Families[finest].Values {
			finest = i
		}
	}
	if len(z.Families) == 0 {
		return z
	}
	// A sample of n of V distinct values stands for the whole column when
	// the finest sub-kind (whose messages grow with V) has log2(V/n) fewer
	// bits in the simulation: it then puts as many sampled values on each
	// term as the column puts on it.
	delta := 0
	if n := len(s.sample.terms); n > 0 && z.Values > int64(n) {
		delta = int(math.Floor(math.Log2(float64(z.Values) / float64(n))))
	}
	bitsOf := func() []int {
		out := make([]int, len(z.Families))
		for i, f := range z.Families {
			out[i] = f.Bits
			if i == finest {
				out[i] = max(0, f.Bits-delta)
			}
		}
		return out
	}
	z.ValuesPerSet = s.simulate(bitsOf())
	for z.ValuesPerSet < TargetShare {
		pick := -1
		better := func(f, g FamilySizing) bool {
			if cf, cg := reduceClass(f.SubKind, s.col.opt), reduceClass(g.SubKind, s.col.opt); cf != cg {
				return cf < cg
			}
			if f.Bits != g.Bits {
				return f.Bits > g.Bits
			}
			return reduceRank(f.SubKind) < reduceRank(g.SubKind)
		}
		for i, f := range z.Families {
			if f.Bits > 0 && (pick < 0 || better(f, z.Families[pick])) {
				pick = i
			}
		}
		if pick < 0 {
			break
		}
		z.Families[pick].Bits--
		z.ValuesPerSet = s.simulate(bitsOf())
	}
	// Whole bits overshoot: give a bit back to every sub-kind that can take
	// it without breaking the budget, sub-kinds queried alone first.
	order := make([]int, len(z.Families))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		fa, fb := z.Families[a].SubKind, z.Families[b].SubKind
		if ca, cb := reduceClass(fa, s.col.opt), reduceClass(fb, s.col.opt); ca != cb {
			return cb - ca
		}
		return reduceRank(fb) - reduceRank(fa)
	})
	for changed := z.ValuesPerSet >= TargetShare; changed; {
		changed = false
		for _, i := range order {
			f := &z.Families[i]
			if f.Bits >= f.Cap {
				continue
			}
			f.Bits++
			if r := s.simulate(bitsOf()); r >= TargetShare {
				z.ValuesPerSet, changed = r, true
			} else {
				f.Bits--
			}
		}
	}
	for i := range z.Families {
		f := &z.Families[i]
		f.MeanPerTerm = math.Ldexp(float64(f.Values), -f.Bits)
	}
	return z
}

// simulate returns the mean number of sampled values per distinct term
// array when sub-kind i (SubKinds order) has bits[i].
func (s *Sizer) simulate(bitsBy []int) float64 {
	n := len(s.sample.terms)
	if n == 0 {
		return math.Inf(1)
	}
	var shift [256]uint
	for i, sub := range s.subs {
		shift[Tag(sub)] = uint(MaxBits - bitsBy[i])
	}
	if s.sets == nil {
		s.sets = make(map[uint64]struct{}, n)
	}
	clear(s.sets)
	buf := s.simBuf
	for _, terms := range s.sample.terms {
		buf = buf[:0]
		for _, t := range terms {
			tag := byte(t >> 56)
			v := uint64(t) & (1<<56 - 1)
			buf = append(buf, int64(uint64(tag)<<56|v>>shift[tag]))
		}
		slices.Sort(buf)
		s.sets[hashTerms(slices.Compact(buf))] = struct{}{}
	}
	s.simBuf = buf
	return float64(n) / float64(len(s.sets))
}

// hashTerms is a 64-bit hash of a sorted term array (splitmix64 steps).
func hashTerms(terms []int64) uint64 {
	h := uint64(0x9e3779b97f4a7c15) ^ uint64(len(terms))
	for _, t := range terms {
		h = mix64(h ^ uint64(t))
	}
	return h
}

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// kmv keeps the max values with the smallest hashes, with their terms.
type kmv struct {
	max   int
	heap  maxHeap
	terms map[uint64][]int64
}

func (k *kmv) offer(h uint64, terms []int64) {
	if _, ok := k.terms[h]; ok {
		return
	}
	if len(k.heap) >= k.max {
		if h >= k.heap[0] {
			return
		}
		delete(k.terms, heap.Pop(&k.heap).(uint64))
	}
	heap.Push(&k.heap, h)
	k.terms[h] = slices.Clone(terms)
}

type maxHeap []uint64

func (h maxHeap) Len() int           { return len(h) }
func (h maxHeap) Less(i, j int) bool { return h[i] > h[j] }
func (h maxHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *maxHeap) Push(x any)        { *h = append(*h, x.(uint64)) }
func (h *maxHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
