package engine

import (
	"context"
	"fmt"
)

// markerColumnOp is the boolean column pgphi_pending the mark trigger sets
// on a row whose plaintext changed (its partial index is pendingIndexOp).
// Cleanup and rollback drop it, and the index with it.
type markerColumnOp struct{ t *Target }

func (s markerColumnOp) Describe() string {
	return fmt.Sprintf("marker %s: column %s", s.t.QualifiedName(), MarkerColumn)
}

func (markerColumnOp) Stage() Stage { return StageExpand }

func (s markerColumnOp) Apply(ctx context.Context, o *opTx) error {
	return o.exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s boolean", s.t.Ident(), ident(MarkerColumn)))
}

// Cleanup drops the marker: cleanup's catch-up under the lock left no row
// marked, and no trigger sets it any more.
func (s markerColumnOp) Cleanup(ctx context.Context, o *opTx) error {
	return o.exec(ctx, fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s", s.t.Ident(), ident(MarkerColumn)))
}

func (s markerColumnOp) Rollback(ctx context.Context, o *opTx) error {
	return o.exec(ctx, fmt.Sprintf("ALTER TABLE %s DROP COLUMN IF EXISTS %s", s.t.Ident(), ident(MarkerColumn)))
}
