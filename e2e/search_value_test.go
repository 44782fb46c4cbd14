package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/pgphi/pgphi/internal/audit"
)

// runWithStdin runs pgphi with the fixture's globals and stdin.
func (f *fixture) runWithStdin(stdin string, args ...string) result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	all := append(f.globals(), args...)
	cmd := exec.CommandContext(ctx, pgphiBin, all...)
	cmd.Env = append(cleanEnv(), f.env...)
	cmd.Dir = f.t.TempDir()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{args: all, stdout: out.String(), stderr: errb.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	default:
		f.t.Fatalf("pgphi %s: %v", strings.Join(all, " "), err)
	}
	assertNoStackTrace(f.t, all, r.stderr)
	return r
}

// The search value can be kept off the command line (where ps,
// /proc/PID/cmdline and shell history see it): `--value -` or `--exact -`
// read it from stdin. The old form still works, with a warning. The audit
// record says what was searched (table, column, kind, reason, number of
// keys) and never the value or the keys.
func TestSearchValueFromStdin(t *testing.T) {
	t.Parallel()
	const canary = "Zzvaluecanaryqx"
	f := newFixture(t, `version: 1
tables:
  patient:
    columns:
      last_name: { class: pii, search: [exact, prefix] }
`)
	f.exec(`CREATE TABLE patient (uid text PRIMARY KEY, last_name text)`)
	f.exec(`INSERT INTO patient VALUES ('Kkeycanary-1', $1), ('Kkeycanary-2', $1), ('Kkeycanary-3', 'Jones')`, canary)
	f.mustRun("keys", "init")
	f.mustRun("apply")

	lastSearch := func() (audit.Record, string) {
		t.Helper()
		var text string
		if err := f.conn().QueryRow(context.Background(),
			`SELECT record::text FROM pgphi.audit_log WHERE record->>'command' = 'search' ORDER BY seq DESC LIMIT 1`).Scan(&text); err != nil {
			t.Fatal(err)
		}
		rec, err := audit.ParseRecord([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return rec, text
	}
	noLeak := func(r result) {
		t.Helper()
		var n int64 = queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.audit_log WHERE record::text ILIKE '%' || $1 || '%' OR record::text LIKE '%Kkeycanary%'`, canary)
		if n != 0 {
			t.Fatalf("%d audit records hold the search value or a key found", n)
		}
		if strings.Contains(r.stderr, canary) || strings.Contains(r.stdout, canary) {
			t.Fatalf("the value was echoed: %s", r)
		}
	}

	for _, args := range [][]string{
		{"search", "patient", "last_name", "--kind", "exact", "--value", "-", "--reason", "front desk call"},
		{"search", "patient", "last_name", "--exact", "-", "--reason", "front desk call"},
	} {
		if slices.Contains(args, canary) {
			t.Fatal("test setup: the value is on the command line")
		}
		r := f.runWithStdin(strings.ToLower(canary)+"\n", args...)
		if r.code != 0 || !slices.Equal(strings.Fields(r.stdout), []string{"Kkeycanary-1", "Kkeycanary-2"}) {
			t.Fatalf("search with the value on stdin: %s", r)
		}
		if strings.Contains(r.stderr, "warning") {
			t.Errorf("a warning although the value came from stdin: %s", r.stderr)
		}
		noLeak(r)
		rec, text := lastSearch()
		want := map[string]string{"table": "public.patient", "column": "last_name", "kind": "exact", "value_source": "stdin"}
		for k, v := range want {
			if rec.Details[k] != v {
				t.Errorf("audit details[%s] = %q, want %q (record %s)", k, rec.Details[k], v, text)
			}
		}
		if rec.Event != audit.EventSuccess || rec.Rows != 2 || rec.Reason != "front desk call" {
			t.Errorf("audit record: event %s, rows %d, reason %q; want success, 2, the reason", rec.Event, rec.Rows, rec.Reason)
		}
	}

	// The old form works, warns, and is audited the same way (value_source
	// argument); the value is still never stored.
	r := f.run("search", "patient", "last_name", "--prefix", "Jon", "--reason", "callback")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "Kkeycanary-3" || !strings.Contains(r.stderr, "warning: the search value is on the command line") {
		t.Fatalf("search with the value as an argument: %s", r)
	}
	if rec, _ := lastSearch(); rec.Rows != 1 || rec.Details["kind"] != "prefix" || rec.Details["value_source"] != "argument" {
		t.Errorf("audit record of the old form: rows %d, details %v", rec.Rows, rec.Details)
	}
	noLeak(r)

	// No value on stdin, or a --value without --kind: usage errors.
	if r := f.runWithStdin("", "search", "patient", "last_name", "--value", "-", "--kind", "exact", "--reason", "r"); r.code != 2 {
		t.Errorf("empty stdin: %s", r)
	}
	if r := f.runWithStdin(canary+"\n", "search", "patient", "last_name", "--value", "-", "--reason", "r"); r.code != 2 {
		t.Errorf("--value without --kind: %s", r)
	}
	// A search that finds nothing is audited with 0 rows.
	if r := f.runWithStdin("Nobody\n", "search", "patient", "last_name", "--exact", "-", "--reason", "r"); r.code != 0 || r.stdout != "" {
		t.Fatalf("no match: %s", r)
	}
	if rec, _ := lastSearch(); rec.Rows != 0 || rec.Event != audit.EventSuccess {
		t.Errorf("no match: audit rows %d, event %s", rec.Rows, rec.Event)
	}
}
