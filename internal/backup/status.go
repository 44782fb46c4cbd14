package backup

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Status is whether a recently verified backup exists.
type Status struct {
	OK       bool       `json:"ok"` // a verified backup taken within MaxAge
	MaxAge   string     `json:"max_age"`
	TakenAt  *time.Time `json:"taken_at,omitempty"` // the newest verified backup
	BackupID string     `json:"backup_id,omitempty"`
	Format   string     `json:"format,omitempty"`
}

// Querier runs one query returning one row.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// LatestVerified reads, through pgphi.backup_status, whether a backup
// verified by restoring it was taken within maxAge, and which is the newest.
func LatestVerified(ctx context.Context, q Querier, maxAge time.Duration) (Status, error) {
	st := Status{MaxAge: maxAge.String()}
	var id, format *string
	if err := q.QueryRow(ctx, "SELECT ok, taken_at, backup_id, format FROM pgphi.backup_status(make_interval(secs => $1))",
		maxAge.Seconds()).Scan(&st.OK, &st.TakenAt, &id, &format); err != nil {
		return st, fmt.Errorf("backup: reading the backups: %w", err)
	}
	if id != nil {
		st.BackupID = *id
	}
	if format != nil {
		st.Format = *format
	}
	return st, nil
}

// Describe is the status in one line for check and the report.
func (s Status) Describe() string {
	if s.TakenAt == nil {
		return "no backup was ever verified by restoring it"
	}
	age := time.Since(*s.TakenAt).Round(time.Minute)
	if s.OK {
		return fmt.Sprintf("backup %s (%s) taken %s ago, verified by restoring it; within the pinned maximum age %s", s.BackupID, s.Format, age, s.MaxAge)
	}
	return fmt.Sprintf("the newest verified backup %s (%s) was taken %s ago, older than the pinned maximum age %s", s.BackupID, s.Format, age, s.MaxAge)
}
