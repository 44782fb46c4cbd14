package blindindex

import (
	"testing"
)

// TestQueryLeavesOutGroupsThatFilterNothing: an exact query sends its
// exact term alone when that term is selective on its own, drops the
// groups most rows pass (low-bit n-grams and phonetic keys) when others
// remain, and sends everything when nothing else is left; whatever it
// leaves out, the row it is about stays a candidate.
func TestQueryLeavesOutGroupsThatFilterNothing(t *testing.T) {
	kinds := []Kind{Exact, Prefix, Contains, Phonetic}
	subs := SubKinds(kinds, Defaults())
	column := func(bits map[SubKind]int) *Column {
		t.Helper()
		c, err := NewColumn(kinds, Defaults(), testKeys("select", subs), bits)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tags := func(p *Plan) map[byte]int {
		out := map[byte]int{}
		for _, g := range p.Groups {
			for _, term := range g {
				out[byte(uint64(term)>>56)]++
			}
		}
		return out
	}
	const value = "Meyerhoff"
	for _, tc := range []struct {
		name string
		bits map[SubKind]int
		want func(map[byte]int) bool
	}{
		{"many bits: the exact term alone", map[SubKind]int{SubExact: 20, SubPrefix3: 20, SubPrefix4: 20, SubPrefix5: 20, SubContains: 20, SubPhonetic: 20},
			func(m map[byte]int) bool { return len(m) == 1 && m[Tag(SubExact)] == 1 }},
		{"budget: 1-bit n-grams and phonetic keys left out", map[SubKind]int{SubExact: 3, SubPrefix3: 6, SubPrefix4: 7, SubPrefix5: 6, SubContains: 1, SubPhonetic: 1},
			func(m map[byte]int) bool {
				return m[Tag(SubExact)] == 1 && m[Tag(SubPrefix5)] == 1 && m[Tag(SubContains)] == 0 && m[Tag(SubPhonetic)] == 0
			}},
		{"everything weak: everything sent", map[SubKind]int{SubExact: 0, SubPrefix3: 0, SubPrefix4: 0, SubPrefix5: 0, SubContains: 1, SubPhonetic: 1},
			func(m map[byte]int) bool { return m[Tag(SubContains)] > 0 && m[Tag(SubPhonetic)] > 0 }},
	} {
		c := column(tc.bits)
		p, err := c.Query(Query{Kind: QExact, Value: value})
		if err != nil {
			t.Fatal(err)
		}
		if got := tags(p); !tc.want(got) {
			t.Errorf("%s: groups by tag %v", tc.name, got)
		}
		if !p.Candidate(c.Terms(nil, value)) || !p.Match(value) {
			t.Errorf("%s: the value itself is not a candidate", tc.name)
		}
	}
}
