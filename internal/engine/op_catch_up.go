package engine

import (
	"context"
	"fmt"
)

// catchUpOp re-encrypts rows the application wrote during the backfill (the
// trigger marked them), then sweeps the table for any row whose ciphertexts do
// not match its plaintexts, marks those, and repeats until nothing is marked.
// Its Cleanup is the last catch-up, under cleanup's lock, and the
// re-verification of every row cleanup's own verification may not have
// seen: it comes last in a table's operations, so it runs first, before
// anything is dropped. Rollback has nothing of it to remove.
type catchUpOp struct{ t *Target }

func (s catchUpOp) Describe() string {
	return fmt.Sprintf("catch up %s: re-encrypt rows marked %s by the trigger, sweep for incomplete rows, repeat until none", s.t.QualifiedName(), MarkerColumn)
}

func (catchUpOp) Stage() Stage { return StageCatchUp }

func (s catchUpOp) Apply(ctx context.Context, o *opTx) error {
	r, t := o.r, s.t
	// Under a steady application write rate there is always a newly marked
	// row, so "until nothing is marked" would never end. Rounds continue while
	// they still find real work (a full batch, or rows the sweep marked); what
	// the application writes after the last round stays marked for the next
	// apply, and cleanup's final pass runs under a brief lock.
	for round := 1; round <= maxCatchUpRounds; round++ {
		n, err := r.catchUp(ctx, t)
		if err != nil {
			return err
		}
		var swept int64
		if round == 1 {
			if swept, err = r.sweep(ctx, t); err != nil {
				return err
			}
		}
		if n > 0 || swept > 0 {
			r.logf("    %s: catch-up round %d re-encrypted %d rows, sweep marked %d", t.QualifiedName(), round, n, swept)
		}
		if swept == 0 && n < int64(r.BatchSize) {
			break
		}
	}
	var marked int64
	if err := r.ownerQueryRow(ctx, t, fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", t.Ident(), ident(MarkerColumn)), &marked); err != nil {
		return err
	}
	r.remaining.Add(marked)
	if marked > 0 {
		r.logf("    %s: %d rows changed by the application during the last pass stay marked; the next apply encrypts them", t.QualifiedName(), marked)
	}
	return nil
}

// Cleanup catches up what is still marked while writes are blocked, then
// checks every row written since cleanup's verification began, and every
// row still incomplete (reverifyUnderLock). Any problem refuses the
// cleanup; nothing has been dropped yet.
func (s catchUpOp) Cleanup(ctx context.Context, o *opTx) error {
	r, t, tx := o.r, s.t, o.tx
	for {
		n, _, err := r.encryptBatch(ctx, tx, t, t.catchUpQuery(), []any{r.BatchSize})
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
	}
	// The batches above turned synchronous_commit off for this
	// transaction; dropping the plaintext is reported done only once it
	// is durable.
	if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = on"); err != nil {
		return err
	}
	return r.reverifyUnderLock(ctx, tx, t, o.verifiedFrom)
}

// Rollback: the catch-up leaves nothing of its own.
func (catchUpOp) Rollback(context.Context, *opTx) error { return nil }
