package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgphi/pgphi/internal/state"
)

// triggerOp is the mark function (markFunctionSQL) and the triggers that
// run it (createTriggerSQL), with the hash of the triggers' and envelope
// checks' definitions in the function's comment, which CheckTriggers
// compares. Cleanup and rollback drop the triggers, then the function.
// It comes after the columns and checks in a table's operations: the
// definitions it hashes are all in place by then.
type triggerOp struct{ t *Target }

func (s triggerOp) Describe() string {
	return fmt.Sprintf("triggers %s: %s, running %s", s.t.QualifiedName(), strings.Join(triggerNames, ", "), s.t.markFunctionIdent())
}

func (triggerOp) Stage() Stage { return StageExpand }

func (s triggerOp) Apply(ctx context.Context, o *opTx) error {
	t := s.t
	fn := "FUNCTION " + t.markFunctionIdent() + "()"
	// The function, its owner and its grants change together: no role
	// ever sees it executable by PUBLIC in a committed state.
	if err := o.exec(ctx, t.markFunctionSQL()...); err != nil {
		return err
	}
	if err := state.AdoptAsOwner(ctx, o.tx, fn); err != nil {
		return fmt.Errorf("giving %s to pgphi's schema owner: %w", fn, err)
	}
	// CREATE OR REPLACE TRIGGER also enables a trigger someone disabled.
	if err := o.exec(ctx, t.createTriggerSQL()...); err != nil {
		return err
	}
	h, err := t.definitionsHash(ctx, o.tx)
	if err != nil {
		return err
	}
	return o.exec(ctx, fmt.Sprintf("COMMENT ON %s IS %s", fn, quoteLiteral(definitionsMarker+h)))
}

func (s triggerOp) Cleanup(ctx context.Context, o *opTx) error { return s.drop(ctx, o) }

func (s triggerOp) Rollback(ctx context.Context, o *opTx) error { return s.drop(ctx, o) }

func (s triggerOp) drop(ctx context.Context, o *opTx) error {
	return o.exec(ctx, append(s.t.dropTriggersSQL(), fmt.Sprintf("DROP FUNCTION IF EXISTS %s()", s.t.markFunctionIdent()))...)
}
