package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/state"
)

// ColumnStatus counts the values of one protected column.
type ColumnStatus struct {
	Table     string `json:"table"`
	Column    string `json:"column"`
	Total     int64  `json:"total"`     // rows in the table
	Encrypted int64  `json:"encrypted"` // values with a current ciphertext
	Pending   int64  `json:"pending"`   // non-NULL values still without a current ciphertext
	Null      int64  `json:"null"`      // NULL plaintexts (nothing to encrypt)
	Failed    int64  `json:"failed"`    // values that could not be encrypted in the last run
	// Protected: the column has its encrypted column (apply has expanded
	// it). A column the config lists that a schema migration added after
	// the last apply is not: its values are plaintext only, and writes to
	// it are not encrypted, until apply runs.
	Protected bool `json:"protected"`
}

// Unprotected lists the plan's columns that are not protected yet, with
// the number of values they hold in plaintext only.
func (st *Status) Unprotected() []ColumnStatus {
	var out []ColumnStatus
	for _, c := range st.Columns {
		if !c.Protected {
			out = append(out, c)
		}
	}
	return out
}

// Status is the state of a plan in the database.
type Status struct {
	PlanID   string         `json:"plan_id"`
	Applied  bool           `json:"applied"`  // apply has started for this plan
	Complete bool           `json:"complete"` // apply finished and nothing is pending
	Columns  []ColumnStatus `json:"columns"`
	Failures []FailureInfo  `json:"failures,omitempty"`
	// Triggers lists what is wrong with pgphi's triggers, mark functions
	// and envelope checks on expanded tables; while any is listed the
	// status is not complete and `pgphi status` fails.
	Triggers []TriggerProblem `json:"trigger_problems,omitempty"`
	// Reindexes are the term generations being built (pgphi reindex
	// started and has not switched yet).
	Reindexes []ReindexStatus `json:"reindexes,omitempty"`
}

// ReindexStatus is a term generation being built for a column.
type ReindexStatus struct {
	Table      string `json:"table"`
	Column     string `json:"column"`
	Generation int    `json:"generation"`
	RowsDone   int64  `json:"rows_done"`  // rows its chunks have done
	RowsTotal  int64  `json:"rows_total"` // rows when it was chunked (0: not chunked yet)
}

// FailureInfo is a recorded failure: where, never what.
type FailureInfo struct {
	Table      string   `json:"table"`
	Column     string   `json:"column"`
	PrimaryKey []string `json:"primary_key"`
	Reason     string   `json:"reason"`
}

// GetStatus counts, per table and column, what is encrypted and what is not.
func GetStatus(ctx context.Context, pool *pgxpool.Pool, p *Plan) (*Status, error) {
	st := &Status{PlanID: p.ID}
	hasState, err := state.Exists(ctx, pool)
	if err != nil {
		return nil, err
	}
	failed := map[string]int64{}
	if hasState {
		var completed *bool
		err := pool.QueryRow(ctx, "SELECT completed_at IS NOT NULL FROM pgphi.plans WHERE plan_id = $1", p.ID).Scan(&completed)
		if err == nil {
			st.Applied = true
			st.Complete = *completed
		}
		rows, err := pool.Query(ctx, "SELECT table_name, column_name, primary_key, reason FROM pgphi.failures WHERE resolved_at IS NULL ORDER BY id")
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var f FailureInfo
			if err := rows.Scan(&f.Table, &f.Column, &f.PrimaryKey, &f.Reason); err != nil {
				rows.Close()
				return nil, err
			}
			failed[f.Table+"."+f.Column]++
			st.Failures = append(st.Failures, f)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	for _, t := range p.Tables {
		// Per column: a column added to the config (and the table) after
		// the last apply has no encrypted column yet, while the others do.
		present, err := columnsPresent(ctx, pool, t)
		if err != nil {
			return nil, err
		}
		protected := make([]bool, len(t.Columns))
		var sel []string
		sel = append(sel, "count(*)")
		for i, c := range t.Columns {
			expanded := present[c.Encrypted] && (c.Cleaned || present[MarkerColumn])
			protected[i] = expanded
			if c.Cleaned {
				sel = append(sel, fmt.Sprintf("count(%s)", ident(c.Encrypted)), "0::bigint",
					fmt.Sprintf("count(*) FILTER (WHERE %s IS NULL)", ident(c.Encrypted)))
				continue
			}
			if expanded {
				sel = append(sel,
					fmt.Sprintf("count(*) FILTER (WHERE %s IS NOT NULL AND %s IS NOT TRUE)", ident(c.Encrypted), ident(MarkerColumn)),
					fmt.Sprintf("count(*) FILTER (WHERE %s IS NOT NULL AND (%s IS NULL OR %s IS TRUE))", ident(c.Name), ident(c.Encrypted), ident(MarkerColumn)))
			} else {
				sel = append(sel, "0::bigint", fmt.Sprintf("count(%s)", ident(c.Name)))
			}
			sel = append(sel, fmt.Sprintf("count(*) FILTER (WHERE %s IS NULL)", ident(c.Name)))
		}
		rows, err := pool.Query(ctx, fmt.Sprintf("SELECT %s FROM %s", strings.Join(sel, ", "), t.Ident()))
		if err != nil {
			return nil, fmt.Errorf("counting %s: %w", t.QualifiedName(), err)
		}
		var vals []any
		for rows.Next() {
			vals, err = rows.Values()
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
		if err != nil {
			return nil, fmt.Errorf("counting %s: %w", t.QualifiedName(), err)
		}
		total := vals[0].(int64)
		for i, c := range t.Columns {
			st.Columns = append(st.Columns, ColumnStatus{
				Table: t.QualifiedName(), Column: c.Name, Total: total,
				Encrypted: vals[1+3*i].(int64), Pending: vals[2+3*i].(int64), Null: vals[3+3*i].(int64),
				Failed: failed[t.QualifiedName()+"."+c.Name], Protected: protected[i],
			})
		}
	}
	if hasState {
		rows, err := pool.Query(ctx, `SELECT g.table_name, g.column_name, g.generation,
				COALESCE((SELECT sum(c.rows_done) FROM pgphi.chunks c WHERE c.table_name = g.space), 0)::bigint,
				COALESCE((SELECT max(t.rows_at_start) FROM pgphi.plan_tables t WHERE t.table_name = g.space), 0)::bigint
			FROM (SELECT DISTINCT table_name, column_name, generation,
				table_name || '#reindex:' || column_name || ':' || generation AS space
				FROM pgphi.blind_indexes WHERE state = 'building') g ORDER BY 1, 2`)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var r ReindexStatus
			if err := rows.Scan(&r.Table, &r.Column, &r.Generation, &r.RowsDone, &r.RowsTotal); err != nil {
				rows.Close()
				return nil, err
			}
			st.Reindexes = append(st.Reindexes, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	if st.Triggers, err = CheckTriggers(ctx, pool, p); err != nil {
		return nil, err
	}
	if len(st.Triggers) > 0 {
		st.Complete = false
	}
	if st.Complete {
		for _, c := range st.Columns {
			if c.Pending > 0 {
				st.Complete = false
			}
		}
	}
	return st, nil
}

// columnsPresent is the set of t's live column names.
func columnsPresent(ctx context.Context, pool *pgxpool.Pool, t *Target) (map[string]bool, error) {
	rows, err := pool.Query(ctx, "SELECT attname::text FROM pg_catalog.pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped", t.Ident())
	if err != nil {
		return nil, fmt.Errorf("reading the columns of %s: %w", t.QualifiedName(), err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading the columns of %s: %w", t.QualifiedName(), err)
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}
