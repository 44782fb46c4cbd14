package blindindex

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// QueryKind names a search a user asks for.
type QueryKind string

// Query kinds and the search kind each needs on the column.
const (
	QExact      QueryKind = "exact"       // Exact: the normalized value equals the query
	QPrefix     QueryKind = "prefix"      // Prefix: the normalized value starts with the query
	QContains   QueryKind = "contains"    // Contains: the normalized value contains the query
	QPhonetic   QueryKind = "phonetic"    // Phonetic: every query word sounds like a word of the value
	QPhone      QueryKind = "phone"       // Phone: same number
	QLast4      QueryKind = "last4"       // Phone: same last four digits
	QAreaCode   QueryKind = "area-code"   // Phone: same country and area code
	QDate       QueryKind = "date"        // Date: same day (query "YYYY-MM-DD")
	QYear       QueryKind = "year"        // Date: same year (query "YYYY")
	QYearMonth  QueryKind = "year-month"  // Date: same year and month (query "YYYY-MM")
	QAgeBetween QueryKind = "age-between" // Date: MinAge <= age in whole years on Today <= MaxAge
)

// MaxAge is the largest age an age-between query accepts.
const MaxAge = 200

// Errors of Query. Messages say what is wrong with a query and never contain
// its value; test with errors.Is.
var (
	ErrNotConfigured = errors.New("blindindex: search kind not configured for this column")
	ErrInvalidQuery  = errors.New("blindindex: invalid query")
)

// Query is one search.
type Query struct {
	Kind  QueryKind
	Value string // the query text (PHI: never logged, never in errors); unused by age-between
	// MinAge and MaxAge bound an age-between query (inclusive, whole years).
	MinAge, MaxAge int
	// Today is the day ages are computed on (its year, month and day in its
	// own location). Zero means the current date in UTC.
	Today time.Time
}

// Plan is how to run a query. A row is a candidate when, for every group,
// the row's terms contain at least one of the group's terms:
//
//	col_bidx && $group1 AND col_bidx && $group2 ...
//
// An empty group matches no row (in SQL, x && '{}' is false). Candidates are
// a superset of the matches; Match, evaluated on each candidate's decrypted
// canonical text, keeps exactly the matches. A row whose plaintext satisfies
// Match is always a candidate.
type Plan struct {
	Groups [][]int64 // each sorted ascending, without duplicates
	Match  func(plaintext string) bool
}

// Candidate reports whether a row with the given terms is a candidate of p.
func (p *Plan) Candidate(terms []int64) bool {
	for _, g := range p.Groups {
		if !slices.ContainsFunc(g, func(t int64) bool { return slices.Contains(terms, t) }) {
			return false
		}
	}
	return true
}

var queryNeeds = map[QueryKind]Kind{
	QExact: Exact, QPrefix: Prefix, QContains: Contains, QPhonetic: Phonetic,
	QPhone: Phone, QLast4: Phone, QAreaCode: Phone,
	QDate: Date, QYear: Date, QYearMonth: Date, QAgeBetween: Date,
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidQuery}, args...)...)
}

// Query plans a search. It fails with ErrNotConfigured when the column does
// not have the search kind the query needs, and with ErrInvalidQuery when
// the query is empty after normalization (exact), shorter than PrefixMin
// (prefix) or TokenSize (contains) runes after normalization, has no word
// with a phonetic key (phonetic), is not a phone number with at least 4
// digits (phone), not exactly 4 digits (last4), not an area code (area-code),
// not a date "YYYY-MM-DD" / year "YYYY" / month "YYYY-MM", or has age bounds
// outside 0 <= MinAge <= MaxAge <= 200.
func (c *Column) Query(q Query) (*Plan, error) {
	need, ok := queryNeeds[q.Kind]
	if !ok {
		return nil, invalid("unknown query kind %q", string(q.Kind))
	}
	if !c.kinds[need] {
		return nil, fmt.Errorf("%w: %s search needs search kind %s", ErrNotConfigured, q.Kind, need)
	}
	switch q.Kind {
	case QExact:
		n := Normalize(q.Value, c.opt.FoldAccents)
		if n == "" {
			return nil, invalid("exact query is empty after normalization")
		}
		// A matching value has the same normalized text, hence the same
		// prefix and n-gram terms and (when phonetic words come from the
		// same text) the same phonetic terms: the query ANDs them all, so its
		// candidates are the values sharing that part of the term array,
		// however few bits each sub-kind has.
		groups := [][]int64{{c.termString(SubExact, n)}}
		if c.kinds[Prefix] {
			for l := c.opt.PrefixMin; l <= c.opt.PrefixMax; l++ {
				p, ok := firstRunes(n, l)
				if !ok {
					break
				}
				groups = append(groups, []int64{c.termString(PrefixSubKind(l), p)})
			}
		}
		if c.kinds[Contains] {
			for _, g := range ngrams(n, c.opt.TokenSize) {
				groups = append(groups, []int64{c.termString(SubContains, g)})
			}
		}
		if c.kinds[Phonetic] && c.opt.FoldAccents {
			for _, w := range valueWords(n) {
				for _, k := range wordKeys(w) {
					groups = append(groups, []int64{c.termString(SubPhonetic, k)})
				}
			}
		}
		return c.plan(func(pt string) bool { return Normalize(pt, c.opt.FoldAccents) == n }, groups...), nil

	case QPrefix:
		n := Normalize(q.Value, c.opt.FoldAccents)
		l := min(len([]rune(n)), c.opt.PrefixMax)
		if l < c.opt.PrefixMin {
			return nil, invalid("prefix query needs at least %d characters after normalization", c.opt.PrefixMin)
		}
		// A match starts with every indexed prefix of the query: AND them.
		var groups [][]int64
		for k := c.opt.PrefixMin; k <= l; k++ {
			p, _ := firstRunes(n, k)
			groups = append(groups, []int64{c.termString(PrefixSubKind(k), p)})
		}
		return c.plan(func(pt string) bool { return strings.HasPrefix(Normalize(pt, c.opt.FoldAccents), n) }, groups...), nil

	case QContains:
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

	case QPhonetic:
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

	case QPhone:
		p, ok := parsePhone(q.Value, c.opt.PhoneRegion)
		if !ok {
			return nil, invalid("phone query needs a phone number with at least 4 digits")
		}
		return c.plan(func(pt string) bool {
			v, ok := parsePhone(pt, c.opt.PhoneRegion)
			return ok && v.number == p.number
		}, c.phoneGroups(p)...), nil

	case QLast4:
		l4, ok := parseLast4(q.Value)
		if !ok {
			return nil, invalid("last4 query needs exactly 4 digits")
		}
		return c.plan(func(pt string) bool {
			v, ok := parsePhone(pt, c.opt.PhoneRegion)
			return ok && v.last4 == l4
		}, []int64{c.termString(SubPhoneLast4, l4)}), nil

	case QAreaCode:
		areas, ok := parseAreaQuery(q.Value, c.opt.PhoneRegion)
		if !ok {
			return nil, invalid("area-code query needs \"+<country code> <area code>\", or an area code of the default region")
		}
		g := make([]int64, len(areas))
		for i, a := range areas {
			g[i] = c.termString(SubPhoneArea, a)
		}
		return c.plan(func(pt string) bool {
			v, ok := parsePhone(pt, c.opt.PhoneRegion)
			return ok && v.area != "" && slices.Contains(areas, v.area)
		}, g), nil

	case QDate:
		d, ok := parseISODate(strings.TrimSpace(q.Value))
		if !ok {
			return nil, invalid("date query needs a date YYYY-MM-DD")
		}
		return c.plan(func(pt string) bool {
			v, ok := parseStoredDate(pt)
			return ok && v == d
		}, []int64{c.termString(SubDate, d.dayText())}, []int64{c.termString(SubYearMonth, d.monthText())}, []int64{c.termString(SubYear, d.yearText())}), nil

	case QYear:
		y, ok := parseYear(strings.TrimSpace(q.Value))
		if !ok {
			return nil, invalid("year query needs a year YYYY")
		}
		return c.plan(func(pt string) bool {
			v, ok := parseStoredDate(pt)
			return ok && v.y == y
		}, []int64{c.termString(SubYear, civil{y: y}.yearText())}), nil

	case QYearMonth:
		y, m, ok := parseYearMonth(strings.TrimSpace(q.Value))
		if !ok {
			return nil, invalid("year-month query needs YYYY-MM")
		}
		return c.plan(func(pt string) bool {
			v, ok := parseStoredDate(pt)
			return ok && v.y == y && v.m == m
		}, []int64{c.termString(SubYearMonth, civil{y: y, m: m}.monthText())}, []int64{c.termString(SubYear, civil{y: y}.yearText())}), nil

	case QAgeBetween:
		if q.MinAge < 0 || q.MaxAge < q.MinAge || q.MaxAge > MaxAge {
			return nil, invalid("age bounds need 0 <= min <= max <= %d", MaxAge)
		}
		today := q.Today
		if today.IsZero() {
			today = time.Now().UTC()
		}
		t := fromTime(today)
		if t.y < 1 || t.y > 9999 {
			return nil, invalid("today is outside years 1..9999")
		}
		var g []int64
		if lo, hi, empty := ageInterval(t, q.MinAge, q.MaxAge); !empty {
			for _, dt := range coverInterval(lo, hi) {
				g = append(g, c.termString(dt.sub, dt.msg))
			}
		}
		minAge, maxAge := q.MinAge, q.MaxAge
		return c.plan(func(pt string) bool {
			b, ok := parseStoredDate(pt)
			if !ok {
				return false
			}
			a := age(b, t)
			return a >= minAge && a <= maxAge
		}, g), nil
	}
	return nil, invalid("unknown query kind %q", string(q.Kind))
}

// plan builds a Plan with each group sorted and deduplicated and repeated
// groups removed. A group of one term of a sub-kind with 0 bits (the tag
// alone, which every value with a message of that sub-kind has) is left out
// when other groups remain: it filters almost nothing, and its posting list
// is the whole table.
func (c *Column) plan(match func(string) bool, groups ...[]int64) *Plan {
	p := &Plan{Match: match}
	var kept [][]int64
	for _, g := range groups {
		if !(len(g) == 1 && c.zero[byte(g[0]>>56)]) {
			kept = append(kept, g)
		}
	}
	if len(kept) > 0 {
		groups = kept
	}
	for _, g := range groups {
		g = append([]int64{}, g...) // never nil: pgx would send NULL
		slices.Sort(g)
		g = slices.Compact(g)
		if !slices.ContainsFunc(p.Groups, func(h []int64) bool { return slices.Equal(g, h) }) {
			p.Groups = append(p.Groups, g)
		}
	}
	return p
}

// phoneGroups ANDs a number's e164 term with its last four and area terms,
// which every row with the same number has too.
func (c *Column) phoneGroups(p phoneInfo) [][]int64 {
	g := [][]int64{{c.termString(SubPhoneE164, p.number)}}
	if p.last4 != "" {
		g = append(g, []int64{c.termString(SubPhoneLast4, p.last4)})
	}
	if p.area != "" {
		g = append(g, []int64{c.termString(SubPhoneArea, p.area)})
	}
	return g
}
