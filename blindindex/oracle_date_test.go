package blindindex

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// oracleAge counts birthdays with time.AddDate, which turns 29 February of
// a common year into 1 March: a method independent of age().
func oracleAge(b, today time.Time) int {
	if today.Before(b) {
		n := 0
		for today.Before(b.AddDate(n, 0, 0)) {
			n--
		}
		return n
	}
	n := 0
	for !today.Before(b.AddDate(n+1, 0, 0)) {
		n++
	}
	return n
}

func day(y, m, d int) time.Time { return time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC) }

func TestAgeRules(t *testing.T) {
	cases := []struct {
		birth, today time.Time
		want         int
	}{
		{day(2000, 2, 29), day(2001, 2, 28), 0}, // 29 February: not yet on 28 February of a common year
		{day(2000, 2, 29), day(2001, 3, 1), 1},  // ... reached on 1 March
		{day(2000, 2, 29), day(2004, 2, 28), 3},
		{day(2000, 2, 29), day(2004, 2, 29), 4}, // leap year: on the day
		{day(2000, 3, 1), day(2004, 2, 29), 3},
		{day(2000, 2, 28), day(2001, 2, 28), 1},
		{day(1990, 5, 17), day(2020, 5, 16), 29}, // day before the birthday
		{day(1990, 5, 17), day(2020, 5, 17), 30}, // on the birthday
		{day(1990, 1, 1), day(2020, 12, 31), 30},
		{day(1990, 12, 31), day(2021, 1, 1), 30},
		{day(1990, 12, 31), day(2020, 12, 31), 30},
		{day(2020, 1, 1), day(2020, 1, 1), 0},
		{day(2020, 1, 2), day(2020, 1, 1), -1},
	}
	for _, c := range cases {
		if got := age(fromTime(c.birth), fromTime(c.today)); got != c.want {
			t.Errorf("age(%s, %s) = %d, want %d", c.birth.Format(time.DateOnly), c.today.Format(time.DateOnly), got, c.want)
		}
		if got := oracleAge(c.birth, c.today); got != c.want {
			t.Errorf("oracleAge(%s, %s) = %d, want %d", c.birth.Format(time.DateOnly), c.today.Format(time.DateOnly), got, c.want)
		}
	}
	// age and the oracle agree on every pair of days over 9 years around
	// leap days and year ends.
	for b := day(1999, 12, 25); b.Before(day(2001, 1, 5)); b = b.AddDate(0, 0, 1) {
		for tt := day(2003, 12, 20); tt.Before(day(2009, 1, 10)); tt = tt.AddDate(0, 0, 3) {
			if a, o := age(fromTime(b), fromTime(tt)), oracleAge(b, tt); a != o {
				t.Fatalf("age(%v, %v) = %d, oracle %d", b, tt, a, o)
			}
		}
	}
}

// minCover is the fewest aligned year/month/day units covering [lo, hi]
// exactly, by dynamic programming over days.
func minCover(lo, hi time.Time) int {
	n := int(hi.Sub(lo).Hours()/24) + 1
	best := make([]int, n+1)
	for i := 1; i <= n; i++ {
		best[i] = 1 << 30
	}
	for i := range n {
		d := lo.AddDate(0, 0, i)
		steps := []time.Time{d.AddDate(0, 0, 1)}
		if d.Day() == 1 {
			steps = append(steps, d.AddDate(0, 1, 0))
		}
		if d.Day() == 1 && d.Month() == 1 {
			steps = append(steps, d.AddDate(1, 0, 0))
		}
		for _, e := range steps {
			j := int(e.Sub(lo).Hours() / 24)
			if j <= n {
				best[j] = min(best[j], best[i]+1)
			}
		}
	}
	return best[n]
}

func TestCoverInterval(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for range 300 {
		lo := day(1995, 1, 1).AddDate(0, 0, r.IntN(3000))
		hi := lo.AddDate(0, 0, r.IntN(1500))
		cover := coverInterval(fromTime(lo), fromTime(hi))
		if want := minCover(lo, hi); len(cover) != want {
			t.Fatalf("[%v, %v]: %d terms, minimum %d", lo, hi, len(cover), want)
		}
		// The cover is exactly the interval, without overlap.
		covered := map[string]int{}
		for _, dt := range cover {
			var from, to time.Time
			switch dt.sub {
			case SubYear:
				from, _ = time.Parse("2006", dt.msg)
				to = from.AddDate(1, 0, 0)
			case SubYearMonth:
				from, _ = time.Parse("2006-01", dt.msg)
				to = from.AddDate(0, 1, 0)
			case SubDate:
				from, _ = time.Parse(time.DateOnly, dt.msg)
				to = from.AddDate(0, 0, 1)
			}
			for d := from; d.Before(to); d = d.AddDate(0, 0, 1) {
				covered[d.Format(time.DateOnly)]++
			}
		}
		for d := day(1990, 1, 1); d.Before(day(2010, 1, 1)); d = d.AddDate(0, 0, 1) {
			in := !d.Before(lo) && !d.After(hi)
			if n := covered[d.Format(time.DateOnly)]; (in && n != 1) || (!in && n != 0) {
				t.Fatalf("[%v, %v]: %v covered %d times", lo, hi, d, n)
			}
		}
	}
	// 30 to 40 years old on 15 June 2024: born 1983-06-16 .. 1994-06-15.
	lo, hi, empty := ageInterval(civil{2024, 6, 15}, 30, 40)
	if empty || lo != (civil{1983, 6, 16}) || hi != (civil{1994, 6, 15}) {
		t.Fatalf("ageInterval = %v %v %v", lo, hi, empty)
	}
	if n := len(coverInterval(lo, hi)); n != 15+6+10+5+15 {
		t.Fatalf("cover of 30..40 has %d terms", n)
	}
}

// dateRow is a stored date value and its ground truth (ok false: no date).
type dateRow struct {
	shown string
	d     time.Time
	ok    bool
}

func TestOracleDate(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	c := newTestColumn(t, "dob", []Kind{Date}, Defaults(), 8)
	todays := []time.Time{
		day(2024, 1, 1), day(2024, 12, 31), day(2023, 1, 1), day(2023, 12, 31),
		day(2024, 2, 28), day(2024, 2, 29), day(2024, 3, 1), day(2023, 2, 28), day(2023, 3, 1),
		day(2100, 2, 28), day(2100, 3, 1), day(2000, 2, 29),
	}
	for range 8 {
		todays = append(todays, day(1990, 1, 1).AddDate(0, 0, r.IntN(20000)))
	}
	var rows []dateRow
	add := func(d time.Time) {
		s := d.Format(time.DateOnly)
		switch r.IntN(6) {
		case 0:
			s += fmt.Sprintf(" %02d:%02d:%02d", r.IntN(24), r.IntN(60), r.IntN(60))
		case 1:
			s += " 23:59:59.123456+00"
		}
		rows = append(rows, dateRow{s, d, true})
	}
	// Births on and around every today's boundaries.
	for _, td := range todays {
		for _, years := range []int{0, 1, 17, 18, 29, 30, 40, 41, 65, 100} {
			b := td.AddDate(-years, 0, 0)
			for _, off := range []int{-1, 0, 1} {
				add(b.AddDate(0, 0, off))
			}
		}
	}
	// 29 February births and random births.
	for _, y := range []int{1904, 1960, 1980, 1996, 2000, 2004, 2020, 2024} {
		add(day(y, 2, 29))
	}
	for range 1500 {
		add(day(1900, 1, 1).AddDate(0, 0, r.IntN(50000)))
	}
	for _, s := range []string{"infinity", "-infinity", "2000-01-01 BC", "", "2000-13-01", "1999-02-29", "0000-01-01", "x"} {
		rows = append(rows, dateRow{shown: s})
	}
	shown := make([]string, len(rows))
	terms := make([][]int64, len(rows))
	for i, row := range rows {
		shown[i] = row.shown
		terms[i] = c.Terms(nil, row.shown)
		if (len(terms[i]) == 3) != row.ok {
			t.Fatalf("%q: %d terms", row.shown, len(terms[i]))
		}
	}
	var matches, fp [4]int
	for n := range 800 {
		q := rows[r.IntN(len(rows)-8)].d
		var plan *Plan
		var err error
		var oracle func(i int) bool
		k := n % 4
		switch k {
		case 0:
			plan, err = c.Query(Query{Kind: QDate, Value: q.Format(time.DateOnly)})
			oracle = func(i int) bool { return rows[i].ok && rows[i].d.Equal(q) }
		case 1:
			plan, err = c.Query(Query{Kind: QYear, Value: q.Format("2006")})
			oracle = func(i int) bool { return rows[i].ok && rows[i].d.Year() == q.Year() }
		case 2:
			plan, err = c.Query(Query{Kind: QYearMonth, Value: q.Format("2006-01")})
			oracle = func(i int) bool {
				return rows[i].ok && rows[i].d.Year() == q.Year() && rows[i].d.Month() == q.Month()
			}
		case 3:
			td := todays[r.IntN(len(todays))]
			lo := []int{0, 1, 17, 18, 29, 30, 40, 64, 65, 100}[r.IntN(10)]
			hi := lo + []int{0, 0, 1, 10, 11, 35, 100}[r.IntN(7)]
			// Today in another location: only its date counts.
			tq := time.Date(td.Year(), td.Month(), td.Day(), 23, 30, 0, 0, time.FixedZone("x", -11*3600))
			plan, err = c.Query(Query{Kind: QAgeBetween, MinAge: lo, MaxAge: hi, Today: tq})
			oracle = func(i int) bool {
				if !rows[i].ok {
					return false
				}
				a := oracleAge(rows[i].d, td)
				return a >= lo && a <= hi
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		m, f := checkPlan(t, fmt.Sprint("date query ", n), plan, shown, terms, oracle)
		matches[k] += m
		fp[k] += f
	}
	t.Logf("matches (date, year, month, age) %v, false positives removed %v", matches, fp)
	for k := range 4 {
		if matches[k] == 0 || fp[k] == 0 {
			t.Errorf("query kind %d: need both matches and false positives", k)
		}
	}
}

func TestAgeQueryDefaultsToToday(t *testing.T) {
	c := newTestColumn(t, "dob", []Kind{Date}, Defaults(), 16)
	p, err := c.Query(Query{Kind: QAgeBetween, MinAge: 0, MaxAge: 0})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	// Retry around midnight UTC.
	if today := now.Format(time.DateOnly); !p.Match(today) && time.Now().UTC().Format(time.DateOnly) == today {
		t.Fatal("a baby born today is not 0 years old")
	}
	// Nothing before year 1: a 200-year range ending in 0001 is still valid.
	p, err = c.Query(Query{Kind: QAgeBetween, MinAge: 150, MaxAge: 200, Today: day(100, 1, 1)})
	if err != nil || len(p.Groups) != 1 || len(p.Groups[0]) != 0 || p.Candidate([]int64{1, 2}) {
		t.Fatalf("empty age interval: %v %v", p, err)
	}
}
