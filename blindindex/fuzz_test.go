package blindindex

import (
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// Fuzz targets of the normalizer and the term families. Seeds are below and
// in testdata/fuzz/; run one with
//
//	go test -run '^$' -fuzz FuzzNormalize -fuzztime 60s ./blindindex/

// fuzzSeedStrings are the hard cases of normalization and search: accents in
// composed and decomposed form, typographic apostrophes and dashes,
// compatibility characters, scripts whose marks must survive, case folding
// that changes length, white space of every kind, phone numbers and dates.
var fuzzSeedStrings = []string{
	"",
	" ",
	"Smith",
	"  maría   josé ",
	"José", "Jose\u0301",
	"O’Brien", "D'Angelo", "O`Neil", "l´été",
	"Jean–Luc", "Smith‐Jones", "a\u2212b",
	"Straße", "STRASSE", "İstanbul", "ǅemal", "ﬁle", "Ａｂｃ", "①②", "㍿",
	"ø æ œ ł đ ð þ ħ ı",
	"王伟", "李娜", "محمد", "فاطمة", "हिन्दी", "ภาษาไทย", "が", "か\u3099", "ｶﾞ",
	"Емоджи 😀 🎉", "❤\ufe0f", "👨\u200d👩\u200d👧",
	"a\u00a0b\u3000c\u2028d\u0085e\tf\ng\rh\vi\fj",
	"\xff\xfeinvalid", "a\x00b", "\u0345\u0345", "\u1e9b\u0323", "\u0f73", "\u0344",
	"+1 415 555 0132", "(415) 555-0132", "415.555.0199", "+44 20 7946 0958",
	"+254 712 345678", "n/a", "12", "0132", "+1 415",
	"2000-02-29", "1999-12-31", "2024-02-29 13:45:30.5", "0001-01-01", "9999-12-31",
	"2023-02-29", "infinity", "-infinity", "4713-01-01 BC", "2000", "2000-02",
	"Schmidt", "Smyth", "Jon", "John", "Jane", "Ng", "Xu", "Mc'Donald", "'''",
}

// FuzzNormalize checks that Normalize is idempotent, always returns valid
// UTF-8 with its white space collapsed, and that the ASCII fast path agrees
// with the general path.
func FuzzNormalize(f *testing.F) {
	for _, s := range fuzzSeedStrings {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, fold bool) {
		n := Normalize(s, fold)
		if !utf8.ValidString(n) {
			t.Fatalf("Normalize(%q, %v) = %q is not valid UTF-8", s, fold, n)
		}
		if again := Normalize(n, fold); again != n {
			t.Fatalf("Normalize not idempotent for %q (fold %v): %q -> %q", s, fold, n, again)
		}
		if strings.HasPrefix(n, " ") || strings.HasSuffix(n, " ") || strings.Contains(n, "  ") {
			t.Fatalf("Normalize(%q, %v) = %q: white space not trimmed and collapsed", s, fold, n)
		}
		for _, r := range n {
			if r != ' ' && unicode.IsSpace(r) {
				t.Fatalf("Normalize(%q, %v) = %q keeps white space %U", s, fold, n, r)
			}
		}
		if isASCII(s) {
			if slow := normalizeSlow(s, fold); slow != n {
				t.Fatalf("ASCII fast path %q != general path %q for %q (fold %v)", n, slow, s, fold)
			}
		}
		if fold {
			// Every value's words are taken from the folded form; the phonetic
			// key set must be computable for anything Normalize returns.
			_ = valueKeySet(n)
		}
	})
}

// fuzzColumn is a column with every search kind, keys derived from a fixed
// seed and a short truncation (many coincidences: more candidates, which
// does not matter to the properties checked).
func fuzzColumn(t testing.TB, o Options) *Column {
	t.Helper()
	kinds := []Kind{Exact, Prefix, Contains, Phonetic, Phone, Date}
	subs := SubKinds(kinds, o)
	ks := map[SubKind][]byte{}
	bits := map[SubKind]int{}
	for _, s := range subs {
		k := sha256.Sum256([]byte("pgphi fuzz\x00" + string(s)))
		ks[s] = k[:]
		bits[s] = 24
	}
	c, err := NewColumn(kinds, o, ks, bits)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var fuzzToday = time.Date(2025, 6, 15, 12, 0, 0, 0, time.UTC)

// fuzzMaxInput bounds inputs: phone parsing refuses longer text anyway and
// long inputs only slow the fuzzer down.
const fuzzMaxInput = 300

// FuzzTermsAndQuery checks, for an arbitrary stored value and query text:
// Terms and Query never panic; terms are sorted and distinct and leave dst
// alone; every query either plans or fails with ErrInvalidQuery; plan groups
// are sorted, distinct and never nil; and whenever a plan's exact predicate
// accepts the value, the value's terms make it a candidate (no false
// negatives). Queries are built both from the query text and from the value
// itself (its exact text, its prefixes, a substring, its last four digits,
// its year and month), so the predicate does accept the value often.
func FuzzTermsAndQuery(f *testing.F) {
	for i, s := range fuzzSeedStrings {
		q := fuzzSeedStrings[(i*7+3)%len(fuzzSeedStrings)]
		f.Add(s, q, uint8(i%80), uint8(i%80+10), uint8(i%3))
		f.Add(s, s, uint8(0), uint8(200), uint8(0))
	}
	f.Add("José Núñez", "nunez", uint8(25), uint8(25), uint8(1))
	f.Add("1996-02-29", "1996", uint8(29), uint8(29), uint8(0))
	f.Add("+1 (212) 555-0188", "212 555 0188", uint8(0), uint8(0), uint8(2))
	cols := map[uint8]*Column{}
	for i, o := range []Options{
		Defaults(),
		{PrefixMin: 1, PrefixMax: 2, TokenSize: 2, FoldAccents: false, PhoneRegion: "KE"},
		{PrefixMin: 2, PrefixMax: 8, TokenSize: 4, FoldAccents: true, PhoneRegion: ""},
	} {
		cols[uint8(i)] = fuzzColumn(f, o)
	}
	f.Fuzz(func(t *testing.T, value, query string, minAge, maxAge, variant uint8) {
		if len(value) > fuzzMaxInput || len(query) > fuzzMaxInput {
			return
		}
		c := cols[variant%3]
		prefix := []int64{-1, 42}
		terms := c.Terms(slices.Clone(prefix), value)
		if !slices.Equal(terms[:2], prefix) {
			t.Fatalf("Terms changed dst: %v", terms[:2])
		}
		terms = terms[2:]
		if !slices.IsSorted(terms) || len(slices.Compact(slices.Clone(terms))) != len(terms) {
			t.Fatalf("Terms(%q) not sorted and distinct: %v", value, terms)
		}
		for _, tm := range terms {
			if tm < 0 {
				t.Fatalf("Terms(%q) has a negative term %d", value, tm)
			}
		}

		queries := fuzzQueries(value, query, c.Options())
		queries = append(queries, Query{Kind: QAgeBetween, MinAge: int(minAge), MaxAge: int(maxAge), Today: fuzzToday})
		for _, q := range queries {
			plan, err := c.Query(q)
			if err != nil {
				if !errors.Is(err, ErrInvalidQuery) {
					t.Fatalf("Query(%s %q) failed with %v, want ErrInvalidQuery", q.Kind, q.Value, err)
				}
				continue
			}
			for _, g := range plan.Groups {
				if g == nil || !slices.IsSorted(g) || len(slices.Compact(slices.Clone(g))) != len(g) {
					t.Fatalf("Query(%s %q): group %v is nil, unsorted or has duplicates", q.Kind, q.Value, g)
				}
			}
			if plan.Match(value) && !plan.Candidate(terms) {
				t.Fatalf("Query(%s %q) matches value %q but its terms %v are not a candidate of groups %v (variant %d)",
					q.Kind, q.Value, value, terms, plan.Groups, variant%3)
			}
		}

		// An exact query built from the value always plans (unless the value
		// is empty after normalization) and finds the value.
		if Normalize(value, c.Options().FoldAccents) != "" {
			plan, err := c.Query(Query{Kind: QExact, Value: value})
			if err != nil {
				t.Fatalf("exact query of its own value %q: %v", value, err)
			}
			if !plan.Match(value) || !plan.Candidate(terms) {
				t.Fatalf("exact query of its own value %q does not find it", value)
			}
		}
	})
}

// fuzzQueries builds queries of every kind from the query text and from the
// value.
func fuzzQueries(value, query string, o Options) []Query {
	var qs []Query
	text := []QueryKind{QExact, QPrefix, QContains, QPhonetic, QPhone, QLast4, QAreaCode, QDate, QYear, QYearMonth}
	for _, k := range text {
		qs = append(qs, Query{Kind: k, Value: query}, Query{Kind: k, Value: value})
	}
	n := Normalize(value, o.FoldAccents)
	runes := []rune(n)
	for l := 1; l <= len(runes) && l <= o.PrefixMax+1; l++ {
		qs = append(qs, Query{Kind: QPrefix, Value: string(runes[:l])})
	}
	if len(runes) > 0 {
		// A substring chosen by the query text's length.
		from := len(query) % len(runes)
		to := min(len(runes), from+max(o.TokenSize, len(query)%7))
		qs = append(qs, Query{Kind: QContains, Value: string(runes[from:to])})
	}
	var digits []byte
	for i := 0; i < len(value); i++ {
		if value[i] >= '0' && value[i] <= '9' {
			digits = append(digits, value[i])
		}
	}
	if len(digits) >= 4 {
		qs = append(qs, Query{Kind: QLast4, Value: string(digits[len(digits)-4:])})
	}
	if len(digits) >= 6 {
		qs = append(qs, Query{Kind: QAreaCode, Value: string(digits[:3])}, Query{Kind: QAreaCode, Value: "+" + string(digits[:1]) + " " + string(digits[1:4])})
	}
	if len(value) >= 7 {
		qs = append(qs, Query{Kind: QYear, Value: value[:4]}, Query{Kind: QYearMonth, Value: value[:7]})
	}
	if len(value) >= 10 {
		qs = append(qs, Query{Kind: QDate, Value: value[:10]})
	}
	return qs
}
