package blindindex

import (
	"fmt"
	"strings"
	"time"
)

// civil is a proleptic Gregorian calendar date with a year in 1..9999.
type civil struct{ y, m, d int }

func (c civil) dayText() string   { return fmt.Sprintf("%04d-%02d-%02d", c.y, c.m, c.d) }
func (c civil) yearText() string  { return fmt.Sprintf("%04d", c.y) }
func (c civil) monthText() string { return fmt.Sprintf("%04d-%02d", c.y, c.m) }

func (c civil) time() time.Time { return time.Date(c.y, time.Month(c.m), c.d, 0, 0, 0, 0, time.UTC) }

func fromTime(t time.Time) civil {
	y, m, d := t.Date()
	return civil{y, int(m), d}
}

// before reports whether c is earlier than o.
func (c civil) before(o civil) bool {
	if c.y != o.y {
		return c.y < o.y
	}
	if c.m != o.m {
		return c.m < o.m
	}
	return c.d < o.d
}

func isLeap(y int) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }

func daysIn(y, m int) int {
	switch m {
	case 2:
		if isLeap(y) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// digitsAt parses s[i:i+n] as an unsigned decimal of exactly n ASCII digits.
func digitsAt(s string, i, n int) (int, bool) {
	if i+n > len(s) {
		return 0, false
	}
	v := 0
	for _, c := range []byte(s[i : i+n]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

// parseISODate parses exactly "YYYY-MM-DD" (year 0001..9999, a real date).
func parseISODate(s string) (civil, bool) {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return civil{}, false
	}
	y, ok1 := digitsAt(s, 0, 4)
	m, ok2 := digitsAt(s, 5, 2)
	d, ok3 := digitsAt(s, 8, 2)
	if !ok1 || !ok2 || !ok3 || y < 1 || m < 1 || m > 12 || d < 1 || d > daysIn(y, m) {
		return civil{}, false
	}
	return civil{y, m, d}, true
}

// parseStoredDate reads the date of PostgreSQL canonical date, timestamp or
// timestamptz text: "YYYY-MM-DD", optionally followed by ' ' or 'T' and a
// time. BC dates (" BC" suffix), "infinity", "-infinity", years beyond 9999
// and anything else give no date.
func parseStoredDate(s string) (civil, bool) {
	if strings.HasSuffix(s, " BC") {
		return civil{}, false
	}
	if len(s) > 10 && s[10] != ' ' && s[10] != 'T' {
		return civil{}, false
	}
	return parseISODate(s[:min(len(s), 10)])
}

// parseYear parses "YYYY" (0001..9999).
func parseYear(s string) (int, bool) {
	y, ok := digitsAt(s, 0, 4)
	return y, ok && len(s) == 4 && y >= 1
}

// parseYearMonth parses "YYYY-MM".
func parseYearMonth(s string) (y, m int, ok bool) {
	if len(s) != 7 || s[4] != '-' {
		return 0, 0, false
	}
	y, ok1 := parseYear(s[:4])
	m, ok2 := digitsAt(s, 5, 2)
	return y, m, ok1 && ok2 && m >= 1 && m <= 12
}

// age is the age in whole years on day t of a person born on b: the
// number of birthdays that have come by t. The birthday of someone born on
// 29 February falls on 1 March in years that are not leap years. Negative
// when b is after t.
//
// Comparing (month, day) of t with that of b gives exactly this rule: in a
// common year no day compares equal to (2, 29), and (2, 28) < (2, 29) <=
// (3, 1).
func age(b, t civil) int {
	a := t.y - b.y
	if t.m < b.m || (t.m == b.m && t.d < b.d) {
		a--
	}
	return a
}

// latestWithAge returns the latest birth date whose age on t is at least a
// (a >= 0): the same month and day a years earlier, 28 February when t is
// 29 February and that year is common. ok is false when that is before
// 0001-01-01.
func latestWithAge(t civil, a int) (civil, bool) {
	c := civil{t.y - a, t.m, t.d}
	if c.y < 1 {
		return civil{}, false
	}
	if c.d > daysIn(c.y, c.m) {
		c.d = daysIn(c.y, c.m)
	}
	return c, true
}

// ageInterval returns the birth dates [lo, hi] whose age on t lies in
// [minAge, maxAge], clipped to 0001-01-01; empty is true when there are
// none. Because age never increases with a later birth date, the set is the
// interval (latestWithAge(maxAge+1), latestWithAge(minAge)].
func ageInterval(t civil, minAge, maxAge int) (lo, hi civil, empty bool) {
	hi, ok := latestWithAge(t, minAge)
	if !ok {
		return civil{}, civil{}, true
	}
	lo = civil{1, 1, 1}
	if l, ok := latestWithAge(t, maxAge+1); ok {
		lo = fromTime(l.time().AddDate(0, 0, 1))
	}
	return lo, hi, hi.before(lo)
}

// dateTerm is one term message of an interval cover.
type dateTerm struct {
	sub SubKind
	msg string
}

// coverInterval covers [lo, hi] with the fewest terms: whole calendar years
// as date/year terms, whole months as date/month terms and the remaining
// days as date/day terms. Walking from lo, it takes the largest aligned unit
// that starts on the current day and ends by hi. (Units nest and align, so
// the cover is days up to the first month start, months up to the first year
// start, years, then months and days of the tail: minimal.)
func coverInterval(lo, hi civil) []dateTerm {
	var out []dateTerm
	d := lo
	for !hi.before(d) {
		switch {
		case d.m == 1 && d.d == 1 && !hi.before(civil{d.y, 12, 31}):
			out = append(out, dateTerm{SubYear, d.yearText()})
			d = civil{d.y + 1, 1, 1}
		case d.d == 1 && !hi.before(civil{d.y, d.m, daysIn(d.y, d.m)}):
			out = append(out, dateTerm{SubYearMonth, d.monthText()})
			d = fromTime(d.time().AddDate(0, 1, 0))
		default:
			out = append(out, dateTerm{SubDate, d.dayText()})
			d = fromTime(d.time().AddDate(0, 0, 1))
		}
	}
	return out
}
