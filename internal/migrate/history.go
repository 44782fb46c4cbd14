package migrate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Record is one row of the history (pgphi.migrations): what pgphi knows of
// one migration version. It holds no SQL text and no value.
type Record struct {
	Version         int64      `json:"version"`
	Name            string     `json:"name"`
	SHA256          string     `json:"sha256"`
	State           string     `json:"state"` // running, failed, applied, baseline, reverted
	Transactional   bool       `json:"transactional"`
	StatementsTotal int        `json:"statements_total"`
	StatementsDone  int        `json:"statements_done"`
	StatementHashes []string   `json:"-"`
	RowsAffected    int64      `json:"rows_affected"`
	StartedAt       time.Time  `json:"started_at"`
	FinishedAt      *time.Time `json:"finished_at,omitempty"`
	DurationMS      *int64     `json:"duration_ms,omitempty"`
	AppliedByRole   string     `json:"applied_by_role"`
	AppliedByActor  string     `json:"applied_by_actor"`
	ErrorClass      string     `json:"error_class,omitempty"`
	FailedStatement *int       `json:"failed_statement,omitempty"`
	Source          string     `json:"source"`
}

// Applied reports whether the record counts as applied (run or adopted).
func (r *Record) Applied() bool { return r.State == "applied" || r.State == "baseline" }

// Querier is what reading the history needs: a pool, a connection or a
// transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// History returns every row of the history, by version. A database
// without the history table has none. It is what reports read.
func History(ctx context.Context, q Querier) ([]Record, error) {
	rows, err := q.Query(ctx, `SELECT version, name, sha256, state, transactional, statements_total, statements_done,
		statement_hashes, rows_affected, started_at, finished_at, duration_ms, applied_by_role, applied_by_actor,
		COALESCE(error_class, ''), failed_statement, source
		FROM pgphi.migrations ORDER BY version`)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
			return nil, nil
		}
		return nil, fmt.Errorf("reading the migration history: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Record, error) {
		var m Record
		err := r.Scan(&m.Version, &m.Name, &m.SHA256, &m.State, &m.Transactional, &m.StatementsTotal, &m.StatementsDone,
			&m.StatementHashes, &m.RowsAffected, &m.StartedAt, &m.FinishedAt, &m.DurationMS, &m.AppliedByRole, &m.AppliedByActor,
			&m.ErrorClass, &m.FailedStatement, &m.Source)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the migration history: %w", err)
	}
	return out, nil
}

// HistoryOf returns the record of the migration named name (e.g.
// 005_add_payment_table) or version, nil when it has none.
func HistoryOf(ctx context.Context, q Querier, name string) (*Record, error) {
	all, err := History(ctx, q)
	if err != nil {
		return nil, err
	}
	for i := range all {
		if all[i].Name == name || fmt.Sprint(all[i].Version) == name {
			return &all[i], nil
		}
	}
	return nil, nil
}

func byVersion(rs []Record) map[int64]*Record {
	m := make(map[int64]*Record, len(rs))
	for i := range rs {
		m[rs[i].Version] = &rs[i]
	}
	return m
}
