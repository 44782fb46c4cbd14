// Package redact keeps values that could be PHI out of what pgphi prints,
// logs and audits. PostgreSQL errors carry row values in their DETAIL lines
// (`Key (ssn)=(123-45-6789) already exists`) and sometimes in the message
// itself (`invalid input syntax for type integer: "..."`); Error drops the
// former and masks every quoted literal of the latter that is not a known
// identifier.
package redact

import (
	"errors"
	"regexp"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// Mask replaces a redacted literal.
const Mask = `"[redacted]"`

var (
	mu     sync.RWMutex
	idents = map[string]bool{}
)

// AllowIdentifiers registers names (tables, columns, constraints from the
// config and catalog) that may appear quoted in messages without being masked.
func AllowIdentifiers(names ...string) {
	mu.Lock()
	defer mu.Unlock()
	for _, n := range names {
		idents[n] = true
	}
}

var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// Message masks quoted literals in a server message, keeping known identifiers.
func Message(msg string, extra ...string) string {
	mu.RLock()
	defer mu.RUnlock()
	return quoted.ReplaceAllStringFunc(msg, func(q string) string {
		inner := q[1 : len(q)-1]
		if idents[inner] {
			return q
		}
		for _, e := range extra {
			if e != "" && inner == e {
				return q
			}
		}
		return Mask
	})
}

// Error returns err with any PostgreSQL error in its chain rewritten to a
// value-free form: severity, masked message, SQLSTATE and the structured
// schema/table/column/constraint names. DETAIL, HINT, WHERE and internal
// queries are dropped. Errors without a PostgreSQL part pass through.
func Error(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	full := err.Error()
	orig := pgErr.Error()
	safe := Describe(pgErr)
	if i := strings.Index(full, orig); i >= 0 {
		full = full[:i] + safe + full[i+len(orig):]
	} else {
		full = safe
	}
	return &redacted{msg: full, code: pgErr.Code, cause: err}
}

// Describe renders a PostgreSQL error without values.
func Describe(e *pgconn.PgError) string {
	var b strings.Builder
	b.WriteString(e.Severity)
	b.WriteString(": ")
	b.WriteString(Message(e.Message, e.SchemaName, e.TableName, e.ColumnName, e.ConstraintName, e.DataTypeName))
	b.WriteString(" (SQLSTATE ")
	b.WriteString(e.Code)
	b.WriteString(")")
	var where []string
	if e.TableName != "" {
		where = append(where, "table "+e.TableName)
	}
	if e.ColumnName != "" {
		where = append(where, "column "+e.ColumnName)
	}
	if e.ConstraintName != "" {
		where = append(where, "constraint "+e.ConstraintName)
	}
	if len(where) > 0 {
		b.WriteString(" [" + strings.Join(where, ", ") + "]")
	}
	return b.String()
}

type redacted struct {
	msg   string
	code  string
	cause error
}

func (r *redacted) Error() string { return r.msg }

// SQLState returns the SQLSTATE of the redacted PostgreSQL error.
func (r *redacted) SQLState() string { return r.code }

// Unwrap keeps errors.Is/As working for non-PostgreSQL causes (context
// cancellation, sentinel errors); callers that print must print Error().
func (r *redacted) Unwrap() error { return r.cause }
