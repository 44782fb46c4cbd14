package report

import (
	"errors"
	"strings"
	"testing"

	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/engine"
)

// A disabled or missing trigger fails the required check, names the object
// and what is wrong, and keeps the report from approving.
func TestTriggersCheckFailsOnAProblem(t *testing.T) {
	ok := Triggers(nil, nil)
	if !ok.Required || !ok.Passed {
		t.Fatalf("no problems: %+v", ok)
	}
	bad := Triggers([]engine.TriggerProblem{{Table: "public.patient", Object: "trigger zz_pgphi_mark", Problem: "disabled (ALTER TABLE ... DISABLE TRIGGER)"}}, nil)
	if bad.Passed || !strings.Contains(bad.Evidence, "zz_pgphi_mark") || !strings.Contains(bad.Evidence, "disabled") {
		t.Fatalf("disabled trigger: %+v", bad)
	}
	if c := Triggers(nil, errors.New("permission denied")); c.Passed {
		t.Fatalf("an inspection that failed passed: %+v", c)
	}
	f := completeFacts()
	f.Checklist.Items = append(f.Checklist.Items, bad)
	if f.Approved() {
		t.Fatal("report approved with pgphi's trigger disabled")
	}
}

// A view over a protected column fails the required check, naming the view
// and what to do; a unique constraint is named as a coming cleanup refusal.
func TestDependenciesCheckFailsOnAView(t *testing.T) {
	unique := catalog.Dependency{Table: "public.patient", Column: "mrn", Kind: "unique", Object: "patient_mrn_key", Action: catalog.ActionRefused, Detail: "cleanup refuses", Blocks: catalog.BlocksCleanup}
	ok := Dependencies(nil, []catalog.Dependency{unique})
	if !ok.Required || !ok.Passed || !strings.Contains(ok.Evidence, "patient_mrn_key") {
		t.Fatalf("no blockers: %+v", ok)
	}
	view := catalog.Dependency{Table: "public.patient", Column: "full_name", Kind: "view", Object: "public.patient_contact", Action: catalog.ActionRefused, Detail: "recreate it over full_name_encrypted", Blocks: catalog.BlocksCheck}
	bad := Dependencies([]catalog.Dependency{view}, []catalog.Dependency{unique, view})
	if bad.Passed || !strings.Contains(bad.Evidence, "view public.patient_contact") || !strings.Contains(bad.Evidence, "recreate it over full_name_encrypted") {
		t.Fatalf("a view: %+v", bad)
	}
}
