package audit

import (
	"bytes"
	"os"
	"testing"
	"time"
)

// formatExamples are the worked examples of FORMAT.md: the start and end
// records of one run.
func formatExamples() []Record {
	start := Record{
		Seq:         1,
		Time:        time.Date(2025, 3, 14, 9, 26, 53, 589793000, time.UTC),
		Event:       EventStart,
		Command:     "apply",
		RunID:       "5f2b1c0e9a7d4e3f8b6a1d2c3e4f5a6b",
		PlanID:      "p1-3b8e0c1d2f",
		Actor:       Actor{OSUser: "rdupont", DBRole: "pgphi_dba", Name: "Renée Dupont", Host: "lab-admin-01"},
		Environment: "production",
		DBHost:      "db.lab.example:5432",
		DBName:      "felicity",
		Reason:      "Encrypt \"patient\" PHI, change SEC-42",
		Tables:      []string{"patient"},
		Columns:     []string{"first_name", "phone_mobile"},
		Details:     map[string]string{"approvals": "2"},
		Prev:        ZeroHash,
	}
	start.normalize()
	start.Hash = start.ComputeHash()
	end := start
	end.Seq, end.Event, end.Prev = 2, EventSuccess, start.Hash
	end.Time = time.Date(2025, 3, 14, 9, 41, 7, 120000000, time.UTC)
	end.Rows, end.DurationMS = 48211, 853531
	end.normalize()
	end.Details = map[string]string{"approvals": "2", "failed_rows": "0"}
	end.Hash = end.ComputeHash()
	return []Record{start, end}
}

// TestFormatDocument keeps FORMAT.md's worked examples true: the document
// must contain each example's hashed bytes, hash and stored line.
func TestFormatDocument(t *testing.T) {
	doc, err := os.ReadFile("FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range formatExamples() {
		for _, want := range [][]byte{r.appendCanonical(nil, false), []byte(r.Hash), r.CanonicalJSON()} {
			if !bytes.Contains(doc, want) {
				t.Errorf("FORMAT.md lacks %s", want)
			}
		}
	}
}
