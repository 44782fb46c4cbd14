package blindindex

import "strings"

// containsKind: a term per distinct n-gram of N (token_size runes, spaces
// included); a query ANDs the n-grams of its text.
type containsKind struct{}

func (containsKind) subKinds(Options) []SubKind { return []SubKind{SubContains} }

func (k containsKind) messages(c *Column, v *valueText, emit func(SubKind, string)) {
	k.normalizedMessages(c, v.normalized(c), emit)
}

func (containsKind) normalizedMessages(c *Column, n string, emit func(SubKind, string)) {
	for _, g := range ngrams(n, c.opt.TokenSize) {
		emit(SubContains, g)
	}
}

func (containsKind) queryKinds() []QueryKind { return []QueryKind{QContains} }

func (containsKind) query(c *Column, q Query) (*Plan, error) {
	n := Normalize(q.Value, c.opt.FoldAccents)
	grams := ngrams(n, c.opt.TokenSize)
	if len(grams) == 0 {
		return nil, invalid("contains query needs at least %d characters after normalization", c.opt.TokenSize)
	}
	groups := make([][]int64, len(grams))
	for i, g := range grams {
		groups[i] = []int64{c.termString(SubContains, g)}
	}
	return c.plan(func(pt string) bool { return strings.Contains(Normalize(pt, c.opt.FoldAccents), n) }, groups...), nil
}

// measured: a query of one n-gram.
func (containsKind) measured(*Column) []measuredQuery {
	return []measuredQuery{{QContains, []SubKind{SubContains}, false}}
}

// budget: several terms per value, the first to give up bits.
func (containsKind) budget(SubKind, Options) (int, int) { return 0, 0 }

// termsPerRow: avgRunes - TokenSize + 1, at least 1.
func (containsKind) termsPerRow(_ SubKind, avgRunes float64, o Options) float64 {
	return max(1, avgRunes-float64(o.TokenSize)+1)
}

func (containsKind) fromNormalized(*Column) bool { return true }
