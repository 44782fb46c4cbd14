package blindindex

import (
	"errors"
	"fmt"
	"slices"
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
	return registry[need].query(c, q)
}

// plan builds a Plan from the groups selectGroups keeps, each group sorted
// and deduplicated and repeated groups removed.
func (c *Column) plan(match func(string) bool, groups ...[]int64) *Plan {
	p := &Plan{Match: match}
	for _, g := range c.selectGroups(groups) {
		g = append([]int64{}, g...) // never nil: pgx would send NULL
		slices.Sort(g)
		g = slices.Compact(g)
		if !slices.ContainsFunc(p.Groups, func(h []int64) bool { return slices.Equal(g, h) }) {
			p.Groups = append(p.Groups, g)
		}
	}
	return p
}

// enoughShare is the expected share of rows a query's first group may let
// through for it to be sent alone: about fifteen rows in a million.
const enoughShare = 1.0 / (1 << 16)

// selectGroups returns the groups a query sends. Leaving a group out only
// adds candidates, which Match removes, while every group sent makes GIN
// read its posting list:
//
//   - a weak group (more than half of the rows hold one of its terms, such
//     as a 0-bit term, the tag alone, or one n-gram of a contains family
//     sized to a few bits) is left out when other groups remain: an exact
//     query on a repeated surname under the privacy budget took two to
//     three times as long with its 1-bit n-gram and phonetic terms as
//     without them, for the same candidates;
//   - a query lists its most specific group first (an exact query its
//     exact term, a prefix query its longest prefix); when that group
//     alone lets through at most enoughShare of the rows it is sent alone:
//     with many bits an exact query's own term already singles out its
//     value, and the dozen posting lists of its prefix, n-gram and phonetic
//     terms, some of a tenth of the table, only slow it down. (The other
//     groups are not independent of the first: a value with the same first
//     five letters has most of the same n-grams, so their shares do not
//     multiply.)
func (c *Column) selectGroups(groups [][]int64) [][]int64 {
	var strong [][]int64
	for _, g := range groups {
		if c.groupShare(g) <= 0.5 {
			strong = append(strong, g)
		}
	}
	if len(strong) == 0 {
		return groups
	}
	if c.groupShare(strong[0]) <= enoughShare {
		return strong[:1]
	}
	return strong
}

// groupShare is the expected share of rows that hold one of the group's
// terms (Column.admit), at most 1.
func (c *Column) groupShare(g []int64) float64 {
	share := 0.0
	for _, t := range g {
		share += c.admit[byte(uint64(t)>>56)]
	}
	return min(share, 1)
}
