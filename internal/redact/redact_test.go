package redact

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/internal/pgtest"
)

func TestMain(m *testing.M) {
	// Fuzzing workers run only FuzzRedactMessage: no server needed.
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.fuzz") {
			os.Exit(m.Run())
		}
	}
	pgtest.Main(m)
}

// canary is planted in values; it must never survive redaction.
const canary = "ZQCANARYQZ"

// values are the shapes a PHI value can take in a message: each is planted
// with the canary inside.
var values = []string{
	`Robert "Bob" Smith`,
	`O'Brien`,
	`a\"b\\c`,
	`{"a","b"}`,
	`("x","y")`,
	`[1, 2]`,
	`{"name": "Jane", "ssn": "078-05-1120"}`,
	"line one\nline two",
	"first\r\nsecond",
	`Zoë Ñandú 山田 İstanbul`,
	`a,b,c`,
	`"`, `)`, `\`, `'`, `}`, `]`, ``,
	`"), (SQLSTATE 23505) "`,
	`" (run pgphi audit verify)`,
	`(1, Jane)`,
}

// templates are real formats that put a value after a marker: PostgreSQL,
// pgx, strconv, encoding/json, pg_repack, psql. %s is the value.
var templates = []string{
	`invalid input syntax for type integer: "%s"`,
	`ERROR: invalid input syntax for type uuid: "%s" (SQLSTATE 22P02)`,
	`value "%s" is out of range for type integer`,
	`"%s" is out of range for type real`,
	`time zone "%s" not recognized`,
	`malformed array literal: "%s"`,
	`Key (mrn)=(%s) already exists.`,
	`Failing row contains (1, %s, null).`,
	`unable to encode %s into text format for int4 (OID 23): cannot find encode plan`,
	`failed to encode args[1]: unable to encode "%s" into binary format`,
	`cannot parse UUID %s`,
	`unexpected trailing data: %s`,
	`bad interval second format: %s`,
	`json: cannot unmarshal number %s into Go value of type string`,
	`invalid character '%s' looking for beginning of value`,
	`host=db user=%s password=x`,
	`writer: no patients ([%s])`,
	`struct {Name:%s}`,
	"INFO: repacking table public.patient\nERROR: query failed: ERROR:  could not create unique index \"index_16386\"\nDETAIL:  Key (mrn)=(%s) is duplicated.",
	"INFO: repacking table public.patient\nDETAIL:  %s",
	"ERROR:  syntax error at end of input\nLINE 1: SELECT %s",
	"ERROR:  bad value CONTEXT: COPY patient, line 1: %s",
	`invalid byte sequence for encoding "UTF8": 0x%s`,
}

func plant(v string) []string { return []string{canary + v, v + canary, v + " " + canary + " " + v} }

func TestMessageCutsEveryPlantedValue(t *testing.T) {
	resetIdentifiers()
	AllowIdentifiers("patient", "mrn", "first_name")
	for _, tpl := range templates {
		for _, v := range values {
			for _, pv := range plant(v) {
				text := strings.Replace(tpl, "%s", pv, 1)
				got := Message(text)
				if strings.Contains(got, canary) || strings.Contains(got, "Bob") || strings.Contains(got, "078-05") {
					t.Errorf("value survived:\n in: %q\nout: %q", text, got)
				}
				if !strings.Contains(got, Placeholder) {
					t.Errorf("no placeholder where a value was cut:\n in: %q\nout: %q", text, got)
				}
				// The same text as an error of any library.
				got = Error(fmt.Errorf("writing batch of public.patient: %w", errors.New(text))).Error()
				if strings.Contains(got, canary) || !strings.HasPrefix(got, "writing batch of public.patient: ") {
					t.Errorf("error text not redacted or context lost:\n in: %q\nout: %q", text, got)
				}
			}
		}
	}
}

func TestMessageKeepsTextWithoutMarkers(t *testing.T) {
	for in, want := range map[string]string{
		"verification incomplete: 3 rows changed since they were encrypted; run `pgphi apply`": "",
		"the last line (seq 12) does not match its own hash (run pgphi audit verify)":          "",
		"pgphi's purge can't start: exit status 1":                                             "",
		"INFO: repacking table public.patient\nINFO: done":                                     "",
		`column "first_name" is of type bytea`:                                                 `column [redacted]`,
		"plan:\nline two 'x'\nline three":                                                      "plan:\nline two [redacted]",
		"(install PostgreSQL's contrib modules)":                                               "",
		"rollback of public.patient.notes: ciphertext does not decrypt (at key (250))":         "rollback of public.patient.notes: ciphertext does not decrypt (at key [redacted]",
	} {
		if want == "" {
			want = in
		}
		if got := Message(in); got != want {
			t.Errorf("Message(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestErrorOfGoLibraries(t *testing.T) {
	v := `Robert "Bob" ` + canary
	_, e1 := strconv.Atoi(v)
	_, e2 := time.Parse("2006-01-02", v)
	var x int
	e3 := json.Unmarshal([]byte(`{"a": "`+canary+`"}`), &x)
	e4 := json.Unmarshal([]byte(canary), &x)
	var s string
	e5 := json.Unmarshal([]byte("987654321"), &s)
	for _, e := range []error{e1, e2, e3, e4, e5} {
		if e == nil {
			t.Fatal("no error")
		}
		got := Error(fmt.Errorf("reading public.patient: %w", e)).Error()
		if strings.Contains(got, canary) || strings.Contains(got, "Bob") || strings.Contains(got, "987654321") || !strings.Contains(got, "public.patient") {
			t.Errorf("%T: %q -> %q", e, e.Error(), got)
		}
	}
}

func TestErrorKeepsPlainErrorsAndUnwraps(t *testing.T) {
	e := fmt.Errorf("plain")
	if Error(e) != e || Error(nil) != nil {
		t.Fatal("changed an error that holds no value")
	}
	pgErr := &pgconn.PgError{Severity: "ERROR", Code: "22P02", Message: `invalid input syntax for type integer: "` + canary + `"`}
	wrapped := Error(fmt.Errorf("ctx: %w", pgErr))
	var got *pgconn.PgError
	if !errors.As(wrapped, &got) || got != pgErr {
		t.Fatal("redacted error does not unwrap to its cause")
	}
	if s, ok := wrapped.(interface{ SQLState() string }); !ok || s.SQLState() != "22P02" {
		t.Fatal("SQLSTATE lost")
	}
	// Redacting twice, or redacted text embedded with %v, stays redacted.
	again := Error(fmt.Errorf("outer: %v", wrapped)).Error()
	if strings.Contains(again, canary) || !strings.Contains(again, "outer: ") {
		t.Fatalf("re-redaction: %q", again)
	}
}

func TestDescribe(t *testing.T) {
	resetIdentifiers()
	AllowIdentifiers("first_name")
	cases := []struct {
		e       pgconn.PgError
		keep    []string
		dropped []string
	}{
		{pgconn.PgError{Severity: "ERROR", Code: "23505", Message: `duplicate key value violates unique constraint "patient_ssn_key"`,
			Detail: "Key (ssn)=(078-05-1120) already exists.", TableName: "patient", ConstraintName: "patient_ssn_key"},
			[]string{`constraint "patient_ssn_key"`, "23505", "table patient"}, []string{"078-05"}},
		{pgconn.PgError{Severity: "ERROR", Code: "23502", Message: `null value in column "first_name" of relation "patient" violates not-null constraint`,
			Detail: "Failing row contains (1, " + canary + ").", TableName: "patient", ColumnName: "first_name"},
			[]string{`null value in column "first_name" of relation "patient" violates not-null constraint`}, nil},
		// A quoted value where an object name would go, in a message the
		// server writes: not an allowed name, cut.
		{pgconn.PgError{Severity: "ERROR", Code: "42P01", Message: `relation "` + canary + `" does not exist`},
			[]string{"relation [redacted]"}, nil},
		// An allowed name followed by the rest of a value is cut.
		{pgconn.PgError{Severity: "ERROR", Code: "22023", Message: `time zone "first_name" ` + canary + `" not recognized`},
			[]string{"time zone [redacted]"}, nil},
		{pgconn.PgError{Severity: "ERROR", Code: "22P02", Message: `invalid input value for enum mood: "Robert "Bob" ` + canary + `"`},
			[]string{"invalid input value for enum mood: [redacted] (SQLSTATE 22P02)"}, []string{"Bob"}},
		{pgconn.PgError{Severity: "ERROR", Code: "22021", Message: `invalid byte sequence for encoding "UTF8": 0x` + canary},
			[]string{"invalid byte sequence"}, nil},
		{pgconn.PgError{Severity: "ERROR", Code: "22003", Message: `"1e500` + canary + `" is out of range for type double precision`},
			[]string{"ERROR: [redacted] (SQLSTATE 22003)"}, nil},
		// The application's RAISE: user text, dropped whole with its fields.
		{pgconn.PgError{Severity: "ERROR", Code: "P0001", Message: "bad ssn 078-05-1120 for " + canary, Where: "PL/pgSQL function f() line 3 at RAISE", ColumnName: canary},
			[]string{"ERROR: [redacted] (SQLSTATE P0001)"}, []string{"078-05"}},
		{pgconn.PgError{Severity: "ERROR", Code: "23505", Message: "duplicate ssn 078-05-1120 " + canary, Where: "PL/pgSQL function f() line 3 at RAISE"},
			[]string{"ERROR: [redacted] (SQLSTATE 23505)"}, []string{"078-05"}},
		// pgphi's own RAISE is kept.
		{pgconn.PgError{Severity: "ERROR", Code: "42501", Message: "pgphi: plaintext write to a protected column of public.patient refused: require_encryption is on",
			Hint: "write the ciphertext column instead", Where: "PL/pgSQL function pgphi.t() line 4 at RAISE"},
			[]string{"require_encryption is on (SQLSTATE 42501) HINT: write the ciphertext column instead"}, nil},
		{pgconn.PgError{Severity: "ERROR", Code: "23514", Message: `new row for relation "patient" violates check constraint "patient_age_check"`,
			Detail: "Failing row contains (" + canary + ").", TableName: "patient", ConstraintName: "patient_age_check", Hint: canary, InternalQuery: canary, Where: canary},
			[]string{`new row for relation "patient" violates check constraint "patient_age_check"`}, nil},
	}
	for _, c := range cases {
		got := Describe(&c.e)
		for _, d := range append(c.dropped, canary) {
			if strings.Contains(got, d) {
				t.Errorf("Describe(%q) = %q: %q survived", c.e.Message, got, d)
			}
		}
		for _, k := range c.keep {
			if !strings.Contains(got, k) {
				t.Errorf("Describe(%q) = %q, want it to contain %q", c.e.Message, got, k)
			}
		}
	}
}

// A full disk or an I/O error names a file and the operating system's
// error, never a value: the operator must read "No space left on device".
func TestSystemErrorsKeepTheirWholeMessage(t *testing.T) {
	for _, e := range []*pgconn.PgError{
		{Severity: "ERROR", Code: "53100", Message: `could not extend file "pg_tblspc/16385/PG_15_202209061/16384/16390": No space left on device`},
		{Severity: "PANIC", Code: "58030", Message: `could not write to file "pg_wal/xlogtemp.1234": No space left on device`},
	} {
		got := Describe(e)
		if !strings.Contains(got, e.Message) {
			t.Errorf("Describe(%s) = %q, want the whole message", e.Code, got)
		}
	}
	// A data error still loses its value.
	got := Describe(&pgconn.PgError{Severity: "ERROR", Code: "22P02", Message: `invalid input syntax for type integer: "Zzcanaryq"`})
	if strings.Contains(got, "Zzcanaryq") {
		t.Errorf("data error kept its value: %q", got)
	}
}
