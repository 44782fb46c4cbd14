package engine

import (
	"testing"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/internal/catalog"
)

// TestOperationsOrder checks the order cleanup and rollback rely on when
// they run a table's operations backwards: every column before the
// operations that name it, the triggers after every column and check they
// hash, the catch-up last (its Cleanup re-verifies before anything is
// dropped), and stages that never go back.
func TestOperationsOrder(t *testing.T) {
	tg := &Target{Table: &catalog.Table{Schema: "public", Name: "patient"}, Columns: []TargetColumn{
		{Column: catalog.Column{Name: "name"}, Encrypted: "name_encrypted", Search: []blindindex.Kind{"exact"}, Index: "name_bidx"},
		{Column: catalog.Column{Name: "ssn"}, Encrypted: "ssn_encrypted"},
	}}
	ops := tg.operations()
	pos := map[string]int{}
	for i, op := range ops {
		if i > 0 && op.Stage() < ops[i-1].Stage() {
			t.Errorf("%s (stage %d) comes after %s (stage %d)", op.Describe(), op.Stage(), ops[i-1].Describe(), ops[i-1].Stage())
		}
		switch o := op.(type) {
		case ciphertextColumnOp:
			pos["ciphertext "+o.c.Name] = i
		case termsColumnOp:
			pos["terms "+o.c.Name] = i
		case searchIndexOp:
			pos["search "+o.c.Name] = i
		case markerColumnOp:
			pos["marker"] = i
		case plaintextOp:
			pos["plaintext"] = i
		case uniqueDigestOp:
			pos["digests"] = i
		case triggerOp:
			pos["trigger"] = i
		case pendingIndexOp:
			pos["pending"] = i
		case catchUpOp:
			pos["catchup"] = i
		}
	}
	if _, ok := pos["terms ssn"]; ok {
		t.Error("a column without search has a terms operation")
	}
	if _, ok := pos["search ssn"]; ok {
		t.Error("a column without search has a search index operation")
	}
	before := [][2]string{
		{"ciphertext name", "terms name"}, {"terms name", "ciphertext ssn"}, {"terms name", "search name"},
		{"ciphertext ssn", "plaintext"}, {"ciphertext ssn", "digests"}, {"marker", "pending"},
		{"plaintext", "trigger"}, {"digests", "trigger"}, {"marker", "trigger"},
	}
	for _, b := range before {
		x, okx := pos[b[0]]
		y, oky := pos[b[1]]
		if !okx || !oky || x >= y {
			t.Errorf("%s must come before %s (positions %d, %d)", b[0], b[1], x, y)
		}
	}
	if pos["catchup"] != len(ops)-1 {
		t.Errorf("the catch-up is operation %d of %d, not the last", pos["catchup"]+1, len(ops))
	}
}
