// Package blindindex owns pgphi's blind index terms: the normalization of
// values, the term kinds of each search kind, their keyed and truncated
// encoding, query terms with exact match predicates, the truncation
// planner and the leakage measurement.
//
// A protected column stores, next to its randomized ciphertext, a bigint[]
// of terms. A term is a 64-bit integer: an 8-bit tag naming its sub-kind
// (Tag) and the first bits (0..56) of HMAC-SHA256 under a key of its own
// over a normalized token. Callers derive one key per table, column and
// sub-kind: HKDF with purpose "blind-index" and contexts table, column,
// sub-kind (docs/FORMAT.md section 1.4). Terms are
// deliberately short, so many values share each term: a search finds
// candidate rows through a GIN index on the terms (Plan.Groups), decrypts
// them and keeps exactly the rows whose plaintext satisfies Plan.Match. The
// result has neither false positives nor false negatives.
//
// Search kinds and their sub-kinds:
//
//	exact     exact                           the whole normalized value
//	prefix    prefix/3, prefix/4, prefix/5    its first N runes (PrefixMin..PrefixMax)
//	contains  contains                        every distinct n-gram of runes (TokenSize)
//	phonetic  phonetic                        phonetic keys of each word (package phonetic)
//	phone     phone/e164, phone/last4, phone/area
//	date      date/day, date/year, date/month  (age ranges are computed at query time)
//
// Each search kind is one file behind one interface (kind.go: its
// sub-kinds, the messages of a value, its queries, how a Measurer costs
// them and its rank in the joint budget): kind_exact.go, kind_prefix.go,
// kind_contains.go, kind_phonetic.go, kind_phone.go, kind_date.go. Sizing
// (sizing.go, distinct.go) chooses bits from distinct values under a budget
// per sub-kind and per column; leakage.go measures what the terms leak.
//
// docs/SEARCH.md specifies the terms byte for byte and the leakage of each
// kind; testdata/search-vectors.json holds vectors generated from this
// package, which an independent implementation (testdata/independent)
// recomputes in the test suite.
//
// Guarantees: for a given FormatVersion, key, truncation and StoredOptions,
// the terms of a value made of code points assigned in Unicode 15.0.0 never
// change between releases (a change would be a new FormatVersion, with the
// old one still computable); Normalize is
// idempotent and runs identically at write and query time; a value matches
// a query (Plan.Match) exactly when its plaintext satisfies the query, so
// truncation adds candidates, never results. The Unicode tables behind
// Normalize are Unicode 15.0.0 (Go's unicode package and golang.org/x/text
// before Go 1.27, which switches golang.org/x/text to its 17.0.0 tables):
// code points assigned in 15.0.0 normalize the same under any later version;
// others may not.
package blindindex
