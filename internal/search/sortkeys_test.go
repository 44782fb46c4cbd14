package search

import (
	"slices"
	"testing"

	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/engine"
)

// TestSortKeys: matches come back in key order, integer key columns as
// numbers (2 before 10) and the others by their bytes.
func TestSortKeys(t *testing.T) {
	target := func(types ...string) *engine.Target {
		tg := &engine.Target{Table: &catalog.Table{}}
		for _, ty := range types {
			tg.PrimaryKey = append(tg.PrimaryKey, catalog.Column{BaseType: ty})
		}
		return tg
	}
	for _, tc := range []struct {
		types      []string
		keys, want [][]string
	}{
		{[]string{"int8"}, [][]string{{"10"}, {"9"}, {"-3"}, {"2"}}, [][]string{{"-3"}, {"2"}, {"9"}, {"10"}}},
		{[]string{"text"}, [][]string{{"b"}, {"B"}, {"a10"}, {"a9"}}, [][]string{{"B"}, {"a10"}, {"a9"}, {"b"}}},
		{[]string{"int4", "text"}, [][]string{{"10", "a"}, {"2", "b"}, {"2", "a"}}, [][]string{{"2", "a"}, {"2", "b"}, {"10", "a"}}},
	} {
		got := slices.Clone(tc.keys)
		sortKeys(target(tc.types...), got)
		if !slices.EqualFunc(got, tc.want, slices.Equal[[]string]) {
			t.Errorf("%v %v: got %v, want %v", tc.types, tc.keys, got, tc.want)
		}
	}
}
