package blindindex

import (
	"strings"
	"time"
)

// dateKind: the day, year and month of a date; queries by day, year, month
// and age range (computed at query time).
type dateKind struct{}

func (dateKind) subKinds(Options) []SubKind { return []SubKind{SubDate, SubYear, SubYearMonth} }

func (dateKind) messages(_ *Column, v *valueText, emit func(SubKind, string)) {
	if d, ok := parseStoredDate(v.raw); ok {
		emit(SubDate, d.dayText())
		emit(SubYear, d.yearText())
		emit(SubYearMonth, d.monthText())
	}
}

func (dateKind) queryKinds() []QueryKind {
	return []QueryKind{QDate, QYear, QYearMonth, QAgeBetween}
}

func (dateKind) query(c *Column, q Query) (*Plan, error) {
	switch q.Kind {
	case QDate:
		d, ok := parseISODate(strings.TrimSpace(q.Value))
		if !ok {
			return nil, invalid("date query needs a date YYYY-MM-DD")
		}
		// The same day is in the same month and year: AND them.
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

	default: // QAgeBetween
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
}

func (dateKind) measured(*Column) []measuredQuery {
	return []measuredQuery{
		{QDate, []SubKind{SubDate, SubYearMonth, SubYear}, true},
		{QYearMonth, []SubKind{SubYearMonth, SubYear}, true},
		{QYear, []SubKind{SubYear}, false},
	}
}

// budget: day (queried with month and year) and month (with year) give up
// bits first; the year is queried alone.
func (dateKind) budget(s SubKind, _ Options) (int, int) {
	switch s {
	case SubDate:
		return 1, 2
	case SubYearMonth:
		return 1, 40
	}
	return 2, 60
}

func (dateKind) termsPerRow(SubKind, float64, Options) float64 { return 1 }
