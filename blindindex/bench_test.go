package blindindex

import "testing"

// benchRow is one patient row of the demo's shape: the search kinds of the
// demo configuration with values as the demo writes them.
var benchRow = []struct {
	kinds []Kind
	value string
}{
	{[]Kind{Exact, Prefix, Phonetic}, "Margaret"},
	{[]Kind{Exact}, "Anne"},
	{[]Kind{Exact, Prefix, Contains, Phonetic}, "Okonkwo-Smith"},
	{[]Kind{Phone}, "+1 (415) 555-2671"},
	{[]Kind{Phone}, "020 7946 0018"},
	{[]Kind{Exact}, "margaret.okonkwo@example.org"},
	{[]Kind{Date}, "1974-03-12"},
}

// BenchmarkTermsRow measures the terms of one patient row (seven columns).
func BenchmarkTermsRow(b *testing.B) {
	cols := make([]*Column, len(benchRow))
	for i, c := range benchRow {
		o := Defaults()
		o.PhoneRegion = "US"
		cols[i] = newTestColumn(b, "bench", c.kinds, o, 40)
	}
	var dst []int64
	b.ReportAllocs()
	for b.Loop() {
		for i, c := range benchRow {
			dst = cols[i].Terms(dst[:0], c.value)
		}
	}
}

// BenchmarkTermsKind measures one column of each shape.
func BenchmarkTermsKind(b *testing.B) {
	for _, c := range benchRow {
		o := Defaults()
		o.PhoneRegion = "US"
		col := newTestColumn(b, "bench", c.kinds, o, 40)
		b.Run(string(c.kinds[len(c.kinds)-1]), func(b *testing.B) {
			var dst []int64
			b.ReportAllocs()
			for b.Loop() {
				dst = col.Terms(dst[:0], c.value)
			}
		})
	}
}
