package engine

import (
	"context"
	"fmt"
)

// pendingIndexOp builds the partial index the catch-up reads marked rows
// through. CONCURRENTLY keeps the table writable; an invalid leftover from
// an interrupted build is dropped and rebuilt. Cleanup and rollback drop
// it with the marker column it indexes (markerColumnOp).
type pendingIndexOp struct{ t *Target }

func (s pendingIndexOp) Describe() string {
	return fmt.Sprintf("index %s: partial index %s on (%s) WHERE %s, built concurrently", s.t.QualifiedName(), s.t.pendingIndex(), s.t.keyList(""), MarkerColumn)
}

func (pendingIndexOp) Stage() Stage { return StagePending }

func (s pendingIndexOp) Apply(ctx context.Context, o *opTx) error {
	return o.r.buildIndex(ctx, s.t, s.t.pendingIndex(), fmt.Sprintf("(%s) WHERE %s", s.t.keyList(""), ident(MarkerColumn)))
}

// Cleanup: the index goes with the marker.
func (pendingIndexOp) Cleanup(context.Context, *opTx) error { return nil }

// Rollback: the index goes with the marker.
func (pendingIndexOp) Rollback(context.Context, *opTx) error { return nil }
