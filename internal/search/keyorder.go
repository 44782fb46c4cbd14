package search

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/pgphi/pgphi/internal/engine"
)

// keyOrder is the order of a table's keys in a Result: integer key columns
// as numbers, every other column by the bytes of its canonical text.
type keyOrder struct {
	numeric    []bool // per key column
	anyNumeric bool
}

func newKeyOrder(t *engine.Target) keyOrder {
	o := keyOrder{numeric: make([]bool, len(t.PrimaryKey))}
	for i, k := range t.PrimaryKey {
		switch k.BaseType {
		case "smallint", "integer", "bigint", "int2", "int4", "int8":
			o.numeric[i], o.anyNumeric = true, true
		}
	}
	return o
}

// oneTextKey is the common case: a single key column that is not an
// integer, ordered by its bytes.
func (o keyOrder) oneTextKey() bool { return len(o.numeric) == 1 && !o.anyNumeric }

// compareColumn orders one key column's texts: as numbers when both parsed
// as integers (xok, yok), else by their bytes.
func compareColumn(xs, ys string, x, y int64, xok, yok bool) int {
	if xok && yok {
		return cmp.Compare(x, y)
	}
	return strings.Compare(xs, ys)
}

// compare orders two keys, parsing integer columns as it goes.
func (o keyOrder) compare(a, b []string) int {
	for i := range a {
		var x, y int64
		var xok, yok bool
		if o.numeric[i] {
			x, xok = parseKeyInt(a[i])
			y, yok = parseKeyInt(b[i])
		}
		if c := compareColumn(a[i], b[i], x, y, xok, yok); c != 0 {
			return c
		}
	}
	return 0
}

// sort sorts keys. Integer texts are parsed once, not at every comparison.
func (o keyOrder) sort(keys [][]string) {
	switch {
	case o.oneTextKey():
		// Sort the texts themselves (an ordered sort of strings, no
		// comparison function) and put them back into the one-element
		// keys.
		texts := make([]string, len(keys))
		for j, k := range keys {
			texts[j] = k[0]
		}
		slices.Sort(texts)
		for j, k := range keys {
			k[0] = texts[j]
		}
		return
	case !o.anyNumeric:
		slices.SortFunc(keys, slices.Compare[[]string])
		return
	}
	type parsed struct {
		key  []string
		nums []int64
		ok   []bool
	}
	ps := make([]parsed, len(keys))
	for j, key := range keys {
		p := parsed{key: key, nums: make([]int64, len(key)), ok: make([]bool, len(key))}
		for i := range key {
			if o.numeric[i] {
				p.nums[i], p.ok[i] = parseKeyInt(key[i])
			}
		}
		ps[j] = p
	}
	slices.SortFunc(ps, func(a, b parsed) int {
		for i := range a.key {
			if c := compareColumn(a.key[i], b.key[i], a.nums[i], b.nums[i], a.ok[i], b.ok[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	for j := range ps {
		keys[j] = ps[j].key
	}
}

func parseKeyInt(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// runSorter sorts keys while they arrive: each run of sortRun keys is
// sorted when it is complete, and runs are merged as they pile up (a run is
// merged into the one below while that is no longer than it), so the
// search's rows arriving from the server pay for most of the sorting and
// the end only merges what is left: about as many comparisons as keys,
// where sorting them all at the end took several per key on that path.
type runSorter struct {
	order  keyOrder
	runs   []int // start of each sorted run, ascending
	sorted int   // keys[:sorted] are in runs
	buf    [][]string
}

// sortRun is the length of a run sorted on arrival.
const sortRun = 256

// add is called with all keys so far; it sorts and merges the complete
// runs among them.
func (r *runSorter) add(keys [][]string) {
	if len(keys)-r.sorted < sortRun {
		return
	}
	r.push(keys, len(keys))
}

// push makes keys[r.sorted:end] a sorted run and merges runs down the stack.
func (r *runSorter) push(keys [][]string, end int) {
	r.order.sort(keys[r.sorted:end])
	r.runs = append(r.runs, r.sorted)
	r.sorted = end
	for n := len(r.runs); n >= 2; n = len(r.runs) {
		lo, mid := r.runs[n-2], r.runs[n-1]
		if mid-lo > end-mid {
			break
		}
		r.merge(keys, lo, mid, end)
		r.runs = r.runs[:n-1]
	}
}

// finish sorts all of keys (r must have seen only a prefix of them).
func (r *runSorter) finish(keys [][]string) {
	if r.sorted < len(keys) {
		r.push(keys, len(keys))
	}
	for n := len(r.runs); n >= 2; n = len(r.runs) {
		r.merge(keys, r.runs[n-2], r.runs[n-1], len(keys))
		r.runs = r.runs[:n-1]
	}
}

// merge merges the sorted keys[lo:mid] and keys[mid:hi] into keys[lo:hi].
func (r *runSorter) merge(keys [][]string, lo, mid, hi int) {
	r.buf = append(r.buf[:0], keys[lo:mid]...)
	left, i, j, k := r.buf, 0, mid, lo
	text := r.order.oneTextKey()
	for i < len(left) && j < hi {
		var takeRight bool
		if text {
			takeRight = keys[j][0] < left[i][0]
		} else {
			takeRight = r.order.compare(keys[j], left[i]) < 0
		}
		if takeRight {
			keys[k] = keys[j]
			j++
		} else {
			keys[k] = left[i]
			i++
		}
		k++
	}
	copy(keys[k:], left[i:])
}
