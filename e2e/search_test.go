package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/pgphi/pgphi/internal/pgtest"
)

// The search command prints keys and nothing else, refuses to run without a
// reason, and never repeats the search term, even in errors.
func TestSearchCommand(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
tables:
  patient:
    columns:
      last_name: { class: pii, search: [exact, prefix, contains, phonetic] }
      phone: { class: pii, search: [phone] }
      dob: { class: pii, search: [date] }
`)
	conn := pgtest.Connect(t, f.url)
	if _, err := conn.Exec(context.Background(), `CREATE TABLE patient (uid varchar PRIMARY KEY, last_name text, phone text, dob date);
		INSERT INTO patient VALUES ('p1', 'Smith', '+1 415 555 0132', '1990-05-01'), ('p2', 'Smyth', '(415) 555-0199', '1985-02-28'),
		('p3', 'Jones', NULL, NULL), ('p4', 'Zzcanaryqx', '+44 20 7946 0958', '2000-02-29');`); err != nil {
		t.Fatal(err)
	}
	f.mustRun("keys", "init")
	f.mustRun("apply")

	r := f.mustRun("search", "patient", "last_name", "--phonetic", "smith", "--reason", "front desk")
	out, errOut := r.stdout, r.stderr
	// The only thing on stderr is the warning that the value is on the command line.
	errOut = strings.TrimPrefix(errOut, "pgphi: warning: the search value is on the command line, where other processes (ps, /proc/PID/cmdline) and the shell history see it; give it as - to read it from stdin\n")
	if got := strings.Fields(out); !slices.Equal(got, []string{"p1", "p2"}) || errOut != "" {
		t.Fatalf("stdout %q stderr %q", out, errOut)
	}
	out = f.mustRun("search", "patient", "phone", "--last4", "0132", "--reason", "callback", "--json").stdout
	var res struct {
		KeyColumns []string   `json:"key_columns"`
		Keys       [][]string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Keys) != 1 || res.Keys[0][0] != "p1" || res.KeyColumns[0] != "uid" {
		t.Fatalf("json %q: %v", out, err)
	}
	out = f.mustRun("search", "patient", "dob", "--age-between", "0", "200", "--reason", "audit sample").stdout
	if got := strings.Fields(out); !slices.Equal(got, []string{"p1", "p2", "p4"}) {
		t.Fatalf("age-between: %q", out)
	}
	out = f.mustRun("search", "patient", "last_name", "--exact", "nobody", "--reason", "x").stdout
	if out != "" {
		t.Fatalf("no match should print nothing, got %q", out)
	}

	const canary = "Zzcanaryqx"
	for _, bad := range []struct {
		args []string
		code int
	}{
		{[]string{"search", "patient", "last_name", "--exact", canary}, 2},                                      // no reason
		{[]string{"search", "patient", "last_name", "--contains", "Zz", "--reason", "r"}, 2},                    // too short
		{[]string{"search", "patient", "phone", "--exact", canary, "--reason", "r"}, 2},                         // kind not configured
		{[]string{"search", "patient", "nosuch", "--exact", canary, "--reason", "r"}, 2},                        // unknown column
		{[]string{"search", "patient", "last_name", "--exact", canary, "--prefix", canary, "--reason", "r"}, 2}, // two kinds
		{[]string{"search", "patient", "dob", "--date", canary, "--reason", "r"}, 2},                            // not a date
	} {
		r := f.run(bad.args...)
		if r.code != bad.code {
			t.Fatalf("want exit %d, got %s", bad.code, r)
		}
		if strings.Contains(r.stdout+r.stderr, canary) || (bad.args[4] == "Zz" && strings.Contains(r.stdout+r.stderr, "Zz")) {
			t.Fatalf("the search term was echoed: %s", r)
		}
	}
	// The canary is found, and its key printed, but the value itself never is.
	r = f.mustRun("search", "patient", "last_name", "--exact", canary, "--reason", "r")
	if strings.TrimSpace(r.stdout) != "p4" || strings.Contains(r.stdout+r.stderr, canary) {
		t.Fatalf("got %s", r)
	}
}
