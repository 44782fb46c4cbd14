package blindindex

// exactKind: one term, the whole normalized value N; a query matches
// values with the same N.
type exactKind struct{}

func (exactKind) subKinds(Options) []SubKind { return []SubKind{SubExact} }

func (k exactKind) messages(c *Column, v *valueText, emit func(SubKind, string)) {
	k.normalizedMessages(c, v.normalized(c), emit)
}

func (exactKind) normalizedMessages(_ *Column, n string, emit func(SubKind, string)) {
	if n != "" {
		emit(SubExact, n)
	}
}

func (exactKind) queryKinds() []QueryKind { return []QueryKind{QExact} }

func (exactKind) query(c *Column, q Query) (*Plan, error) {
	n := Normalize(q.Value, c.opt.FoldAccents)
	if n == "" {
		return nil, invalid("exact query is empty after normalization")
	}
	// A matching value has the same normalized text, hence the same terms
	// of every kind computed from it (prefix, n-grams, phonetic words when
	// the column folds accents): the query ANDs them all, so its
	// candidates are the values sharing that part of the term array,
	// however few bits each sub-kind has.
	var groups [][]int64
	for _, kk := range kindOrder {
		nk, ok := registry[kk].(normalizedKind)
		if !ok || !c.kinds[kk] || !nk.fromNormalized(c) {
			continue
		}
		nk.normalizedMessages(c, n, func(s SubKind, msg string) {
			groups = append(groups, []int64{c.termString(s, msg)})
		})
	}
	return c.plan(func(pt string) bool { return Normalize(pt, c.opt.FoldAccents) == n }, groups...), nil
}

func (exactKind) measured(c *Column) []measuredQuery {
	var subs []SubKind
	for _, kk := range kindOrder {
		if nk, ok := registry[kk].(normalizedKind); ok && c.kinds[kk] && nk.fromNormalized(c) {
			subs = append(subs, registry[kk].subKinds(c.opt)...)
		}
	}
	if len(subs) > 0 && subs[0] != SubExact {
		panic("blindindex: exact must come first in kindOrder")
	}
	return []measuredQuery{{QExact, subs, true}}
}

func (exactKind) budget(SubKind, Options) (int, int) { return 1, 2 }

func (exactKind) termsPerRow(SubKind, float64, Options) float64 { return 1 }

func (exactKind) fromNormalized(*Column) bool { return true }
