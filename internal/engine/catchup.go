package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// maxCatchUpRounds bounds catch-up against a write rate close to pgphi's own.
const maxCatchUpRounds = 20

// catchUp drains the marked rows with all workers and returns how many it encrypted.
func (r *Runner) catchUp(ctx context.Context, t *Target) (int64, error) {
	var total int64
	counts := make([]int64, r.Workers)
	err := runWorkers(ctx, r.Workers, func(ctx context.Context, w int) error {
		for {
			if err := r.Throttle.Wait(ctx, r.BatchSize); err != nil {
				return err
			}
			var n int
			err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
				var err error
				n, _, err = r.encryptBatch(ctx, tx, t, t.catchUpQuery(), []any{r.BatchSize})
				return err
			})
			r.batchDone("catchup", t, n, err)
			if err != nil && transient(err) {
				if terr := r.Throttle.Done(-1); terr != nil {
					return terr
				}
				continue
			}
			if err != nil {
				return r.noteFailure(ctx, err)
			}
			if err := r.Throttle.Done(n); err != nil {
				return err
			}
			counts[w] += int64(n)
			// A short batch means the backlog is drained; under a steady
			// write rate waiting for an empty one could last for ever. The
			// rounds in Run decide whether to go again.
			if n < r.BatchSize {
				return nil
			}
		}
	})
	for _, c := range counts {
		total += c
	}
	return total, err
}

// sweep marks every unmarked row whose ciphertext presence disagrees with its
// plaintext. It is the safety net under the trigger and the keyset checkpoints:
// whatever path left a row incomplete, the next catch-up pass fixes it.
func (r *Runner) sweep(ctx context.Context, t *Target) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		// The owner's triggers and the like fire with the owner's rights (owner.go).
		if _, err := r.asOwner(ctx, tx, t); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, fmt.Sprintf("UPDATE %s SET %s = true WHERE %s IS NOT TRUE AND (%s)",
			t.Ident(), ident(MarkerColumn), ident(MarkerColumn), t.incompleteRowsPredicate()))
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sweeping %s: %w", t.QualifiedName(), err)
	}
	return n, nil
}

// noteFailure records a RowError in pgphi.failures (key and reason only) and
// returns err unchanged.
func (r *Runner) noteFailure(ctx context.Context, err error) error {
	var re *RowError
	if errors.As(err, &re) {
		_, ierr := r.Pool.Exec(context.WithoutCancel(ctx), `INSERT INTO pgphi.failures (plan_id, table_name, column_name, primary_key, reason) VALUES ($1, $2, $3, $4, $5)`,
			r.Plan.ID, re.Table, re.Column, re.Key, re.Reason)
		if ierr != nil {
			r.logf("    could not record failure: %v", ierr)
		}
	}
	return err
}
