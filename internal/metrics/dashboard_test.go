package metrics

import (
	"encoding/json"
	"os"
	"testing"
)

const dashboardFile = "../../deploy/grafana/pgphi-dashboard.json"

// TestDashboardUsesExportedMetrics parses the shipped Grafana dashboard and
// checks that every query of every panel uses only metrics pgphi exports.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) < 8 {
		t.Fatalf("dashboard: title %q, uid %q, %d panels", d.Title, d.UID, len(d.Panels))
	}
	exported := map[string]bool{}
	for _, n := range exercisedNames(t) {
		exported[n] = true
	}
	used := map[string]bool{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			names := metricNames(q.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q uses no metric", p.Title, q.Expr)
			}
			for _, n := range names {
				used[n] = true
				if !exported[n] {
					t.Errorf("panel %q: %s is not a metric pgphi exports", p.Title, n)
				}
			}
		}
	}
	// The list: progress, rate, ETA, throttle, canary, lag, RSS, mismatches.
	for _, n := range []string{"pgphi_rows_done", "pgphi_rate_rows_per_second", "pgphi_eta_seconds", "pgphi_throttle_state",
		"pgphi_canary_latency_seconds", "pgphi_replication_lag_seconds", "process_resident_memory_bytes", "pgphi_verification_mismatches_total"} {
		if !used[n] {
			t.Errorf("no panel shows %s", n)
		}
	}
}
