package compliance

import (
	"context"
	"errors"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/internal/alert"
	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/hooks"
	"github.com/pgphi/pgphi/internal/policy"
)

// The audit record of a run: who, what, where and why, never a value.

func withEvent(r audit.Record, e string) audit.Record { r.Event = e; return r }

// alertDetails is an alert as audit details: names and numbers only.
func alertDetails(a alert.Alert) map[string]string {
	return map[string]string{
		"threshold": string(a.Threshold),
		"measured":  strconv.FormatFloat(a.Measured, 'g', 6, 64),
		"limit":     strconv.FormatFloat(a.Limit, 'g', 6, 64),
		"unit":      a.Unit,
	}
}

func (w *Wrapper) baseRecord(ctx context.Context, s *Session, command, reason string) audit.Record {
	actor := audit.LocalActor(s.Cfg.Actor)
	if actor.Name == "" {
		actor.Name = actor.OSUser
	}
	var dbName string
	_ = s.Pool.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&actor.DBRole, &dbName)
	cc := s.Pool.Config().ConnConfig
	return audit.Record{
		Command: command, Environment: s.Cfg.Environment, Reason: reason,
		Actor: actor, DBHost: cc.Host, DBName: dbName,
	}
}

// describePlan adds the plan id, tables and columns to the audit record.
func (w *Wrapper) describePlan(s *Session, r *audit.Record) {
	r.PlanID = s.Plan.ID
	for _, t := range s.Plan.Tables {
		r.Tables = append(r.Tables, t.QualifiedName())
		for _, c := range t.Columns {
			r.Columns = append(r.Columns, t.QualifiedName()+"."+c.Name)
		}
	}
}

// errorClass names what went wrong without any value: SQLSTATE, a policy
// refusal kind, or the Go error's type of failure.
func errorClass(err error) string {
	var pgErr *pgconn.PgError
	var rowErr *engine.RowError
	switch {
	case errors.As(err, &pgErr):
		return "SQLSTATE " + pgErr.Code
	case errors.As(err, &rowErr):
		return "unencryptable value"
	case errors.Is(err, policy.ErrAccessDenied), errors.Is(err, policy.ErrPinsUnreadable):
		return "policy: access denied"
	case errors.Is(err, policy.ErrPinsMismatch):
		return "policy: pins differ"
	case errors.Is(err, ErrNoVerifiedBackup):
		return "policy: no verified backup"
	case errors.Is(err, policy.ErrApprovalRequired):
		return "policy: approval required"
	case errors.Is(err, hooks.ErrHookFailed):
		return "policy: hook failed"
	case errors.Is(err, engine.ErrRefused):
		return "policy: refused"
	case errors.Is(err, errValidation):
		return "policy: validation failed"
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, dbconn.ErrConnect):
		return "connection"
	}
	var ve *engine.VerifyError
	if errors.As(err, &ve) {
		return "verification mismatch"
	}
	return "error"
}

var errValidation = errors.New("validation failed")
