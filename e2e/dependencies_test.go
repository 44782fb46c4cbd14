package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// What depends on a protected column, from the command line:
// plan lists each object with its action, a view fails check, a foreign key
// refuses the plan naming the constraint.
func TestDependenciesInPlanAndCheck(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "version: 1\nenvironment: test\ntables:\n  patient:\n    columns:\n      mrn: { class: pii, search: [exact] }\n      full_name: { class: pii }\n")
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, mrn text NOT NULL UNIQUE, full_name text NOT NULL)`)
	f.exec(`INSERT INTO patient SELECT g, 'MRN' || g, 'Zzcanaryname' || g FROM generate_series(1, 30) g`)
	f.exec(`CREATE VIEW patient_names AS SELECT id, full_name FROM patient`)
	f.mustRun("keys", "init")

	r := f.mustRun("plan")
	for _, s := range []string{"unique patient_mrn_key", "view public.patient_names", "not null", "carried over", "`pgphi check`"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("plan does not say %q:\n%s", s, r.stdout)
		}
	}
	r = f.mustRun("plan", "--json")
	var plan struct {
		Dependencies []struct{ Column, Kind, Object, Action, Blocks string } `json:"dependencies"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range plan.Dependencies {
		if d.Column == "full_name" && d.Kind == "view" && d.Object == "public.patient_names" && d.Action == "refused" && d.Blocks == "check" {
			found = true
		}
	}
	if !found {
		t.Errorf("plan --json does not list the view: %+v", plan.Dependencies)
	}
	r = f.expectCode(4, "check")
	if !strings.Contains(r.stdout+r.stderr, "FAIL no view") || !strings.Contains(r.stdout+r.stderr, "view public.patient_names") {
		t.Errorf("check with a view over a protected column:\n%s", r)
	}
	for _, out := range []string{r.stdout, r.stderr} {
		if strings.Contains(out, "Zzcanaryname") || strings.Contains(out, "MRN1") {
			t.Fatalf("a value reached the output:\n%s", out)
		}
	}

	f.exec(`CREATE TABLE visit (id int PRIMARY KEY, patient_mrn text CONSTRAINT visit_mrn_fkey REFERENCES patient (mrn))`)
	r = f.expectCode(4, "plan")
	if !strings.Contains(r.stderr, "visit_mrn_fkey") {
		t.Errorf("plan with a foreign key to mrn does not name it:\n%s", r)
	}
}
