package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pgphi/pgphi/internal/pgtest"
)

// leakageReport mirrors `pgphi leakage --json`.
type leakageReport struct {
	Columns []struct {
		Table              string  `json:"table"`
		Column             string  `json:"column"`
		Stored             bool    `json:"stored"`
		Sizing             string  `json:"sizing"`
		Rows               int64   `json:"rows"`
		Values             int64   `json:"values"`
		Arrays             int64   `json:"arrays"`
		MeanValuesPerArray float64 `json:"mean_values_per_array"`
		MinValuesPerArray  int64   `json:"min_values_per_array"`
		Families           []struct {
			SubKind           string  `json:"sub_kind"`
			Bits              int     `json:"bits"`
			Values            int64   `json:"values"`
			Terms             int64   `json:"terms"`
			MeanValuesPerTerm float64 `json:"mean_values_per_term"`
		} `json:"families"`
		Queries []struct {
			Kind       string  `json:"kind"`
			Candidates float64 `json:"expected_candidates"`
			Matches    float64 `json:"expected_matches"`
		} `json:"queries"`
		Accepted string `json:"accepted_leakage"`
	} `json:"columns"`
}

func decodeLeakage(t *testing.T, r result) leakageReport {
	t.Helper()
	var l leakageReport
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		t.Fatalf("leakage --json: %v\n%s", err, r)
	}
	return l
}

// Twenty distinct first names over 2,000 rows are sized by distinct values
// at first apply (a handful of bits, recorded with the counts), every
// family and every whole term array is shared by at least two distinct
// values as measured on the data, and search still finds exactly the rows.
func TestLeakageSizedByDistinctValues(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `version: 1
environment: test
tables:
  patient:
    columns:
      first_name: { class: pii, search: [exact, prefix, phonetic] }
      email: { class: pii, search: [exact] }
      dob: { class: phi, search: [date] }
`)
	names := []string{"James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William", "Elizabeth",
		"David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen"}
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, first_name text, email text, dob date)`)
	f.exec(`INSERT INTO patient SELECT g, ($1::text[])[1 + g % 20], 'p' || g || '@example.org', date '1940-01-01' + (g * 7919) % 20000
		FROM generate_series(1, 2000) g`, names)
	f.exec(`UPDATE patient SET first_name = $1 WHERE id = 7`, complCanary)
	complExpect(t, f.run("keys", "init"), 0)
	plan := f.run("plan")
	complExpect(t, plan, 0, "distinct of 2000 rows", "per term array")
	t.Log(plan.stdout)
	complExpect(t, f.run("apply"), 0)

	// The sizing is recorded: by distinct values, with the counts.
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.blind_indexes WHERE sizing <> 'distinct' OR distinct_values IS NULL OR column_values IS NULL`); n != 0 {
		t.Fatalf("%d families not sized by distinct values:\n%s", n, f.run("plan").stdout)
	}
	if b := queryInt(t, f.conn(), `SELECT bits FROM pgphi.blind_indexes WHERE column_name = 'first_name' AND sub_kind = 'exact'`); b > 3 {
		t.Fatalf("first_name exact: %d bits for 21 distinct names (the row planner gave 9)", b)
	}
	if v := queryInt(t, f.conn(), `SELECT column_values FROM pgphi.blind_indexes WHERE column_name = 'first_name' AND sub_kind = 'exact'`); v != 21 {
		t.Fatalf("first_name: %d distinct values recorded, want 21", v)
	}

	r := f.run("leakage", "--json")
	complExpect(t, r, 0)
	l := decodeLeakage(t, r)
	if len(l.Columns) != 3 {
		t.Fatalf("leakage of %d columns, want 3:\n%s", len(l.Columns), r.stdout)
	}
	for _, c := range l.Columns {
		if !c.Stored || c.Sizing != "distinct" || c.Rows != 2000 {
			t.Errorf("%s: stored %v sizing %s rows %d", c.Column, c.Stored, c.Sizing, c.Rows)
		}
		if c.MeanValuesPerArray < 2 {
			t.Errorf("%s: %.2f distinct values per term array, want >= 2", c.Column, c.MeanValuesPerArray)
		}
		for _, fam := range c.Families {
			if fam.MeanValuesPerTerm < 2 {
				t.Errorf("%s %s: %.2f distinct values per term (%d values, %d terms, %d bits), want >= 2", c.Column, fam.SubKind, fam.MeanValuesPerTerm, fam.Values, fam.Terms, fam.Bits)
			}
		}
		for _, q := range c.Queries {
			if q.Candidates < q.Matches || q.Matches <= 0 {
				t.Errorf("%s %s query: %.1f candidates, %.1f matches", c.Column, q.Kind, q.Candidates, q.Matches)
			}
		}
	}
	text := f.run("leakage")
	complExpect(t, text, 0, "public.patient.first_name", "VALUES/TERM", "expected per query: exact")

	// Search is exact with the few bits: every row of one name, no other.
	want := queryInt(t, f.conn(), `SELECT count(*) FROM patient WHERE first_name = 'Mary'`)
	s := f.run("search", "patient", "first_name", "--exact", "mary", "--reason", "test", "--json")
	complExpect(t, s, 0)
	var res struct {
		Keys       [][]string `json:"keys"`
		Candidates int        `json:"candidates"`
	}
	if err := json.Unmarshal([]byte(s.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if int64(len(res.Keys)) != want || res.Candidates < len(res.Keys) {
		t.Fatalf("search mary: %d keys (%d candidates), want %d", len(res.Keys), res.Candidates, want)
	}
	complAssertNoLeak(t, f, complCanary, plan, r, text, s)
}

// In production a column below the budget fails check; the configuration
// may only propose accept_leakage: until a dba pins it, with approvals, the
// configuration is refused; a non-dba cannot pin it; once pinned, check
// passes that item and shows the reason.
func TestLeakageAcceptanceIsPinned(t *testing.T) {
	t.Parallel()
	header := "environment: production\naccess: { allow_superuser: true }\napprovals:\n  signers: allowed_signers\n  require:\n    production: { dba: 1, healthcare_admin: 1 }\n"
	yaml := func(accept string) string {
		opts := "bits: { exact: 20 }"
		if accept != "" {
			opts += ", accept_leakage: " + accept
		}
		return "version: 1\n" + header + "tables:\n  patient:\n    columns:\n      last_name: { class: pii, search: [exact], search_options: { " + opts + " } }\n      ssn: { class: pii }\n"
	}
	f := newFixture(t, "")
	a := pgtest.NewActors(t, f.url)
	keys := tpSigners(t, f, a)
	f.writeConfig(yaml(""))
	complCreatePatient(f, 40, 0)
	f.exec(`ALTER TABLE patient OWNER TO ` + a.AppOwner)
	complExpect(t, f.run("roles", "init"), 0, "pinned the security policy")
	complExpect(t, f.run("keys", "init"), 0)

	leakageItem := func(r result) (passed, required bool, evidence string) {
		t.Helper()
		var cl complChecklist
		if err := json.Unmarshal([]byte(r.stdout), &cl); err != nil {
			t.Fatalf("check --json: %v\n%s", err, r)
		}
		for _, c := range cl.Items {
			if c.ID == "leakage" {
				return c.Passed, c.Required, c.Evidence
			}
		}
		t.Fatalf("check has no leakage item:\n%s", r.stdout)
		return
	}
	// 40 distinct last names on 2^20 terms: one value per term.
	r := tpAs(f, a, a.DBA, "check", "--json")
	complExpect(t, r, 4)
	if passed, required, ev := leakageItem(r); passed || !required || !strings.Contains(ev, "public.patient.last_name 1.00") || !strings.Contains(ev, "BELOW 2 and not accepted") {
		t.Fatalf("leakage item: passed %v required %v evidence %q; want a failed requirement naming last_name at 1.00", passed, required, ev)
	}

	// The configuration proposes the acceptance: refused, it is not pinned.
	const reason = "lookup by surname must stay under 10 ms"
	f.writeConfig(yaml(`"` + reason + `"`))
	for _, role := range []string{a.DBA, a.HealthcareAdmin} {
		complExpect(t, tpAs(f, a, role, "check"), 4, "differs from the pinned security policy", "accept_leakage of public.patient.last_name: not pinned, the configuration proposes it")
		complAssertRefused(t, f, "check", "pins")
	}
	// A healthcare_admin member cannot pin it, through pgphi or directly.
	complExpect(t, tpAs(f, a, a.HealthcareAdmin, "pins", "set", "--from-config"), 4, "access denied")
	ha := a.Connect(t, a.HealthcareAdmin)
	for _, sql := range []string{
		`SELECT pgphi.pins_replace((SELECT max(seq) FROM pgphi.pins), '{}')`,
		`INSERT INTO pgphi.pins (seq, pins_id, body, pinned_at, pinned_by) VALUES (99, 'x', '{}', now(), 'x')`,
		`UPDATE pgphi.pins SET body = body`,
	} {
		if _, err := ha.Exec(t.Context(), sql); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("healthcare_admin member: %s: %v, want permission denied", firstLine(sql), err)
		}
	}
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.pins`); n != 1 {
		t.Fatalf("%d pin versions, want 1", n)
	}

	// The dba pins it, approved under the current pins.
	show := tpAs(f, a, a.AuditOfficer, "pins", "show")
	m := pinsIDRe.FindStringSubmatch(show.stdout)
	if m == nil {
		t.Fatalf("pins show does not name the proposed pins id:\n%s", show)
	}
	id := m[1]
	complExpect(t, tpAs(f, a, a.DBA, "pins", "set", "--from-config"), 4, "approval required")
	complExpect(t, tpAs(f, a, a.DBA, "approve", id, "--command", "pins", "--key", keys["alice"]), 0)
	complExpect(t, tpAs(f, a, a.HealthcareAdmin, "approve", id, "--command", "pins", "--key", keys["bob"]), 0)
	complExpect(t, tpAs(f, a, a.DBA, "pins", "set", "--from-config"), 0, "pinned "+id)
	complExpect(t, tpAs(f, a, a.AuditOfficer, "pins", "show"), 0, "accept_leakage public.patient.last_name: "+reason)

	r = tpAs(f, a, a.DBA, "check", "--json")
	if passed, _, ev := leakageItem(r); !passed || !strings.Contains(ev, "accepted by the pinned policy: "+reason) {
		t.Fatalf("leakage item after pinning: passed %v evidence %q", passed, ev)
	}
	lr := tpAs(f, a, a.DBA, "leakage")
	complExpect(t, lr, 0, "BELOW 2, accepted by the pinned policy: "+reason, "sizing the next apply records", "config")
	complAssertNoLeak(t, f, complCanary, r, lr)
}

// A column sized by the rows planner of earlier versions fails the
// production leakage check; after `pgphi reindex` (dba) the same check
// passes without any accept_leakage, the new sizing is by distinct values.
func TestLeakageCheckPassesAfterReindex(t *testing.T) {
	t.Parallel()
	header := "environment: production\naccess: { allow_superuser: true }\napprovals:\n  signers: allowed_signers\n  require:\n    production: { dba: 1, healthcare_admin: 1 }\n"
	f := newFixture(t, "")
	a := pgtest.NewActors(t, f.url)
	keys := tpSigners(t, f, a)
	f.writeConfig("version: 1\n" + header + "tables:\n  patient:\n    columns:\n      last_name: { class: pii, search: [exact] }\n      ssn: { class: pii }\n")
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, last_name text, ssn text)`)
	f.exec(`INSERT INTO patient SELECT g, 'Name' || (g % 40), lpad((g % 1000)::text, 3, '0') || '-12-3456' FROM generate_series(1, 400) g`)
	f.exec(`ALTER TABLE patient OWNER TO ` + a.AppOwner)
	complExpect(t, f.run("roles", "init"), 0, "pinned the security policy")
	complExpect(t, f.run("keys", "init"), 0)
	// What an earlier version recorded at its first apply.
	f.exec(`INSERT INTO pgphi.blind_indexes (table_name, column_name, sub_kind, bits, key_id, rows_planned, sizing) VALUES ('public.patient', 'last_name', 'exact', 18, 1, 400, 'rows')`)
	plan := complPlanID(f)
	complExpect(t, tpAs(f, a, a.DBA, "approve", plan, "--command", "apply", "--key", keys["alice"]), 0)
	complExpect(t, tpAs(f, a, a.HealthcareAdmin, "approve", plan, "--command", "apply", "--key", keys["bob"]), 0)
	kbRecordVerifiedBackup(f)
	complExpect(t, tpAs(f, a, a.DBA, "apply", "--reason", "test"), 0)
	leakageItem := func(r result) (bool, string) {
		t.Helper()
		var cl complChecklist
		if err := json.Unmarshal([]byte(r.stdout), &cl); err != nil {
			t.Fatalf("check --json: %v\n%s", err, r)
		}
		for _, c := range cl.Items {
			if c.ID == "leakage" {
				if !c.Required {
					t.Fatal("the leakage item is not required in production")
				}
				return c.Passed, c.Evidence
			}
		}
		t.Fatalf("check has no leakage item:\n%s", r.stdout)
		return false, ""
	}
	if passed, ev := leakageItem(tpAs(f, a, a.DBA, "check", "--json")); passed || !strings.Contains(ev, "BELOW 2 and not accepted") {
		t.Fatalf("before reindex: passed %v, evidence %q", passed, ev)
	}
	complExpect(t, tpAs(f, a, a.DBA, "reindex", "--reason", "bring the terms under the budget"), 0, "public.patient.last_name: generation 1 -> 2", "(rows) ->", "(distinct)")
	if passed, ev := leakageItem(tpAs(f, a, a.DBA, "check", "--json")); !passed || strings.Contains(ev, "accepted") {
		t.Fatalf("after reindex: passed %v, evidence %q", passed, ev)
	}
	complExpect(t, tpAs(f, a, a.DBA, "verify"), 0)
}
