package report

import (
	"errors"
	"strings"
	"testing"

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
