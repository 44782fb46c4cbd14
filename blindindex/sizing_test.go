package blindindex

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestDistinctExactThenSketch(t *testing.T) {
	var d Distinct
	for i := range 1000 {
		d.Add(mix64(uint64(i)))
		d.Add(mix64(uint64(i))) // repeats count once
	}
	if got := d.Count(); got != 1000 || !d.Exact() {
		t.Fatalf("exact count = %d (exact %v), want 1000", got, d.Exact())
	}
	const n = 300_000
	for i := range n {
		d.Add(mix64(uint64(i)))
	}
	got := d.Count()
	if d.Exact() || math.Abs(float64(got)-n)/n > 0.03 {
		t.Fatalf("sketch count = %d (exact %v), want %d within 3%%", got, d.Exact(), n)
	}
}

// sizeAndMeasure sizes a column from values with keys seed, then measures
// the leakage of the terms written with the chosen bits and the same keys.
func sizeAndMeasure(t *testing.T, kinds []Kind, values []string) (Sizing, ColumnLeakage) {
	t.Helper()
	o := Defaults()
	subs := SubKinds(kinds, o)
	keys := testKeys("sizing", subs)
	sz, err := NewSizer(kinds, o, keys)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range values {
		sz.Add(v)
	}
	z := sz.Sizing()
	col, err := NewColumn(kinds, o, keys, z.Bits())
	if err != nil {
		t.Fatal(err)
	}
	m := NewMeasurer(col)
	for _, v := range values {
		m.Add(v)
	}
	return z, m.Result()
}

var testFirstNames = []string{"James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William", "Elizabeth",
	"David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen"}

// Twenty distinct names over 20,000 rows: the row planner gave 13 bits (one
// term per name); sizing by distinct values gives at most 3, and the whole
// term arrays are shared by at least two names on average.
func TestSizingFewDistinctValuesGetFewBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	values := make([]string, 20_000)
	for i := range values {
		values[i] = testFirstNames[rng.IntN(len(testFirstNames))]
	}
	if old := Bits(int64(len(values)), 1); old < 12 {
		t.Fatalf("row planner gives %d bits; the test assumes it sized by rows", old)
	}
	z, l := sizeAndMeasure(t, []Kind{Exact}, values)
	if z.Values != 20 || z.Families[0].Bits != 3 {
		t.Fatalf("exact over 20 names: %d values, %d bits; want 20 and 3", z.Values, z.Families[0].Bits)
	}
	if l.Families[0].MeanValuesPerTerm < 2 || l.MeanValuesPerArray < 2 {
		t.Fatalf("measured %.2f values per term, %.2f per array; want >= 2", l.Families[0].MeanValuesPerTerm, l.MeanValuesPerArray)
	}

	z, l = sizeAndMeasure(t, []Kind{Exact, Prefix, Phonetic}, values)
	for _, f := range z.Families {
		if f.Bits > 3 {
			t.Errorf("%s: %d bits for %d distinct messages", f.SubKind, f.Bits, f.Values)
		}
	}
	if z.ValuesPerSet < 2 || l.MeanValuesPerArray < 2 {
		t.Fatalf("simulated %.2f, measured %.2f distinct names per term array; want >= 2 (families %+v)", z.ValuesPerSet, l.MeanValuesPerArray, l.Families)
	}
	for _, f := range l.Families {
		if f.Values >= 4 && f.MeanValuesPerTerm < 2 {
			t.Errorf("%s: %.2f distinct messages per term", f.SubKind, f.MeanValuesPerTerm)
		}
	}
	if l.Rows != 20_000 || l.Values != 20 {
		t.Fatalf("rows %d values %d", l.Rows, l.Values)
	}
}

// Many distinct values: more than the sample holds (the joint budget is
// simulated on a sample and scaled) and more than the exact counter holds.
func TestSizingManyDistinctValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var values []string
	for i := range 80_000 {
		values = append(values, fmt.Sprintf("%s.%s%d@example.org", strings.ToLower(testFirstNames[rng.IntN(20)]), strings.ToLower(testFirstNames[rng.IntN(20)]), i))
	}
	z, l := sizeAndMeasure(t, []Kind{Exact}, values)
	if want := BitsForDistinct(80_000); z.Families[0].Bits != want || want != 15 {
		t.Fatalf("exact over 80,000 distinct: %d bits, want %d (15)", z.Families[0].Bits, want)
	}
	if l.MeanValuesPerArray < 2 {
		t.Fatalf("measured %.2f per array", l.MeanValuesPerArray)
	}
	z, l = sizeAndMeasure(t, []Kind{Exact, Prefix}, values)
	if l.MeanValuesPerArray < 2 || l.Min() < 2 {
		t.Fatalf("exact+prefix over 80,000 distinct: measured %.2f per array, min family %.2f; sizing %+v", l.MeanValuesPerArray, l.Min(), z)
	}
}

// The measurement agrees with a brute-force computation from Terms, Query
// and Plan.Candidate on small data, with and without 0-bit sub-kinds.
func TestLeakageAgainstBruteForce(t *testing.T) {
	for _, base := range []int{2, 0} {
		t.Run(fmt.Sprintf("bits from %d", base), func(t *testing.T) { checkLeakageBruteForce(t, base) })
	}
}

func checkLeakageBruteForce(t *testing.T, base int) {
	rng := rand.New(rand.NewPCG(5, 6))
	extra := []string{"Jon", "Jane", "Jean", "Maria", "Marie", "Ann", "Anne", "Al", "", "O'Brien", "Ángel", "angel", "Li"}
	var values []string
	for range 400 {
		if rng.IntN(4) == 0 {
			values = append(values, extra[rng.IntN(len(extra))])
		} else {
			values = append(values, testFirstNames[rng.IntN(len(testFirstNames))]+[]string{"", " Lee", " Ray"}[rng.IntN(3)])
		}
	}
	kinds := []Kind{Exact, Prefix, Contains, Phonetic}
	o := Defaults()
	subs := SubKinds(kinds, o)
	bits := map[SubKind]int{}
	for i, s := range subs {
		bits[s] = base + i%3
	}
	col, err := NewColumn(kinds, o, testKeys("brute", subs), bits)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMeasurer(col)
	for _, v := range values {
		m.Add(v)
	}
	got := m.Result()

	// Brute force, with strings only.
	rowTerms := make([][]int64, len(values))
	valueID := map[string]bool{}
	arrays := map[string]map[string]bool{}
	famMsgs := map[SubKind]map[string]bool{}
	termMsgs := map[SubKind]map[int64]map[string]bool{}
	for i, v := range values {
		rowTerms[i] = col.Terms(nil, v)
		var msgs []string
		col.messages(v, func(s SubKind, msg string) {
			msgs = append(msgs, string(s)+"\x00"+msg)
			if famMsgs[s] == nil {
				famMsgs[s], termMsgs[s] = map[string]bool{}, map[int64]map[string]bool{}
			}
			famMsgs[s][msg] = true
			tm := col.Term(s, []byte(msg))
			if termMsgs[s][tm] == nil {
				termMsgs[s][tm] = map[string]bool{}
			}
			termMsgs[s][tm][msg] = true
		})
		slices.Sort(msgs)
		id := strings.Join(slices.Compact(msgs), "\x01")
		valueID[id] = true
		a := fmt.Sprint(rowTerms[i])
		if arrays[a] == nil {
			arrays[a] = map[string]bool{}
		}
		arrays[a][id] = true
	}
	if got.Rows != int64(len(values)) || got.Values != int64(len(valueID)) || got.Arrays != int64(len(arrays)) {
		t.Fatalf("rows/values/arrays = %d/%d/%d, brute force %d/%d/%d", got.Rows, got.Values, got.Arrays, len(values), len(valueID), len(arrays))
	}
	minArr := int64(math.MaxInt64)
	for _, ids := range arrays {
		minArr = min(minArr, int64(len(ids)))
	}
	if got.MinValuesPerArray != minArr || math.Abs(got.MeanValuesPerArray-float64(len(valueID))/float64(len(arrays))) > 1e-9 {
		t.Fatalf("per array: mean %.4f min %d; brute force %.4f %d", got.MeanValuesPerArray, got.MinValuesPerArray, float64(len(valueID))/float64(len(arrays)), minArr)
	}
	for _, f := range got.Families {
		minT := int64(math.MaxInt64)
		for _, ms := range termMsgs[f.SubKind] {
			minT = min(minT, int64(len(ms)))
		}
		if f.Values != int64(len(famMsgs[f.SubKind])) || f.Terms != int64(len(termMsgs[f.SubKind])) || f.MinValuesPerTerm != minT {
			t.Errorf("%s: values %d terms %d min %d; brute force %d %d %d", f.SubKind, f.Values, f.Terms, f.MinValuesPerTerm, len(famMsgs[f.SubKind]), len(termMsgs[f.SubKind]), minT)
		}
	}
	// Expected candidates: the mean over rows (whose value the query kind
	// accepts) of the candidates of a query for that row's value.
	queryOf := map[QueryKind]func(v string) (string, bool){
		QExact: func(v string) (string, bool) { return v, Normalize(v, true) != "" },
		QPrefix: func(v string) (string, bool) {
			p, ok := firstRunes(Normalize(v, true), o.PrefixMin)
			return p, ok
		},
	}
	for _, qc := range got.Queries {
		build, ok := queryOf[qc.Kind]
		if !ok {
			continue
		}
		var sum, sumMatch, n float64
		for i, v := range values {
			qv, ok := build(v)
			if !ok {
				continue
			}
			plan, err := col.Query(Query{Kind: qc.Kind, Value: qv})
			if err != nil {
				t.Fatalf("%s query for row %d: %v", qc.Kind, i, err)
			}
			n++
			for j := range values {
				if plan.Candidate(rowTerms[j]) {
					sum++
				}
				if plan.Match(values[j]) {
					sumMatch++
				}
			}
		}
		if math.Abs(qc.Candidates-sum/n) > 1e-9 || math.Abs(qc.Matches-sumMatch/n) > 1e-9 {
			t.Errorf("%s: expected candidates %.4f matches %.4f; brute force %.4f %.4f", qc.Kind, qc.Candidates, qc.Matches, sum/n, sumMatch/n)
		}
	}
	// Single-term kinds: a query for one term of a row drawn with its terms.
	for _, qc := range got.Queries {
		if qc.Kind != QContains {
			continue
		}
		var sum, n float64
		for i := range values {
			for _, tm := range rowTerms[i] {
				if byte(tm>>56) != Tag(SubContains) {
					continue
				}
				n++
				for j := range values {
					if slices.Contains(rowTerms[j], tm) {
						sum++
					}
				}
			}
		}
		if math.Abs(qc.Candidates-sum/n) > 1e-9 {
			t.Errorf("contains: expected candidates %.4f; brute force %.4f", qc.Candidates, sum/n)
		}
	}
}
