package search

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestCollectorPrefersChangedRows: a row that comes from both branches is
// answered by its plaintext, whichever branch the server sends first, and a
// ciphertext of it that does not decrypt is no error; one of an unchanged
// row is.
func TestCollectorPrefersChangedRows(t *testing.T) {
	type row struct {
		changed bool
		key     string
		value   []byte // plaintext, or "ciphertext": the text it decrypts to; "bad" does not decrypt
	}
	collect := func(rows []row) (*Result, *keyError) {
		res := &Result{}
		c := &collector{
			match: func(text string) bool { return text == "smith" },
			open: func(ct []byte, key []string) (string, error) {
				if string(ct) == "bad" {
					return "", errors.New("does not decrypt")
				}
				return string(ct), nil
			},
			res:    res,
			sorter: runSorter{order: keyOrder{numeric: []bool{false}}},
		}
		for _, r := range rows {
			if r.changed {
				c.changedRow([]string{r.key}, r.value)
			} else {
				c.indexRow([]string{r.key}, r.value)
			}
		}
		u := c.finish()
		return res, u
	}
	keys := func(res *Result) []string {
		var out []string
		for _, k := range res.Keys {
			out = append(out, k[0])
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		rows       []row
		want       []string
		candidates int
	}{
		{"changed first", []row{{true, "a", []byte("jones")}, {true, "b", []byte("smith")}, {false, "a", []byte("smith")}, {false, "b", []byte("bad")}, {false, "c", []byte("smith")}, {false, "d", nil}},
			[]string{"b", "c"}, 4},
		{"changed last", []row{{false, "a", []byte("smith")}, {false, "b", []byte("bad")}, {false, "c", []byte("smith")}, {true, "a", []byte("jones")}, {true, "b", []byte("smith")}},
			[]string{"b", "c"}, 5},
		{"cleared value", []row{{true, "a", nil}, {false, "a", []byte("smith")}}, nil, 1},
	} {
		res, u := collect(tc.rows)
		if u != nil {
			t.Errorf("%s: error at %v", tc.name, u.key)
		}
		if got := keys(res); !slices.Equal(got, tc.want) || res.Candidates != tc.candidates {
			t.Errorf("%s: got %v (%d candidates), want %v (%d)", tc.name, got, res.Candidates, tc.want, tc.candidates)
		}
	}
	if _, u := collect([]row{{true, "a", []byte("smith")}, {false, "b", []byte("bad")}}); u == nil || u.key[0] != "b" {
		t.Errorf("an unchanged row's ciphertext that does not decrypt: %v", u)
	}
}

// TestCollectorKeepsOnlyMatchingKeys: a search's candidates may be most of
// the table (contains or phonetic under the privacy budget); the keys of
// those that do not match must not stay reachable (a shared allocation of
// every candidate's key once kept a whole 1,000,000-row table's keys alive
// for a handful of matches).
func TestCollectorKeepsOnlyMatchingKeys(t *testing.T) {
	c := &collector{
		match:  func(text string) bool { return text == "smith" },
		open:   func(ct []byte, key []string) (string, error) { return string(ct), nil },
		res:    &Result{},
		sorter: runSorter{order: keyOrder{numeric: []bool{false}}},
	}
	key := make([]string, 1)
	for i := range 10000 {
		key[0] = fmt.Sprint(i)
		value := "jones"
		if i%1000 == 0 {
			value = "smith"
		}
		c.indexRow(key, []byte(value))
	}
	if u := c.finish(); u != nil || len(c.res.Keys) != 10 || c.res.Candidates != 10000 {
		t.Fatalf("%d matches of %d candidates, error %v", len(c.res.Keys), c.res.Candidates, u)
	}
	if len(c.slab) != 10 {
		t.Errorf("%d keys kept for 10 matches", len(c.slab))
	}
	if c.res.Keys[0][0] != "0" || c.res.Keys[9][0] != "9000" {
		t.Errorf("matches %v", c.res.Keys)
	}
}
