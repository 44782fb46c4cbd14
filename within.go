package pgphi

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// within is what Within puts in a context.
type within struct {
	tx    pgx.Tx
	actor string
}

type withinKey struct{}

// Within returns a context under which the client's calls run their
// statements, and write their audit record, in tx: a transaction the caller
// began and commits (or rolls back, and the record with it). A server that
// acts for several callers uses it to run each request as the caller's
// database role (SET LOCAL ROLE in tx before the call): privileges, row
// security and the audit record's actor.db_role are then that role's, and
// actor (when not empty) is recorded as actor.name instead of the client's
// Actor option. Without it each call uses the client's pool and commits its
// own record.
func Within(ctx context.Context, tx pgx.Tx, actor string) context.Context {
	return context.WithValue(ctx, withinKey{}, within{tx: tx, actor: actor})
}

func withinOf(ctx context.Context) (within, bool) {
	w, ok := ctx.Value(withinKey{}).(within)
	return w, ok && w.tx != nil
}

// querier is the pool, or the caller's transaction under Within.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (c *Client) querier(ctx context.Context) querier {
	if w, ok := withinOf(ctx); ok {
		return w.tx
	}
	return c.pool
}
