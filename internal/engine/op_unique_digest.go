package engine

import (
	"context"
	"fmt"
)

// uniqueDigestOp is, for each unique rule on protected columns
// (UniqueColumn), the <col>_uniq digest column and the CHECK that a row
// holding its members' ciphertexts holds the digest, with the rule recorded
// in pgphi.unique_columns. Its unique index is uniqueIndexOp. Cleanup
// replaces the CHECK by one that no longer exempts rows holding plaintext;
// rollback drops the columns (their indexes and CHECKs go with them) and
// forgets the rules.
type uniqueDigestOp struct{ t *Target }

func (s uniqueDigestOp) Describe() string {
	return fmt.Sprintf("digest columns %s: a <col>_uniq column and its CHECK for each unique rule on protected columns", s.t.QualifiedName())
}

func (uniqueDigestOp) Stage() Stage { return StageExpand }

func (s uniqueDigestOp) Apply(ctx context.Context, o *opTx) error {
	if err := o.exec(ctx, s.t.uniqueExpandSQL()...); err != nil {
		return err
	}
	return s.t.recordUniques(ctx, o.tx)
}

// Cleanup: the digests' CHECKs named the plaintext and go with it: from
// now on every row with a ciphertext holds its digest (cleanup verified
// them all; NOT VALID: no scan under the lock).
func (s uniqueDigestOp) Cleanup(ctx context.Context, o *opTx) error {
	t := s.t
	var stmts []string
	for i := range t.Uniques {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", t.Ident(), ident(t.uniquePresentCheck(t.Uniques[i].Column))),
			t.uniquePresentCheckSQL(&t.Uniques[i], false))
	}
	return o.exec(ctx, stmts...)
}

func (s uniqueDigestOp) Rollback(ctx context.Context, o *opTx) error {
	t := s.t
	var stmts []string
	for _, u := range t.Uniques {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s DROP COLUMN IF EXISTS %s", t.Ident(), ident(u.Column)))
	}
	if err := o.exec(ctx, stmts...); err != nil {
		return err
	}
	_, err := o.tx.Exec(ctx, "DELETE FROM pgphi.unique_columns WHERE table_name = $1", t.QualifiedName())
	return err
}
