package blindindex

import (
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/pgphi/pgphi/phonetic"
)

// The oracle tests build every row from a ground truth ("base": a string
// already in normalized form, FoldAccents on) and store a random spelling of
// it ("shown": case, accents, full-width letters, typographic apostrophes and
// hyphens, odd white space, harakat). Oracles are computed on the bases
// only, independently of Normalize and of the index; the test then checks
// for every query and row that
//
//  1. Plan.Match(shown) equals the oracle, and
//  2. every matching row is a candidate of the plan's groups (no false
//     negatives from the index),
//
// with 8-bit terms, so that the index yields many false positives that only
// Match removes.

var baseWords = []string{
	"john", "jon", "jane", "jean", "june", "joan", "smith", "smyth", "schmidt",
	"garcia", "jose", "muller", "mueller", "zoe", "strasse", "anna", "ana",
	"lodz", "orsted", "aesir", "thor", "nguyen", "lee", "li", "catherine",
	"kathryn", "stephen", "steven", "mohammed", "muhammad", "mary", "marie",
	"maria", "o'brien", "obrien", "d'angelo", "angelo", "jean-pierre", "kim",
	"isik", "dorde", "cohen", "kohn", "philip", "filip", "sean", "shawn",
	"李", "小龙", "王芳", "محمد", "علي", "иван", "петр", "😀", "👍🏽", "x", "ab",
}

// randomBase joins 0 to 3 base words with spaces or hyphens.
func randomBase(r *rand.Rand) string {
	n := 1 + r.IntN(3)
	if r.IntN(20) == 0 {
		n = 0
	}
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString([]string{" ", " ", "-"}[r.IntN(3)])
		}
		b.WriteString(baseWords[r.IntN(len(baseWords))])
	}
	return b.String()
}

// spell returns a random spelling of a base that must normalize to it.
func spell(r *rand.Rand, base string) string {
	var b strings.Builder
	if r.IntN(4) == 0 {
		b.WriteString([]string{" ", "\t", "\u00a0", "\u3000 "}[r.IntN(4)])
	}
	rs := []rune(base)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		next := rune(0)
		if i+1 < len(rs) {
			next = rs[i+1]
		}
		pick := func(opts ...string) bool {
			if r.IntN(3) != 0 {
				return false
			}
			b.WriteString(opts[r.IntN(len(opts))])
			return true
		}
		switch {
		case c == 's' && next == 's' && pick("ß", "ẞ", "SS", "sS"):
			i++
			continue
		case c == 'a' && next == 'e' && pick("æ", "Æ"):
			i++
			continue
		case c == 'o' && next == 'e' && pick("œ", "Œ"):
			i++
			continue
		case c == 't' && next == 'h' && pick("þ", "Þ"):
			i++
			continue
		case c == 'a' && pick("á", "À", "ä", "Å", "a\u0301", "ａ", "Ａ"):
		case c == 'e' && pick("é", "È", "ê", "Ë", "e\u0308", "ｅ"):
		case c == 'i' && pick("í", "Ï", "İ", "ı", "i\u0301"):
		case c == 'o' && pick("ó", "Ö", "ø", "Ø", "o\u0338"):
		case c == 'u' && pick("ü", "Ú", "u\u0308\u0301"):
		case c == 'n' && pick("ñ", "Ñ"):
		case c == 'c' && pick("ç", "Ç"):
		case c == 'd' && pick("đ", "Đ", "ð", "Ð"):
		case c == 'l' && pick("ł", "Ł"):
		case c == 'h' && pick("ħ", "Ħ"):
		case c == 'z' && pick("ž", "Ž", "ź"):
		case c >= 'a' && c <= 'z' && pick(strings.ToUpper(string(c)), string(c-'a'+'Ａ'), string(c-'a'+'ａ')):
		case c == '\'' && pick("’", "‘", "ʼ", "´", "`"):
		case c == '-' && pick("‐", "‑", "–", "−"):
		case c == ' ' && pick("  ", "\t", "\u00a0", "\u3000", "\r\n", " \u2003 "):
		case c >= 'а' && c <= 'я' && pick(strings.ToUpper(string(c))):
		case c == 'е' && pick("ё", "Ё"):
		default:
			b.WriteRune(c)
			if c >= 0x0621 && c <= 0x064A && r.IntN(2) == 0 {
				b.WriteRune([]rune{0x064E, 0x064F, 0x0650, 0x0651, 0x0652}[r.IntN(5)])
			}
		}
	}
	if r.IntN(4) == 0 {
		b.WriteString([]string{" ", "\n", "\u00a0"}[r.IntN(3)])
	}
	return b.String()
}

type textRow struct{ base, shown string }

func textRows(r *rand.Rand, n int) []textRow {
	rows := make([]textRow, n)
	for i := range rows {
		b := randomBase(r)
		rows[i] = textRow{b, spell(r, b)}
	}
	return rows
}

// substringOf returns a random rune substring of s (or a prefix), trimmed,
// mostly of at least 3 runes.
func substringOf(r *rand.Rand, s string, prefix bool) string {
	rs := []rune(s)
	if len(rs) == 0 {
		return ""
	}
	i := 0
	if !prefix {
		i = r.IntN(len(rs))
	}
	j := i + 1 + r.IntN(len(rs)-i)
	if r.IntN(4) != 0 { // mostly long enough to search
		j = min(len(rs), max(j, i+3+r.IntN(4)))
	}
	return strings.TrimSpace(string(rs[i:j]))
}

func TestSpellingsNormalizeToBase(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		b := randomBase(r)
		if s := spell(r, b); Normalize(s, true) != b {
			t.Fatalf("Normalize(%q) = %q, want %q", s, Normalize(s, true), b)
		}
	}
}

// oracleWords splits a base into the phonetic words of a value (query
// false) or of a query (query true), written independently of words.go.
var nonWord = regexp.MustCompile(`[^\p{L}\p{M}']+`)

func oracleWords(base string, query bool) []string {
	var out []string
	for _, tok := range nonWord.Split(base, -1) {
		if j := strings.ReplaceAll(tok, "'", ""); j != "" {
			out = append(out, j)
		}
		if !query && strings.Contains(tok, "'") {
			for _, p := range strings.Split(tok, "'") {
				if utf8.RuneCountInString(p) > 1 {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

var oracleKeys sync.Map // word -> []string, to keep the test fast

func keysOf(w string) []string {
	if k, ok := oracleKeys.Load(w); ok {
		return k.([]string)
	}
	k := phonetic.Keys(w)
	oracleKeys.Store(w, k)
	return k
}

func soundAlike(a, b string) bool {
	for _, k := range keysOf(a) {
		if slices.Contains(keysOf(b), k) {
			return true
		}
	}
	return false
}

func oraclePhonetic(row, q string) bool {
	vw := oracleWords(row, false)
	for _, qw := range oracleWords(q, true) {
		if !slices.ContainsFunc(vw, func(w string) bool { return soundAlike(qw, w) }) {
			return false
		}
	}
	return true
}

// checkPlan runs one query over all rows and returns the number of matches
// and of candidates that Match rejected.
func checkPlan(t *testing.T, what string, p *Plan, shown []string, terms [][]int64, oracle func(i int) bool) (matches, falsePos int) {
	t.Helper()
	return checkPlanSample(t, what, p, shown, terms, oracle, 1)
}

// checkPlanSample is checkPlan evaluating Match (and the oracle) on every
// candidate but only on every sample-th other row (Match is slow for
// phones); across many queries every row is still checked many times.
func checkPlanSample(t *testing.T, what string, p *Plan, shown []string, terms [][]int64, oracle func(i int) bool, sample int) (matches, falsePos int) {
	t.Helper()
	off := len(what) % sample
	for i, s := range shown {
		if i%sample != off && !p.Candidate(terms[i]) {
			continue
		}
		m := p.Match(s)
		if o := oracle(i); m != o {
			t.Fatalf("%s: Match(%q) = %v, oracle %v", what, s, m, o)
		}
		cand := p.Candidate(terms[i])
		if m && !cand {
			t.Fatalf("%s: row %q matches but is not a candidate (false negative)", what, s)
		}
		if m {
			matches++
		} else if cand {
			falsePos++
		}
	}
	return matches, falsePos
}

func TestOracleText(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	c := newTestColumn(t, "text", []Kind{Exact, Prefix, Contains, Phonetic}, Defaults(), 8)
	rows := textRows(r, 2000)
	shown := make([]string, len(rows))
	terms := make([][]int64, len(rows))
	for i, row := range rows {
		shown[i] = row.shown
		terms[i] = c.Terms(nil, row.shown)
	}
	type stats struct{ queries, errs, matches, fp int }
	st := map[QueryKind]*stats{}
	for _, k := range []QueryKind{QExact, QPrefix, QContains, QPhonetic} {
		st[k] = &stats{}
	}
	for n := range 1000 {
		kind := []QueryKind{QExact, QPrefix, QContains, QPhonetic}[n%4]
		// The query's base: mostly taken from a row, sometimes fresh.
		src := rows[r.IntN(len(rows))].base
		if r.IntN(5) == 0 {
			src = randomBase(r)
		}
		qb := src
		switch kind {
		case QPrefix:
			qb = substringOf(r, src, true)
		case QContains:
			qb = substringOf(r, src, false)
		case QPhonetic:
			if ws := oracleWords(src, true); len(ws) > 0 && r.IntN(2) == 0 {
				qb = ws[r.IntN(len(ws))]
			}
		}
		qshown := spell(r, qb)
		s := st[kind]
		s.queries++
		p, err := c.Query(Query{Kind: kind, Value: qshown})
		// Expected errors, from the base.
		var wantErr bool
		switch kind {
		case QExact:
			wantErr = qb == ""
		case QPrefix, QContains:
			wantErr = utf8.RuneCountInString(qb) < 3
		case QPhonetic:
			ws := oracleWords(qb, true)
			wantErr = len(ws) == 0 || slices.ContainsFunc(ws, func(w string) bool { return len(phonetic.Keys(w)) == 0 })
		}
		if (err != nil) != wantErr {
			t.Fatalf("%s %q: err %v, want error %v", kind, qshown, err, wantErr)
		}
		if err != nil {
			s.errs++
			continue
		}
		var oracle func(i int) bool
		switch kind {
		case QExact:
			oracle = func(i int) bool { return rows[i].base == qb }
		case QPrefix:
			oracle = func(i int) bool { return strings.HasPrefix(rows[i].base, qb) }
		case QContains:
			oracle = func(i int) bool { return strings.Contains(rows[i].base, qb) }
		case QPhonetic:
			oracle = func(i int) bool { return oraclePhonetic(rows[i].base, qb) }
		}
		m, fp := checkPlan(t, string(kind)+" "+qshown, p, shown, terms, oracle)
		s.matches += m
		s.fp += fp
	}
	for k, s := range st {
		t.Logf("%-9s %4d queries, %3d refused, %6d matches, %6d false positives removed by Match", k, s.queries, s.errs, s.matches, s.fp)
		if s.matches == 0 || s.fp == 0 {
			t.Errorf("%s: the test needs both matches and false positives", k)
		}
	}
}

// TestPhoneticNames checks the names the old design lumped together.
func TestPhoneticNames(t *testing.T) {
	c := newTestColumn(t, "ph", []Kind{Phonetic}, Defaults(), 56)
	names := []string{"John", "Jon", "Jane", "Jean", "June", "Smith", "Smyth", "O'Brien", "Jean-Pierre Dupont", "Zoë Müller"}
	find := func(q string) []string {
		p, err := c.Query(Query{Kind: QPhonetic, Value: q})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range names {
			if p.Match(n) {
				if !p.Candidate(c.Terms(nil, n)) {
					t.Fatalf("%q matches %q but is not a candidate", q, n)
				}
				out = append(out, n)
			}
		}
		return out
	}
	for q, want := range map[string][]string{
		"Jon":        {"John", "Jon"},
		"Jane":       {"Jane"},
		"Smith":      {"Smith", "Smyth"},
		"OBrien":     {"O'Brien"},
		"Brien":      {"O'Brien"},
		"pierre":     {"Jean-Pierre Dupont"},
		"dupont jon": nil,
		"Mueller":    {"Zoë Müller"},
	} {
		if got := find(q); !slices.Equal(got, want) {
			t.Errorf("phonetic %q found %q, want %q", q, got, want)
		}
	}
}
