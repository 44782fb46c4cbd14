package engine

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// termsColumnOp is a searchable column's blind index terms: the bigint[]
// column <col>_bidx (its GIN index is searchIndexOp). A reindex adds the
// next generation's column <col>_bidx_next and a trigger that clears its
// stale terms; rollback drops those with it. Cleanup keeps the terms.
type termsColumnOp struct {
	t *Target
	c *TargetColumn
}

func (s termsColumnOp) Describe() string {
	return fmt.Sprintf("terms %s.%s: column %s", s.t.QualifiedName(), s.c.Name, s.c.Index)
}

func (termsColumnOp) Stage() Stage { return StageExpand }

func (s termsColumnOp) Apply(ctx context.Context, o *opTx) error {
	if !s.c.HasIndex() {
		return nil
	}
	return o.exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s bigint[]", s.t.Ident(), ident(s.c.Index)))
}

// Cleanup: the terms are what search reads once the plaintext is gone.
func (termsColumnOp) Cleanup(context.Context, *opTx) error { return nil }

// Rollback drops the terms, and a reindex's next generation with its
// trigger first (the trigger names the columns).
func (s termsColumnOp) Rollback(ctx context.Context, o *opTx) error {
	t, c := s.t, s.c
	if c.Index == "" {
		return nil
	}
	var stmts []string
	if c.HasIndex() {
		stmts = append(stmts, fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", ident(t.reindexTrigger(c)), t.Ident()),
			fmt.Sprintf("DROP FUNCTION IF EXISTS %s()", pgx.Identifier{"pgphi", t.reindexFunction(c)}.Sanitize()))
	}
	stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s DROP COLUMN IF EXISTS %s, DROP COLUMN IF EXISTS %s", t.Ident(), ident(c.Index), ident(c.NextIndex())))
	return o.exec(ctx, stmts...)
}
