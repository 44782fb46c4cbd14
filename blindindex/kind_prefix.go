package blindindex

import "strings"

// prefixKind: per length L in prefix_min..prefix_max, a term of the first L
// runes of N; a query matches values whose N starts with it.
type prefixKind struct{}

func (prefixKind) subKinds(o Options) []SubKind {
	var out []SubKind
	for n := o.PrefixMin; n <= o.PrefixMax; n++ {
		out = append(out, PrefixSubKind(n))
	}
	return out
}

func (k prefixKind) messages(c *Column, v *valueText, emit func(SubKind, string)) {
	k.normalizedMessages(c, v.normalized(c), emit)
}

func (prefixKind) normalizedMessages(c *Column, n string, emit func(SubKind, string)) {
	for l := c.opt.PrefixMin; l <= c.opt.PrefixMax; l++ {
		p, ok := firstRunes(n, l)
		if !ok {
			break
		}
		emit(PrefixSubKind(l), p)
	}
}

func (prefixKind) queryKinds() []QueryKind { return []QueryKind{QPrefix} }

func (prefixKind) query(c *Column, q Query) (*Plan, error) {
	n := Normalize(q.Value, c.opt.FoldAccents)
	l := min(len([]rune(n)), c.opt.PrefixMax)
	if l < c.opt.PrefixMin {
		return nil, invalid("prefix query needs at least %d characters after normalization", c.opt.PrefixMin)
	}
	// A match starts with every indexed prefix of the query: AND them,
	// the longest (most specific) first.
	var groups [][]int64
	for k := l; k >= c.opt.PrefixMin; k-- {
		p, _ := firstRunes(n, k)
		groups = append(groups, []int64{c.termString(PrefixSubKind(k), p)})
	}
	return c.plan(func(pt string) bool { return strings.HasPrefix(Normalize(pt, c.opt.FoldAccents), n) }, groups...), nil
}

// measured: a query of prefix_min characters.
func (prefixKind) measured(c *Column) []measuredQuery {
	return []measuredQuery{{QPrefix, []SubKind{PrefixSubKind(c.opt.PrefixMin)}, true}}
}

// budget: longer prefixes give up bits first (a longer query ANDs the
// shorter ones); the shortest is queried alone.
func (prefixKind) budget(s SubKind, o Options) (int, int) {
	n := prefixLen(s)
	if n > o.PrefixMin {
		return 1, 3 + maxPrefixRunes - n
	}
	return 2, 3 + maxPrefixRunes - n
}

func (prefixKind) termsPerRow(SubKind, float64, Options) float64 { return 1 }

func (prefixKind) fromNormalized(*Column) bool { return true }
