package search

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/engine"
)

// sortKeys puts keys in the order a Result has them.
func sortKeys(t *engine.Target, keys [][]string) { newKeyOrder(t).sort(keys) }

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

// TestRunSorterSortsWhileKeysArrive: keys sorted run by run as they arrive
// and merged come out as sortKeys puts them, for every key shape and for
// counts around the run length.
func TestRunSorterSortsWhileKeysArrive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	target := func(types ...string) *engine.Target {
		tg := &engine.Target{Table: &catalog.Table{}}
		for _, ty := range types {
			tg.PrimaryKey = append(tg.PrimaryKey, catalog.Column{BaseType: ty})
		}
		return tg
	}
	gen := map[string]func() string{
		"text": func() string { return fmt.Sprintf("%x", rng.Uint64N(1<<20)) },
		"int8": func() string { return strconv.FormatInt(rng.Int64N(2000)-1000, 10) },
	}
	for _, types := range [][]string{{"text"}, {"int8"}, {"int8", "text"}, {"text", "text"}} {
		for _, n := range []int{0, 1, 255, 256, 257, 700, 1024, 5000} {
			var keys [][]string
			for range n {
				var k []string
				for _, ty := range types {
					k = append(k, gen[ty]())
				}
				keys = append(keys, k)
			}
			want := make([][]string, n)
			for i, k := range keys {
				want[i] = slices.Clone(k)
			}
			sortKeys(target(types...), want)
			r := runSorter{order: newKeyOrder(target(types...))}
			var got [][]string
			for _, k := range keys {
				got = append(got, k)
				r.add(got)
			}
			r.finish(got)
			if !slices.EqualFunc(got, want, slices.Equal[[]string]) {
				t.Errorf("%v, %d keys: not in key order", types, n)
			}
		}
	}
}
