package engine

import (
	"context"
	"fmt"
)

// searchIndexOp builds the GIN index over a column's terms, after the
// backfill so that apply does not pay for incremental GIN maintenance.
// Cleanup keeps it (search reads it); rollback drops it with the terms
// column (termsColumnOp).
type searchIndexOp struct {
	t *Target
	c *TargetColumn
}

func (s searchIndexOp) Describe() string {
	return fmt.Sprintf("index %s.%s: GIN index %s on %s, built concurrently", s.t.QualifiedName(), s.c.Name, s.t.searchIndex(s.c), s.c.Index)
}

func (searchIndexOp) Stage() Stage { return StageSearch }

func (s searchIndexOp) Apply(ctx context.Context, o *opTx) error {
	return o.r.buildIndex(ctx, s.t, s.t.searchIndex(s.c), fmt.Sprintf("USING gin (%s)", ident(s.c.Index)))
}

// Cleanup: search reads the index once the plaintext is gone.
func (searchIndexOp) Cleanup(context.Context, *opTx) error { return nil }

// Rollback: the index goes with the terms column.
func (searchIndexOp) Rollback(context.Context, *opTx) error { return nil }
