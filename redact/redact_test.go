package redact

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestErrorDropsDetailAndMasksLiterals(t *testing.T) {
	pgErr := &pgconn.PgError{Severity: "ERROR", Code: "23505", Message: `duplicate key value violates unique constraint "patient_ssn_key"`,
		Detail: "Key (ssn)=(123-45-6789) already exists.", TableName: "patient", ConstraintName: "patient_ssn_key"}
	err := Error(fmt.Errorf("writing batch of public.patient: %w", pgErr))
	got := err.Error()
	if strings.Contains(got, "123-45-6789") {
		t.Fatalf("detail leaked: %s", got)
	}
	if !strings.Contains(got, "writing batch of public.patient") || !strings.Contains(got, "23505") || !strings.Contains(got, `"patient_ssn_key"`) {
		t.Fatalf("context lost: %s", got)
	}

	pgErr = &pgconn.PgError{Severity: "ERROR", Code: "22P02", Message: `invalid input syntax for type integer: "Jane Canary"`}
	got = Error(pgErr).Error()
	if strings.Contains(got, "Jane Canary") || !strings.Contains(got, Mask) {
		t.Fatalf("literal leaked: %s", got)
	}
	AllowIdentifiers("first_name")
	if got := Message(`column "first_name" is of type bytea`); got != `column "first_name" is of type bytea` {
		t.Fatalf("identifier masked: %s", got)
	}
}

func TestNonPostgresErrorsPassThrough(t *testing.T) {
	e := fmt.Errorf("plain")
	if Error(e) != e || Error(nil) != nil {
		t.Fatal("changed a non-PostgreSQL error")
	}
}
