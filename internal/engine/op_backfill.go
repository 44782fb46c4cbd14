package engine

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// backfillOp encrypts every row that existed when the table was chunked,
// keyset-paginated within leased chunks (runChunks). Its state is the
// table's chunks and progress (pgphi.chunks, pgphi.plan_tables, a
// reindex's chunk spaces included) and the values it could not encrypt
// (pgphi.failures); rollback forgets them, cleanup keeps them as the
// record of the run.
type backfillOp struct{ t *Target }

func (s backfillOp) Describe() string {
	return fmt.Sprintf("backfill %s: encrypt every row in key order, in batches, over chunks leased with FOR UPDATE SKIP LOCKED", s.t.QualifiedName())
}

func (backfillOp) Stage() Stage { return StageBackfill }

func (s backfillOp) Apply(ctx context.Context, o *opTx) error {
	r, t := o.r, s.t
	return r.runChunks(ctx, "backfill", t.QualifiedName(), t, func(ctx context.Context, tx pgx.Tx, from, upper []string) (int, []string, error) {
		q, args := t.chunkQuery(t.valueTexts(), "", from, upper, r.BatchSize)
		return r.encryptBatch(ctx, tx, t, q, args)
	})
}

// Cleanup: the chunks stay, as the record of the run.
func (backfillOp) Cleanup(context.Context, *opTx) error { return nil }

func (s backfillOp) Rollback(ctx context.Context, o *opTx) error {
	for _, q := range []string{
		"DELETE FROM pgphi.chunks WHERE table_name = $1 OR starts_with(table_name, $1 || '#reindex:')",
		"DELETE FROM pgphi.plan_tables WHERE table_name = $1 OR starts_with(table_name, $1 || '#reindex:')",
		"DELETE FROM pgphi.failures WHERE table_name = $1",
	} {
		if _, err := o.tx.Exec(ctx, q, s.t.QualifiedName()); err != nil {
			return err
		}
	}
	return nil
}
