package metrics

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const rulesFile = "../../deploy/prometheus/pgphi-rules.yaml"

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// The seed's alert conditions (seed 000, "Monitoring During Migration").
// Those pgphi can measure today must each be cited by a rule.
var seedConditions = map[string]bool{
	"Migration failure rate > 5%":         true,
	"System response time > 2x baseline":  true,
	"Database storage > 150% of expected": true,
	"Search result accuracy < 95%":        true,
}

// promqlWords are PromQL's keywords, aggregation modifiers and functions
// used in the rules: identifiers that are not metric names.
var promqlWords = []string{"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
	"sum", "min", "max", "avg", "count", "rate", "irate", "increase", "delta", "max_over_time", "min_over_time", "avg_over_time", "abs", "clamp_min", "absent", "vector"}

var (
	reStrings   = regexp.MustCompile(`"[^"]*"|'[^']*'`)
	reMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	reRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	reGrouping  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	reIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	reNumberExp = regexp.MustCompile(`\b\d+(\.\d+)?(e[+-]?\d+)?\b`)
)

// metricNames returns the metric names an expression uses.
func metricNames(expr string) []string {
	e := reStrings.ReplaceAllString(expr, " ")
	e = reMatchers.ReplaceAllString(e, " ")
	e = reRanges.ReplaceAllString(e, " ")
	e = reGrouping.ReplaceAllString(e, " ")
	e = reNumberExp.ReplaceAllString(e, " ")
	var out []string
	for _, id := range reIdent.FindAllString(e, -1) {
		if !slices.Contains(promqlWords, id) {
			out = append(out, id)
		}
	}
	return out
}

func TestMetricNamesOfExpression(t *testing.T) {
	got := metricNames(`sum by (instance, job) (rate(pgphi_batches_total{result!="ok"}[10m])) / on (job) x_total > 0.05 and bool 2e3`)
	if !slices.Equal(got, []string{"pgphi_batches_total", "x_total"}) {
		t.Fatalf("metricNames = %q", got)
	}
}

// TestAlertRulesUseExportedMetrics parses the shipped rules and checks that
// every metric they use is one pgphi exports, that each rule is complete,
// and that each seed threshold pgphi can measure is cited.
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", filepath.Base(rulesFile), err)
	}
	exported := map[string]bool{}
	for _, n := range exercisedNames(t) {
		exported[n] = true
	}
	cited := map[string]bool{}
	rules := 0
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: needs a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			rules++
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("rule %q: needs alert and expr", r.Alert)
				continue
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "source"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: annotation %s is missing", r.Alert, a)
				}
			}
			src := r.Annotations["source"]
			if !strings.HasPrefix(src, "seed 000") && !strings.HasPrefix(src, "pgphi:") {
				t.Errorf("%s: source %q must cite seed 000 or say it is pgphi's own", r.Alert, src)
			}
			for cond := range seedConditions {
				if strings.Contains(src, `"`+cond+`"`) {
					cited[cond] = true
				}
			}
			names := metricNames(r.Expr)
			if len(names) == 0 {
				t.Errorf("%s: expression uses no metric", r.Alert)
			}
			for _, n := range names {
				if !exported[n] {
					t.Errorf("%s: uses %s, which pgphi does not export", r.Alert, n)
				}
			}
		}
	}
	if rules < 4 {
		t.Errorf("only %d rules", rules)
	}
	for cond, measurable := range seedConditions {
		if measurable && !cited[cond] {
			t.Errorf("no rule cites the seed's %q", cond)
		}
		if !strings.Contains(string(raw), cond) {
			t.Errorf("the rules file does not mention the seed's %q (as a rule, or as not yet measurable)", cond)
		}
	}
}
