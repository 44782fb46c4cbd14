package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// uniqueIndexOp builds the unique index of each digest column
// concurrently, after the backfill filled them (the plaintext's own
// constraint refuses duplicates meanwhile). A duplicate the plaintext's
// constraint did not see (a value written only as ciphertext before the
// index existed) fails the build, naming the index. Cleanup keeps the
// indexes (they enforce the rules from then on); rollback drops them with
// their digest columns (uniqueDigestOp).
type uniqueIndexOp struct {
	t *Target
}

func (s uniqueIndexOp) Describe() string {
	return fmt.Sprintf("unique digests %s: a unique index per digest column that carries a unique rule of a protected column, built concurrently", s.t.QualifiedName())
}

func (uniqueIndexOp) Stage() Stage { return StageUnique }

func (s uniqueIndexOp) Apply(ctx context.Context, o *opTx) error {
	r := o.r
	if err := s.t.loadUniques(ctx, r.Pool); err != nil {
		return err
	}
	for _, u := range s.t.Uniques {
		def := "(" + ident(u.Column) + ")"
		if u.Predicate != "" {
			def += " WHERE " + u.Predicate
		}
		if err := r.buildIndexKind(ctx, s.t, u.Index, def, true); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23505" {
				if derr := s.t.duplicateRows(ctx, r.Pool, &u); derr != nil {
					return derr
				}
			}
			return err
		}
	}
	return nil
}

// Cleanup: from now on the indexes alone refuse a duplicate.
func (uniqueIndexOp) Cleanup(context.Context, *opTx) error { return nil }

// Rollback: each index goes with its digest column.
func (uniqueIndexOp) Rollback(context.Context, *opTx) error { return nil }
