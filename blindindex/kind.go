package blindindex

// searchKind is the behaviour of one search kind. Each kind lives in a file
// of its own (kind_exact.go, kind_prefix.go, kind_contains.go,
// kind_phonetic.go, kind_phone.go, kind_date.go) and is registered in
// registry; the rest of the package asks the kinds instead of switching on
// them. Tags (Tag) stay in one table: they are part of the stored format.
type searchKind interface {
	// subKinds lists the kind's sub-kinds for options o (defaults filled).
	subKinds(o Options) []SubKind
	// messages emits the (sub-kind, message) pairs of one value
	// (docs/SEARCH.md section 3).
	messages(c *Column, v *valueText, emit func(SubKind, string))
	// queryKinds lists the query kinds the kind answers.
	queryKinds() []QueryKind
	// query plans a query of one of those kinds.
	query(c *Column, q Query) (*Plan, error)
	// measured lists how each query kind is costed by a Measurer.
	measured(c *Column) []measuredQuery
	// budget ranks a sub-kind for the joint budget (see reduceClass).
	budget(s SubKind, o Options) (class, rank int)
	// termsPerRow is the earlier row planner's estimate for sub-kind s.
	termsPerRow(s SubKind, avgRunes float64, o Options) float64
}

// normalizedKind is a kind whose messages depend only on the normalized
// text N of a value (exact, prefix, contains; phonetic when the column folds
// accents): a value with the same N has the same terms, so an exact query
// ANDs them.
type normalizedKind interface {
	// fromNormalized reports whether, on column c, the kind's messages
	// are a function of N.
	fromNormalized(c *Column) bool
	normalizedMessages(c *Column, n string, emit func(SubKind, string))
}

// measuredQuery is how a Measurer costs one query kind: chained, the query
// ANDs the row's terms of subs (all of them the rows that match share);
// otherwise it looks up one term of subs[0].
type measuredQuery struct {
	kind    QueryKind
	subs    []SubKind
	chained bool
}

// registry maps each Kind to its implementation; kindOrder orders them.
var registry = map[Kind]searchKind{
	Exact:    exactKind{},
	Prefix:   prefixKind{},
	Contains: containsKind{},
	Phonetic: phoneticKind{},
	Phone:    phoneKind{},
	Date:     dateKind{},
}

// queryNeeds maps each query kind to the search kind that answers it.
var queryNeeds = func() map[QueryKind]Kind {
	m := map[QueryKind]Kind{}
	for _, k := range kindOrder {
		for _, q := range registry[k].queryKinds() {
			m[q] = k
		}
	}
	return m
}()

// ownerOf returns the kind whose sub-kind s is (nil if none).
func ownerOf(s SubKind) searchKind {
	all := Options{PrefixMin: 1, PrefixMax: maxPrefixRunes}.withDefaults()
	for _, k := range kindOrder {
		for _, t := range registry[k].subKinds(all) {
			if t == s {
				return registry[k]
			}
		}
	}
	return nil
}

// valueText is one value being indexed, with its normalizations computed
// once for all kinds.
type valueText struct {
	raw           string
	n, folded     string
	hasN, hasFold bool
}

// normalized is Normalize(raw, the column's FoldAccents).
func (v *valueText) normalized(c *Column) string {
	if !v.hasN {
		v.n, v.hasN = Normalize(v.raw, c.opt.FoldAccents), true
	}
	return v.n
}

// foldedText is Normalize(raw, true), the text phonetic words come from.
func (v *valueText) foldedText(c *Column) string {
	if c.opt.FoldAccents {
		return v.normalized(c)
	}
	if !v.hasFold {
		v.folded, v.hasFold = Normalize(v.raw, true), true
	}
	return v.folded
}
