package blindindex

import (
	"math"
)

// MinBits is the shortest truncation Bits chooses.
const MinBits = 4

// distinctTerms is the planner's estimate T of the distinct terms of one
// sub-kind in a table: rows × termsPerRow, and at least rows (and 1).
func distinctTerms(rows int64, termsPerRow float64) float64 {
	r := float64(max(rows, 1))
	if termsPerRow > 1 && !math.IsInf(termsPerRow, 0) {
		return r * termsPerRow
	}
	return r
}

// ExpectedCoincidences returns C = T / 2^bits, the expected number of
// distinct index terms that share one truncated term, with T the estimated
// number of distinct terms of the sub-kind in the table (rows × termsPerRow,
// at least rows). A query term then matches about C unrelated values besides
// its own, which the Match step removes after decryption; conversely an
// attacker who sees a term cannot tell which of about C values it came from.
func ExpectedCoincidences(rows int64, termsPerRow float64, bits int) float64 {
	return math.Ldexp(distinctTerms(rows, termsPerRow), -bits)
}

// Bits chooses the truncation of a sub-kind: the largest bits with
// ExpectedCoincidences(rows, termsPerRow, bits) >= 2, clamped to [4, 56].
// For such bits C lies in [2, 4), which is within CipherSweet's and the AWS
// Database Encryption SDK's guidance 2 <= C <= sqrt(rows) for every table
// of at least 16 rows: each term is shared by at least two values on
// average (so it does not single out a value) while a query decrypts only a
// few unrelated rows per term.
//
// rows should be the number of rows expected over the life of the index
// (truncation is fixed when the index is built): if the table later grows
// k-fold, C grows k-fold, costing query time, never correctness.
func Bits(rows int64, termsPerRow float64) int {
	t := distinctTerms(rows, termsPerRow)
	b := MinBits
	for b < MaxBits && math.Ldexp(t, -(b+1)) >= 2 {
		b++
	}
	return b
}

// TermsPerRow estimates the average number of terms of sub-kind s per
// non-null value whose normalized text has avgRunes runes on average:
// 1 for exact, each prefix length, phone and date sub-kinds;
// avgRunes - TokenSize + 1 (at least 1) for contains; for phonetic, the
// number of words (one per 6 runes, at least 1) times 2 keys per word.
func TermsPerRow(s SubKind, avgRunes float64, o Options) float64 {
	if k := ownerOf(s); k != nil {
		return k.termsPerRow(s, avgRunes, o.withDefaults())
	}
	return 1
}
