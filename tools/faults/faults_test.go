package main

import (
	"strings"
	"testing"
	"time"
)

// The campaign itself needs a server and minutes (make faults); these are
// its pure helpers.

func TestParseVerify(t *testing.T) {
	rows, mism, pend, ok := parseVerify("verified 69797 values in 9971 rows in 946ms: 0 mismatches, 0 rows pending re-encryption\n")
	if !ok || rows != 9971 || mism != 0 || pend != 0 {
		t.Errorf("got %d %d %d %v", rows, mism, pend, ok)
	}
	_, mism, pend, ok = parseVerify("MISMATCH x\nverified 10 values in 2 rows in 1.5s: 3 mismatches, 4 rows pending re-encryption\n")
	if !ok || mism != 3 || pend != 4 {
		t.Errorf("got %d %d %v", mism, pend, ok)
	}
	if _, _, _, ok := parseVerify("nothing here"); ok {
		t.Error("parsed a line that is not verify's")
	}
}

func TestReplaceBlock(t *testing.T) {
	block := beginMarker + "\nnew\n" + endMarker + "\n"
	doc := "# R\n\nintro\n\n" + beginMarker + "\nold\n" + endMarker + "\n\n## After\n"
	got := replaceBlock(doc, block)
	if want := "# R\n\nintro\n\n" + block + "\n## After\n"; got != want {
		t.Errorf("replace:\n%q\nwant\n%q", got, want)
	}
	if got := replaceBlock(got, block); strings.Count(got, beginMarker) != 1 {
		t.Error("a second replace duplicated the block")
	}
	if got := replaceBlock("# R", block); got != "# R\n\n"+block {
		t.Errorf("append: %q", got)
	}
}

func TestTrialSeed(t *testing.T) {
	if trialSeed(1, "kill-apply", 3) != trialSeed(1, "kill-apply", 3) {
		t.Error("not deterministic")
	}
	seen := map[uint64]bool{}
	for _, s := range allScenarios {
		for n := 1; n <= 20; n++ {
			for _, seed := range []uint64{1, 2} {
				v := trialSeed(seed, s, n)
				if seen[v] {
					t.Fatalf("seed collision at %s #%d seed %d", s, n, seed)
				}
				seen[v] = true
			}
		}
	}
}

func TestRowValsEqual(t *testing.T) {
	s := func(v string) *string { return &v }
	var a, b rowVals
	if !a.equal(b) {
		t.Error("NULLs differ")
	}
	a[0], b[0] = s("x"), s("x")
	if !a.equal(b) {
		t.Error("same text differs")
	}
	b[1] = s("")
	if a.equal(b) {
		t.Error("NULL equals the empty string")
	}
	a[1], b[0] = s(""), s("y")
	if a.equal(b) {
		t.Error("different text is equal")
	}
}

func TestStepsAndLastStep(t *testing.T) {
	r := runResult{took: 10 * time.Second, marks: []mark{
		{step: "expand public.patient: add ...", at: time.Second},
		{step: "backfill public.patient: encrypt every row", at: 2 * time.Second},
		{step: "verify public.patient", at: 7 * time.Second},
	}}
	if d := r.stepDuration("backfill"); d != 5*time.Second {
		t.Errorf("backfill took %s", d)
	}
	if d := r.stepDuration("verify"); d != 3*time.Second {
		t.Errorf("verify took %s", d)
	}
	if d := r.stepDuration("cleanup"); d != 0 {
		t.Errorf("absent step took %s", d)
	}
	if s := lastStep(r); s != "verify public.patient" {
		t.Errorf("last step %q", s)
	}
	if s := lastStep(runResult{}); s != "start-up" {
		t.Errorf("last step of a run without steps %q", s)
	}
}

func TestSummaryWithholdsPlantedValues(t *testing.T) {
	r := runResult{code: 1, stderr: "progress\npgphi: bad value " + canaryPrefix + "x\n"}
	if s := r.summary(); strings.Contains(s, canaryPrefix) {
		t.Errorf("summary shows a planted value: %s", s)
	}
	r = runResult{code: 1, stderr: "pgphi: lock not granted\n"}
	if s := r.summary(); s != "exit 1: pgphi: lock not granted" {
		t.Errorf("summary %q", s)
	}
}

func TestTrialConfigAndColumns(t *testing.T) {
	cfg := trialConfig()
	for _, c := range phiColumns {
		if !strings.Contains(cfg, "      "+c+": { class: pii, search: ") {
			t.Errorf("config lacks %s", c)
		}
	}
	if !strings.Contains(cfg, "lock_timeout: 300ms, ddl_retries: 4") {
		t.Errorf("config lock settings:\n%s", cfg)
	}
	got := unprotected([]string{"uid", "first_name", "gender", "date_of_birth", "updated_at"})
	if strings.Join(got, ",") != "uid,gender,updated_at" {
		t.Errorf("unprotected: %v", got)
	}
	if thousands(1234567) != "1,234,567" || thousands(999) != "999" {
		t.Error("thousands")
	}
}
