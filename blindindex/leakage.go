package blindindex

import (
	"hash/maphash"
	"math"
	"slices"
)

// Leakage measurement.
//
// A Measurer computes, from the values of a column and the column's real
// keys and bits, exactly what someone holding the terms (not the keys) can
// tell apart, per sub-kind and for the whole term array, and what each
// query kind costs. It keeps one entry per distinct (term, message) pair and
// per distinct value, so its memory grows with the column's distinct values
// (a measurement, not a sketch). Messages are identified by a 64-bit hash
// that never leaves the process.

// Measurer measures the leakage of one column. Not safe for concurrent use.
type Measurer struct {
	col    *Column
	seed   maphash.Seed
	rows   int64
	fams   map[SubKind]*famCount
	vals   map[uint64]*valueCount // by value identity (its messages)
	pairs  []pair
	chain  map[QueryKind]map[uint64]*chainGroup // rows by the row's query-kind term set
	chains map[QueryKind][]SubKind              // the chained query kinds' sub-kinds
	// Reused by Add for every row: the one-term groups of a query and the
	// terms it sends (copied only when they start a new chainGroup).
	groupTerms, sent []int64
	groups           [][]int64
}

// chainGroup is the rows whose terms of a query kind's sub-kinds are terms.
type chainGroup struct {
	terms []int64 // sorted
	rows  int64
}

type pair struct {
	sub  SubKind
	term int64
	msg  uint64
}

type famCount struct {
	msgs     map[uint64]int64 // rows per message
	termRows map[int64]int64  // rows per term
	termMsgs map[int64]int64  // distinct messages per term
	seen     map[[2]uint64]struct{}
}

type valueCount struct {
	rows  int64
	array uint64
}

// NewMeasurer measures column c.
func NewMeasurer(c *Column) *Measurer {
	m := &Measurer{col: c, seed: maphash.MakeSeed(), fams: map[SubKind]*famCount{}, vals: map[uint64]*valueCount{}, chain: map[QueryKind]map[uint64]*chainGroup{}}
	m.chains = map[QueryKind][]SubKind{}
	for _, mq := range c.measured() {
		if mq.chained {
			m.chains[mq.kind] = mq.subs
		}
	}
	for _, s := range c.subs {
		m.fams[s] = &famCount{msgs: map[uint64]int64{}, termRows: map[int64]int64{}, termMsgs: map[int64]int64{}, seen: map[[2]uint64]struct{}{}}
	}
	return m
}

// Add reads one non-null value (canonical text).
func (m *Measurer) Add(value string) {
	m.rows++
	m.pairs = m.pairs[:0]
	m.col.messages(value, func(s SubKind, msg string) {
		m.pairs = append(m.pairs, pair{s, m.col.termString(s, msg), maphash.String(m.seed, string(s)+"\x00"+msg)})
	})
	slices.SortFunc(m.pairs, func(a, b pair) int {
		if a.term != b.term {
			return cmpInt(a.term, b.term)
		}
		return cmpInt(int64(a.msg), int64(b.msg))
	})
	m.pairs = slices.Compact(m.pairs)
	var id, array uint64 = 0x51, 0x52
	lastTerm := int64(-1)
	for _, p := range m.pairs {
		f := m.fams[p.sub]
		f.msgs[p.msg]++
		if p.term != lastTerm {
			f.termRows[p.term]++
			array = mix64(array ^ uint64(p.term))
			lastTerm = p.term
		}
		if _, ok := f.seen[[2]uint64{uint64(p.term), p.msg}]; !ok {
			f.seen[[2]uint64{uint64(p.term), p.msg}] = struct{}{}
			f.termMsgs[p.term]++
		}
	}
	msgs := make([]uint64, len(m.pairs))
	for i, p := range m.pairs {
		msgs[i] = p.msg
	}
	slices.Sort(msgs)
	for _, x := range slices.Compact(msgs) {
		id = mix64(id ^ x)
	}
	v := m.vals[id]
	if v == nil {
		v = &valueCount{array: array}
		m.vals[id] = v
	}
	v.rows++
	for q, subs := range m.chains {
		// The terms a query for this value sends (selectGroups, as Query).
		m.groupTerms, m.groups = m.groupTerms[:0], m.groups[:0]
		for _, p := range m.pairs {
			if !slices.Contains(subs, p.sub) {
				continue
			}
			if n := len(m.groupTerms); n == 0 || m.groupTerms[n-1] != p.term {
				m.groupTerms = append(m.groupTerms, p.term)
			}
		}
		for i := range m.groupTerms {
			m.groups = append(m.groups, m.groupTerms[i:i+1])
		}
		m.sent = m.sent[:0]
		for _, g := range m.col.selectGroups(m.groups) {
			m.sent = append(m.sent, g[0])
		}
		terms := m.sent
		slices.Sort(terms)
		h := uint64(0x53)
		for _, t := range terms {
			h = mix64(h ^ uint64(t))
		}
		if m.chain[q] == nil {
			m.chain[q] = map[uint64]*chainGroup{}
		}
		g := m.chain[q][h]
		if g == nil {
			g = &chainGroup{terms: slices.Clone(terms)}
			m.chain[q][h] = g
		}
		g.rows++
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ColumnLeakage is the measured leakage of one column.
type ColumnLeakage struct {
	Rows   int64 `json:"rows"`   // non-null values
	Values int64 `json:"values"` // distinct values (same messages in every sub-kind: one value)
	Arrays int64 `json:"arrays"` // distinct whole term arrays
	// MeanValuesPerArray = Values / Arrays; MinValuesPerArray is the
	// smallest number of distinct values sharing one array.
	MeanValuesPerArray float64           `json:"mean_values_per_array"`
	MinValuesPerArray  int64             `json:"min_values_per_array"`
	Families           []FamilyLeakage   `json:"families"`
	Queries            []QueryCandidates `json:"queries"`
}

// FamilyLeakage is the measured leakage of one sub-kind.
type FamilyLeakage struct {
	SubKind SubKind `json:"sub_kind"`
	Bits    int     `json:"bits"`
	Values  int64   `json:"values"` // distinct messages
	Terms   int64   `json:"terms"`  // distinct terms
	// MeanValuesPerTerm = Values / Terms; MinValuesPerTerm the fewest
	// distinct messages sharing one term.
	MeanValuesPerTerm float64 `json:"mean_values_per_term"`
	MinValuesPerTerm  int64   `json:"min_values_per_term"`
}

// QueryCandidates is the expected cost of a query kind on the column: for a
// query for the value of a row drawn at random, the rows the index returns
// (decrypted and checked) and the rows that match.
type QueryCandidates struct {
	Kind       QueryKind `json:"kind"`
	Candidates float64   `json:"expected_candidates"`
	Matches    float64   `json:"expected_matches"`
}

// Min returns the smallest mean over the column's sub-kinds and its arrays:
// the number the leakage rule (>= TargetShare) is checked against. It is
// +Inf for a column without values.
func (l ColumnLeakage) Min() float64 {
	m := math.Inf(1)
	if l.Values > 0 {
		m = l.MeanValuesPerArray
	}
	for _, f := range l.Families {
		if f.Terms > 0 {
			m = min(m, f.MeanValuesPerTerm)
		}
	}
	return m
}

// Result returns the measurement.
func (m *Measurer) Result() ColumnLeakage {
	l := ColumnLeakage{Rows: m.rows, Values: int64(len(m.vals))}
	arrays := map[uint64]int64{}
	for _, v := range m.vals {
		arrays[v.array]++
	}
	l.Arrays = int64(len(arrays))
	if l.Arrays > 0 {
		l.MeanValuesPerArray = float64(l.Values) / float64(l.Arrays)
		l.MinValuesPerArray = minOf(arrays)
	}
	for _, s := range m.col.subs {
		f := m.fams[s]
		fl := FamilyLeakage{SubKind: s, Bits: m.col.fams[s].bits, Values: int64(len(f.msgs)), Terms: int64(len(f.termRows))}
		if fl.Terms > 0 {
			fl.MeanValuesPerTerm = float64(fl.Values) / float64(fl.Terms)
			fl.MinValuesPerTerm = minOf(f.termMsgs)
		}
		l.Families = append(l.Families, fl)
	}
	for _, mq := range m.col.measured() {
		qc := QueryCandidates{Kind: mq.kind}
		if mq.chained {
			qc.Candidates = supersetWeighted(m.chain[mq.kind])
		} else {
			qc.Candidates = selfWeighted(m.fams[mq.subs[0]].termRows)
		}
		qc.Matches = selfWeighted(m.fams[mq.subs[0]].msgs)
		l.Queries = append(l.Queries, qc)
	}
	return l
}

// supersetWeighted returns, for the terms of a row drawn at random, the
// expected number of rows whose terms contain them all: the candidates of
// a query that ANDs them (col_bidx @> terms). It walks the rarest term's
// groups, as GIN does.
func supersetWeighted(groups map[uint64]*chainGroup) float64 {
	post := map[int64][]*chainGroup{}
	for _, g := range groups {
		for _, t := range g.terms {
			post[t] = append(post[t], g)
		}
	}
	var total, sum float64
	for _, g := range groups {
		if len(g.terms) == 0 {
			continue // no terms: its query is refused
		}
		total += float64(g.rows)
		rare := post[g.terms[0]]
		for _, t := range g.terms[1:] {
			if len(post[t]) < len(rare) {
				rare = post[t]
			}
		}
		var cand int64
		for _, h := range rare {
			if containsAll(h.terms, g.terms) {
				cand += h.rows
			}
		}
		sum += float64(g.rows) * float64(cand)
	}
	if total == 0 {
		return 0
	}
	return sum / total
}

// containsAll reports whether sorted a contains every element of sorted b.
func containsAll(a, b []int64) bool {
	i := 0
	for _, x := range b {
		for i < len(a) && a[i] < x {
			i++
		}
		if i == len(a) || a[i] != x {
			return false
		}
	}
	return true
}

func minOf[K comparable](m map[K]int64) int64 {
	first := true
	var out int64
	for _, v := range m {
		if first || v < out {
			out, first = v, false
		}
	}
	return out
}

// selfWeighted returns sum(n^2)/sum(n): the expected size of the group of a
// member drawn at random.
func selfWeighted[K comparable](groups map[K]int64) float64 {
	var s, s2 float64
	for _, n := range groups {
		s += float64(n)
		s2 += float64(n) * float64(n)
	}
	if s == 0 {
		return 0
	}
	return s2 / s
}

// measured lists how a Measurer costs each query kind of the column's
// search kinds, in kind order.
func (c *Column) measured() []measuredQuery {
	var out []measuredQuery
	for _, k := range kindOrder {
		if c.kinds[k] {
			out = append(out, registry[k].measured(c)...)
		}
	}
	return out
}
