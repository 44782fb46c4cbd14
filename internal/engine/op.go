package engine

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Operation is one thing apply puts on a protected table, defined in one
// place together with what cleanup and rollback do with it, so that nothing
// apply adds can be forgotten by the two that take it away. A table's
// operations are one ordered list (Target.operations): apply runs Apply in
// that order, stage by stage; cleanup and rollback run Cleanup and Rollback
// in the reverse order, each inside the one transaction of its table.
//
// Work that must not hold the lock of expand, cleanup or rollback (a CHECK
// validated while writes go on, values decrypted in batches) is an
// operation's unlocked methods, run beside the transaction.
//
// Every method may be interrupted and run again, by this process or
// another, and must end in the same state: DDL is IF [NOT] EXISTS or
// CREATE OR REPLACE, state rows are upserted or deleted whole.
type Operation interface {
	// Describe says what the operation puts in place, without any value.
	Describe() string
	// Stage is when apply runs Apply: StageExpand inside expand's one
	// transaction, the later stages each on its own after every table has
	// reached the stage before.
	Stage() Stage
	// Apply puts the operation's objects in place. At StageExpand o.tx is
	// expand's transaction (ACCESS EXCLUSIVE on the table); later, o.tx is
	// nil and the operation opens what it needs (an index built
	// CONCURRENTLY, batches of their own).
	Apply(ctx context.Context, o *opTx) error
	// Cleanup runs in cleanup's transaction, which blocks the table's
	// writers, after cleanup's own verification of every value: what
	// becomes of the operation's objects once the plaintext is gone.
	Cleanup(ctx context.Context, o *opTx) error
	// Rollback runs in rollback's transaction (ACCESS EXCLUSIVE), after the
	// plaintext is back: it removes the operation's objects and state.
	Rollback(ctx context.Context, o *opTx) error
}

// Stage orders apply's work across the tables of a plan: every table is
// expanded (the brief locks, and the checks that may refuse a table) before
// any long backfill starts, and the indexes over backfilled columns wait
// for the backfill, so that it does not maintain them row by row.
type Stage int

// The stages of apply, in order.
const (
	StageExpand   Stage = iota // columns, checks and triggers, in one transaction per table
	StagePending               // the partial index over marked rows
	StageBackfill              // every existing row encrypted
	StageUnique                // the unique digests' indexes, over backfilled digests
	StageSearch                // the blind indexes' GIN indexes, over backfilled terms
	StageCatchUp               // rows the application changed meanwhile
)

var stages = []Stage{StageExpand, StagePending, StageBackfill, StageUnique, StageSearch, StageCatchUp}

// opTx is what an operation works in: the runner, its table, and the
// transaction of the step that runs it.
type opTx struct {
	r  *Runner
	t  *Target
	tx pgx.Tx // nil after expand's stage, and in the unlocked methods

	// notNull is which protected columns were NOT NULL before expand:
	// filled by the operation that records it in expand, read from pgphi's
	// state before cleanup and rollback run theirs.
	notNull map[string]bool

	rename       bool   // cleanup: the ciphertext takes the plaintext's name
	verifiedFrom uint64 // cleanup: where its own verification began (reverifyUnderLock)
}

// exec runs statements in order in the operation's transaction.
func (o *opTx) exec(ctx context.Context, stmts ...string) error {
	for _, st := range stmts {
		if _, err := o.tx.Exec(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

// operations lists everything apply puts on t, in the order apply puts it
// there. The order is what makes the reverse order safe for cleanup and
// rollback: a column comes before the checks, triggers and indexes that
// name it (the triggers after every check whose definition they hash, and
// before the plaintext's drop in reverse: their WHEN names it), and the
// catch-up last (its Cleanup catches up and re-verifies before anything is
// dropped).
// A column's ciphertext and terms come together, keeping the order the
// added columns have always had in the table.
func (t *Target) operations() []Operation {
	var ops []Operation
	for i := range t.Columns {
		c := &t.Columns[i]
		ops = append(ops, ciphertextColumnOp{t, c})
		if c.HasIndex() || c.Index != "" {
			ops = append(ops, termsColumnOp{t, c})
		}
	}
	ops = append(ops, markerColumnOp{t}, plaintextOp{t}, uniqueDigestOp{t}, triggerOp{t},
		pendingIndexOp{t}, backfillOp{t}, uniqueIndexOp{t})
	for i := range t.Columns {
		if c := &t.Columns[i]; c.HasIndex() {
			ops = append(ops, searchIndexOp{t, c})
		}
	}
	return append(ops, catchUpOp{t})
}

// opStep runs one operation's Apply as a step of the plan.
type opStep struct {
	op Operation
	t  *Target
}

func (s opStep) Describe() string { return s.op.Describe() }

func (s opStep) Run(ctx context.Context, r *Runner) error {
	return s.op.Apply(ctx, &opTx{r: r, t: s.t})
}

// unlocked is an operation with work of expand, cleanup or rollback that
// runs outside their transaction, so that the application keeps writing
// meanwhile: a CHECK validated under SHARE UPDATE EXCLUSIVE, values
// decrypted in batches of their own. Idempotent like the rest; o.tx is
// nil. AfterExpand runs after expand's transaction at every apply (also
// when everything was in place and the transaction was skipped);
// PrepareCleanup and PrepareRollback run before cleanup's and rollback's
// transaction, in the same reverse order.
type unlocked interface {
	AfterExpand(ctx context.Context, o *opTx) error
	PrepareCleanup(ctx context.Context, o *opTx) error
	PrepareRollback(ctx context.Context, o *opTx) error
}

// prepare runs every unlocked operation's PrepareCleanup or
// PrepareRollback, in the reverse of apply's order.
func (t *Target) prepare(ctx context.Context, o *opTx, rollback bool) error {
	return t.reverse(func(op Operation) error {
		u, ok := op.(unlocked)
		switch {
		case !ok:
			return nil
		case rollback:
			return u.PrepareRollback(ctx, o)
		default:
			return u.PrepareCleanup(ctx, o)
		}
	})
}

// undo runs every operation's Cleanup or Rollback in o's transaction, in
// the reverse of apply's order.
func (t *Target) undo(ctx context.Context, o *opTx, rollback bool) error {
	return t.reverse(func(op Operation) error {
		if rollback {
			return op.Rollback(ctx, o)
		}
		return op.Cleanup(ctx, o)
	})
}

// forward calls fn for each of t's operations in order, until one fails.
func (t *Target) forward(fn func(Operation) error) error {
	for _, op := range t.operations() {
		if err := fn(op); err != nil {
			return err
		}
	}
	return nil
}

// reverse calls fn for each of t's operations, last first, until one fails.
func (t *Target) reverse(fn func(Operation) error) error {
	ops := t.operations()
	for i := len(ops) - 1; i >= 0; i-- {
		if err := fn(ops[i]); err != nil {
			return err
		}
	}
	return nil
}
