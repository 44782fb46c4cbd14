package search

import (
	"slices"
	"strings"
)

// collector turns the candidate query's rows into matches. The rows come
// in two parts (candidateQuery): first the rows the application changed
// since they were encrypted, answered by their plaintext, then the index's,
// answered by decryption. A changed row whose terms still match comes from
// both: its plaintext is current, so its index answer is dropped, and a
// ciphertext of it that does not decrypt is no error. Two statements come
// in that order; should a changed row of the one-statement form ever come
// after index rows, the index answers already taken for it are dropped at
// the end (they stay counted as candidates).
type collector struct {
	match func(text string) bool
	open  func(ciphertext []byte, key []string) (string, error)
	res   *Result
	// sorter puts the matches in key order while they arrive.
	sorter runSorter
	// slab holds the keys kept (matches, and the rare undecryptable
	// ciphertext), allocated together: a search's candidates may be most
	// of the table, and only what is kept may stay reachable.
	slab []string

	changed        map[string]bool
	changedMatches [][]string
	undecryptable  []keyError
	indexRows      int
	late           bool
}

// keyError is a ciphertext that did not decrypt, at its row's key.
type keyError struct {
	key []string
	err error
}

// keep copies a key the collector keeps: the row methods' key is the
// caller's, reused for the next row.
func (c *collector) keep(key []string) []string {
	n := len(key)
	if len(c.slab)+n > cap(c.slab) {
		c.slab = make([]string, 0, 256*n)
	}
	k := append(c.slab[len(c.slab):len(c.slab):len(c.slab)+n], key...)
	c.slab = c.slab[:len(c.slab)+n]
	return k
}

// changedRow takes a row of the changed branch: its key, which it copies if
// it keeps it, and its plaintext (nil when the application cleared the
// value).
func (c *collector) changedRow(key []string, plaintext []byte) {
	if c.changed == nil {
		c.changed = make(map[string]bool)
	}
	c.changed[joinKey(key)] = true
	c.late = c.late || c.indexRows > 0
	c.res.Candidates++
	if plaintext != nil && c.match(string(plaintext)) {
		c.changedMatches = append(c.changedMatches, c.keep(key))
	}
}

// indexRow takes a row of the index branch: its key, which it copies if it
// keeps it, and its ciphertext (nil when the value was cleared).
func (c *collector) indexRow(key []string, ciphertext []byte) {
	c.indexRows++
	if c.changed[joinKey(key)] {
		return
	}
	c.res.Candidates++
	if ciphertext == nil {
		return
	}
	text, err := c.open(ciphertext, key)
	if err != nil {
		c.undecryptable = append(c.undecryptable, keyError{c.keep(key), err})
		return
	}
	if c.match(text) {
		c.res.Keys = append(c.res.Keys, c.keep(key))
		c.sorter.add(c.res.Keys)
	}
}

// finish completes res.Keys, in key order, and returns the first ciphertext of
// an unchanged row that did not decrypt, if any.
func (c *collector) finish() *keyError {
	for i, u := range c.undecryptable {
		if !c.changed[joinKey(u.key)] {
			return &c.undecryptable[i]
		}
	}
	if c.late {
		c.res.Keys = slices.DeleteFunc(c.res.Keys, func(k []string) bool { return c.changed[joinKey(k)] })
		c.res.Keys = append(c.res.Keys, c.changedMatches...)
		c.sorter.order.sort(c.res.Keys) // the sorted runs moved
		return nil
	}
	c.res.Keys = append(c.res.Keys, c.changedMatches...)
	c.sorter.finish(c.res.Keys)
	return nil
}

// joinKey is a row's key as one map key (a text value holds no NUL).
func joinKey(key []string) string {
	if len(key) == 1 {
		return key[0]
	}
	return strings.Join(key, "\x00")
}
