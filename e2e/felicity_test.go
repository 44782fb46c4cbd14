package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/pgphi/pgphi/internal/cli"
	"github.com/pgphi/pgphi/internal/demo"
)

// TestFelicityDemoTables runs the documented configuration (the demo's) against the synthetic Felicity LIMS tables: varchar keys, dates,
// json and jsonb, multilingual text, foreign keys between protected tables.
func TestFelicityDemoTables(t *testing.T) {
	t.Parallel()
	f := newFixture(t, cli.DemoConfig)
	c := f.conn()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := demo.CreateSchema(ctx, c); err != nil {
		t.Fatal(err)
	}
	counts, err := demo.Populate(ctx, c, demo.Options{Patients: 1500, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	f.mustRun("keys", "init")
	f.mustRun("plan")
	f.mustRun("apply", "--workers", "2", "--batch-size", "500")
	f.verifyOK(counts.Total())
	st := f.status()
	f.assertFullyEncrypted(st)
	want := map[string]int64{
		"public.patient":                counts.Patients,
		"public.patient_identification": counts.Identifications,
		"public.analysis_result":        counts.Results,
		"public.result_mutation":        counts.Mutations,
		"public.clinical_data":          counts.ClinicalData,
	}
	columns := 0
	for _, cs := range st.Columns {
		columns++
		if cs.Total != want[cs.Table] {
			t.Errorf("status %s.%s: total %d, want %d", cs.Table, cs.Column, cs.Total, want[cs.Table])
		}
	}
	if columns != 16 {
		t.Errorf("status lists %d columns, want the 16 of the demo config", columns)
	}
}
