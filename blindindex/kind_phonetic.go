package blindindex

import (
	"math"
	"slices"
)

// phoneticKind: a term per phonetic key of each word of the accent-folded
// text; a query matches values that have, for every query word, a word
// sharing one of its keys.
type phoneticKind struct{}

func (phoneticKind) subKinds(Options) []SubKind { return []SubKind{SubPhonetic} }

func (phoneticKind) messages(c *Column, v *valueText, emit func(SubKind, string)) {
	for _, w := range valueWords(v.foldedText(c)) {
		for _, k := range wordKeys(w) {
			emit(SubPhonetic, k)
		}
	}
}

func (phoneticKind) normalizedMessages(_ *Column, n string, emit func(SubKind, string)) {
	for _, w := range valueWords(n) {
		for _, key := range wordKeys(w) {
			emit(SubPhonetic, key)
		}
	}
}

func (phoneticKind) queryKinds() []QueryKind { return []QueryKind{QPhonetic} }

func (phoneticKind) query(c *Column, q Query) (*Plan, error) {
	words := queryWords(q.Value)
	if len(words) == 0 {
		return nil, invalid("phonetic search needs Latin letters")
	}
	keys := make([][]string, len(words))
	groups := make([][]int64, len(words))
	for i, w := range words {
		keys[i] = wordKeys(w)
		if len(keys[i]) == 0 {
			return nil, invalid("phonetic search needs Latin letters (a query word has no phonetic key)")
		}
		for _, k := range keys[i] {
			groups[i] = append(groups[i], c.termString(SubPhonetic, k))
		}
	}
	return c.plan(func(pt string) bool {
		set := valueKeySet(pt)
		for _, ks := range keys {
			if !slices.ContainsFunc(ks, func(k string) bool { return set[k] }) {
				return false
			}
		}
		return true
	}, groups...), nil
}

// measured: a query of one key.
func (phoneticKind) measured(*Column) []measuredQuery {
	return []measuredQuery{{QPhonetic, []SubKind{SubPhonetic}, false}}
}

// budget: several terms per value, given up right after contains.
func (phoneticKind) budget(SubKind, Options) (int, int) { return 0, 1 }

// termsPerRow: one word per 6 runes (at least 1), two keys per word.
func (phoneticKind) termsPerRow(_ SubKind, avgRunes float64, _ Options) float64 {
	return 2 * max(1, math.Round(avgRunes/6))
}

// fromNormalized: the words come from N only when the column folds accents.
func (phoneticKind) fromNormalized(c *Column) bool { return c.opt.FoldAccents }
