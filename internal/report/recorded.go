package report

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RecordedAlerts reads the alert records of the plan's runs from the audit
// trail (event alert: threshold, measured, limit, unit and the table).
func RecordedAlerts(ctx context.Context, pool *pgxpool.Pool, planID string) ([]AlertFact, error) {
	rows, err := pool.Query(ctx, `SELECT record::text FROM pgphi.audit_log
		WHERE record OPERATOR(pg_catalog.->>) 'event' OPERATOR(pg_catalog.=) 'alert'
		  AND record OPERATOR(pg_catalog.->>) 'plan_id' OPERATOR(pg_catalog.=) $1 ORDER BY seq`, planID)
	if err != nil {
		return nil, fmt.Errorf("reading alerts from the audit trail: %w", err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading alerts from the audit trail: %w", err)
	}
	out := []AlertFact{}
	for _, t := range texts {
		var r struct {
			Time    time.Time         `json:"time"`
			Command string            `json:"command"`
			Tables  []string          `json:"tables"`
			Details map[string]string `json:"details"`
		}
		if err := json.Unmarshal([]byte(t), &r); err != nil {
			continue
		}
		a := AlertFact{At: r.Time, Command: r.Command, Threshold: r.Details["threshold"], Measured: r.Details["measured"], Limit: r.Details["limit"], Unit: r.Details["unit"]}
		if len(r.Tables) == 1 {
			a.Table = r.Tables[0]
		}
		out = append(out, a)
	}
	return out, nil
}

// MigrationHistory reads the schema migrations pgphi ran for this
// database, from pgphi.migrations when that table exists (nil otherwise:
// the report leaves the section out). Columns are read by name, so the
// history may carry more than the report shows: id or version, name,
// status, applied_at or finished_at, applied_by or actor.
func MigrationHistory(ctx context.Context, pool *pgxpool.Pool) ([]MigrationFact, error) {
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT pg_catalog.to_regclass('pgphi.migrations') IS NOT NULL").Scan(&exists); err != nil || !exists {
		return nil, err
	}
	rows, err := pool.Query(ctx, "SELECT pg_catalog.row_to_json(m)::text FROM pgphi.migrations m")
	if err != nil {
		return nil, fmt.Errorf("reading pgphi.migrations: %w", err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading pgphi.migrations: %w", err)
	}
	out := []MigrationFact{}
	for _, t := range texts {
		var m map[string]any
		if err := json.Unmarshal([]byte(t), &m); err != nil {
			continue
		}
		pick := func(names ...string) string {
			for _, n := range names {
				if v, ok := m[n]; ok && v != nil {
					return fmt.Sprint(v)
				}
			}
			return ""
		}
		f := MigrationFact{ID: pick("id", "version", "migration_id"), Name: pick("name", "description"), Status: pick("status", "state"), AppliedBy: pick("applied_by", "actor", "finished_by")}
		if at := pick("applied_at", "finished_at", "completed_at"); at != "" {
			if ts, err := time.Parse(time.RFC3339Nano, at); err == nil {
				f.AppliedAt = &ts
			} else if ts, err := time.Parse("2006-01-02T15:04:05.999999-07:00", at); err == nil {
				f.AppliedAt = &ts
			}
		}
		out = append(out, f)
	}
	return out, nil
}
