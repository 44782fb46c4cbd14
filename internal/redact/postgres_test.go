package redact

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/internal/pgtest"
)

// The canary as a value a patient could have: quotes, brackets, a comma.
const pgCanary = `Robert "Bob" (` + canary + `), {x}`

// TestRealPostgresErrorsLoseTheirValues provokes on a real server the errors
// that carry a value in their message, DETAIL, WHERE or CONTEXT, and checks
// that the redacted text keeps the object names and never the value.
func TestRealPostgresErrorsLoseTheirValues(t *testing.T) {
	conn := pgtest.Connect(t, pgtest.NewDatabase(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, q := range []string{
		`CREATE TYPE redact_mood AS ENUM ('calm')`,
		`CREATE TYPE redact_pair AS (a int, b text)`,
		`CREATE TABLE redact_patient (
			id int PRIMARY KEY,
			mrn text CONSTRAINT redact_patient_mrn_key UNIQUE,
			age int CONSTRAINT redact_patient_age_check CHECK (age < 150),
			initials varchar(5))`,
		`CREATE TABLE redact_visit (id int PRIMARY KEY, mrn text CONSTRAINT redact_visit_mrn_fkey REFERENCES redact_patient (mrn))`,
		`CREATE TABLE redact_note (id int PRIMARY KEY, body text)`,
		`CREATE FUNCTION redact_note_check() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.id = 1 THEN RAISE EXCEPTION 'note % refused', NEW.body; END IF;
			RAISE EXCEPTION 'duplicate note %', NEW.body USING ERRCODE = 'unique_violation', COLUMN = NEW.body;
		END $$`,
		`CREATE TRIGGER redact_note_check BEFORE INSERT ON redact_note FOR EACH ROW EXECUTE FUNCTION redact_note_check()`,
		`INSERT INTO redact_patient (id, mrn) VALUES (1, '` + strings.ReplaceAll(pgCanary, "'", "''") + `')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	AllowIdentifiers("redact_patient", "mrn", "age", "initials")
	cases := []struct {
		name, sql string
		args      []any
		code      string
		keep      []string
	}{
		{"invalid int", `SELECT ($1::text)::int`, []any{pgCanary}, "22P02", []string{"invalid input syntax for type integer"}},
		{"invalid date", `SELECT ($1::text)::date`, []any{"2020-13-01 " + pgCanary}, "22007", []string{"invalid input syntax for type date"}},
		{"invalid uuid", `SELECT ($1::text)::uuid`, []any{pgCanary}, "22P02", []string{"invalid input syntax for type uuid"}},
		{"invalid json", `SELECT ($1::text)::json`, []any{`{"name": "Robert \"Bob\" ` + canary + `", "x": [1,}`}, "22P02", []string{"invalid input syntax for type json"}},
		{"invalid enum", `SELECT ($1::text)::redact_mood`, []any{pgCanary}, "22P02", []string{"invalid input value for enum redact_mood"}},
		{"array literal", `SELECT ($1::text)::text[]`, []any{`{"a","` + canary + `"`}, "22P02", []string{"malformed array literal"}},
		{"int array element", `SELECT ($1::text)::int[]`, []any{`{1,"` + canary + `"}`}, "22P02", []string{"invalid input syntax for type integer"}},
		{"composite literal", `SELECT ($1::text)::redact_pair`, []any{`(1,"` + canary + `"`}, "22P02", []string{"malformed record literal"}},
		{"unique violation", `INSERT INTO redact_patient (id, mrn) VALUES (2, $1)`, []any{pgCanary}, "23505",
			[]string{`unique constraint "redact_patient_mrn_key"`, "table redact_patient"}},
		{"unique index build", `CREATE UNIQUE INDEX redact_patient_age_key ON redact_patient ((mrn || ''))`, nil, "", nil},
		{"check violation", `INSERT INTO redact_patient (id, mrn, age) VALUES (3, $1, 200)`, []any{pgCanary + "x"}, "23514",
			[]string{`new row for relation "redact_patient" violates check constraint "redact_patient_age_check"`}},
		{"foreign key violation", `INSERT INTO redact_visit (id, mrn) VALUES (1, $1)`, []any{pgCanary + "y"}, "23503",
			[]string{`violates foreign key constraint "redact_visit_mrn_fkey"`, "table redact_visit"}},
		{"value too long", `INSERT INTO redact_patient (id, initials) VALUES (4, $1)`, []any{pgCanary}, "22001",
			[]string{"value too long for type character varying(5)"}},
		{"application RAISE", `INSERT INTO redact_note VALUES (1, $1)`, []any{pgCanary}, "P0001", nil},
		{"application RAISE with a SQLSTATE", `INSERT INTO redact_note VALUES (2, $1)`, []any{pgCanary}, "23505", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "unique index build" {
				if _, err := conn.Exec(ctx, `INSERT INTO redact_patient (id, mrn) VALUES (5, $1 || '')`, pgCanary+"z"); err != nil {
					t.Fatal(err)
				}
				if _, err := conn.Exec(ctx, `UPDATE redact_patient SET mrn = $1 WHERE id = 5`, pgCanary+"z"); err != nil {
					t.Fatal(err)
				}
				c.sql = `CREATE UNIQUE INDEX redact_patient_x_key ON redact_patient ((left(mrn, 24)))`
				c.code = "23505"
				c.keep = []string{"could not create unique index", "table redact_patient"}
			}
			_, err := conn.Exec(ctx, c.sql, c.args...)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || (c.code != "" && pgErr.Code != c.code) {
				t.Fatalf("want SQLSTATE %s, got %v", c.code, err)
			}
			raw := strings.Join([]string{pgErr.Message, pgErr.Detail, pgErr.Where, pgErr.Hint, pgErr.ColumnName}, "\n")
			if !strings.Contains(raw, canary) && c.name != "value too long" {
				t.Fatalf("the server's error does not carry the canary, the test proves nothing: %+v", pgErr)
			}
			got := Error(fmt.Errorf("writing batch of public.redact_patient: %w", err)).Error()
			t.Logf("%s\n  -> %s", pgErr.Error(), got)
			if strings.Contains(got, canary) || strings.Contains(got, "Bob") {
				t.Fatalf("value survived: %s", got)
			}
			for _, k := range append(c.keep, "writing batch of public.redact_patient: ", "SQLSTATE "+pgErr.Code) {
				if !strings.Contains(got, k) {
					t.Errorf("%q lost: %s", k, got)
				}
			}
		})
	}
}

// TestPgxEncodeErrorLosesItsValue: pgx refuses client-side to encode a Go
// value for a parameter, and prints the value with %#v or %v.
func TestPgxEncodeErrorLosesItsValue(t *testing.T) {
	conn := pgtest.Connect(t, pgtest.NewDatabase(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type patient struct{ Name, SSN string }
	for _, arg := range []any{
		[]string{pgCanary},
		patient{Name: pgCanary, SSN: "078-05-1120"},
		map[string]string{"name": pgCanary},
		int64(987654321),
		time.Date(1987, 6, 5, 0, 0, 0, 0, time.UTC),
	} {
		_, err := conn.Exec(ctx, `SELECT $1::uuid`, arg)
		if err == nil {
			t.Fatalf("%T encoded", arg)
		}
		// time.Time is sent as text and refused by the server: redacted too.
		got := Error(fmt.Errorf("writing batch of public.patient: %w", err)).Error()
		t.Logf("%v\n  -> %s", err, got)
		for _, leak := range []string{canary, "Bob", "078-05", "987654321", "1987"} {
			if strings.Contains(got, leak) {
				t.Errorf("%T: %q survived: %s", arg, leak, got)
			}
		}
		if !strings.HasPrefix(got, "writing batch of public.patient: ") {
			t.Errorf("context lost: %s", got)
		}
	}
}

// TestRepackOutputLosesItsValues runs a fake pg_repack that fails the way
// the real one does (it prints the server's message and DETAIL) and builds
// the error as engine/purge.go does.
func TestRepackOutputLosesItsValues(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "pg_repack")
	outputs := []string{
		"INFO: repacking table \"public.patient\"\nERROR: query failed: ERROR:  could not create unique index \"index_16386\"\nDETAIL:  Key (mrn)=(" + pgCanary + ") is duplicated.",
		"INFO: repacking table \"public.patient\"\nERROR: query failed: ERROR:  invalid input syntax for type integer: \"" + pgCanary + "\"",
		"WARNING: the table \"public.patient\" has no primary key\nERROR: query failed: ERROR:  new row for relation \"patient\" violates check constraint \"c\"\nDETAIL:  Failing row contains (1, " + pgCanary + ").",
		"ERROR: query failed: ERROR:  " + pgCanary,
	}
	for i, out := range outputs {
		script := "#!/bin/sh\ncat >&2 <<'EOF'\n" + out + "\nEOF\nexit 1\n"
		if err := os.WriteFile(bin, []byte(script), 0o700); err != nil {
			t.Fatal(err)
		}
		b, err := exec.Command(bin, "-t", "public.patient").CombinedOutput()
		if err == nil || !strings.Contains(string(b), canary) {
			t.Fatalf("fake pg_repack: %v %q", err, b)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		last := lines[len(lines)-1]
		e := fmt.Errorf("pg_repack of %s failed: %v: %s", "public.patient", err, last)
		got := Error(e).Error()
		whole := Message(string(b))
		t.Logf("%d: %s\n  -> %s\n  -> %s", i, e, got, whole)
		for _, s := range []string{got, whole} {
			if strings.Contains(s, canary) || strings.Contains(s, "Bob") {
				t.Errorf("value survived: %q", s)
			}
		}
		if !strings.HasPrefix(got, "pg_repack of public.patient failed: exit status 1") {
			t.Errorf("context lost: %s", got)
		}
	}
}
