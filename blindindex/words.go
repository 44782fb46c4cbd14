package blindindex

import (
	"slices"
	"strings"
	"unicode"

	"github.com/pgphi/pgphi/phonetic"
)

// wordTokens splits the accent-folded normalized text (Normalize(s, true))
// into tokens of letters (and the marks that belong to them) and
// apostrophes; every other character (space, hyphen, digit, punctuation,
// symbol) separates tokens.
func wordTokens(folded string) []string {
	return strings.FieldsFunc(folded, func(r rune) bool {
		return r != '\'' && !unicode.IsLetter(r) && !unicode.IsMark(r)
	})
}

// queryWords returns the words of a phonetic query: the tokens with their
// apostrophes removed ("O'Brien" -> "obrien"), without duplicates, in order.
func queryWords(s string) []string {
	var out []string
	for _, t := range wordTokens(Normalize(s, true)) {
		if w := strings.ReplaceAll(t, "'", ""); w != "" && !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	return out
}

// valueWords returns the words of a stored value, given as
// Normalize(value, true): like queryWords, plus,
// for a token with apostrophes, each apostrophe-separated part of at least
// two runes ("D'Angelo" -> "dangelo", "angelo"), so that the value is found
// both as written and by its main part.
func valueWords(folded string) []string {
	var out []string
	add := func(w string) {
		if w != "" && !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	for _, t := range wordTokens(folded) {
		add(strings.ReplaceAll(t, "'", ""))
		if strings.Contains(t, "'") {
			for _, p := range strings.Split(t, "'") {
				if len([]rune(p)) >= 2 {
					add(p)
				}
			}
		}
	}
	return out
}

// wordKeys returns the distinct phonetic keys of one word (phonetic.Keys).
func wordKeys(w string) []string {
	var ks []string
	for _, k := range phonetic.Keys(w) {
		if k != "" {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return slices.Compact(ks)
}

// valueKeySet is the union of the keys of all words of a stored value.
func valueKeySet(s string) map[string]bool {
	set := map[string]bool{}
	for _, w := range valueWords(Normalize(s, true)) {
		for _, k := range wordKeys(w) {
			set[k] = true
		}
	}
	return set
}
