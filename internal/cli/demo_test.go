package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The demo tells the whole story and leaves nothing behind.
func TestDemoRunsTheWholeStoryAndCleansUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster")
	}
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgphi-pg-*"))
	var stdout, stderr bytes.Buffer
	code := Main([]string{"demo", "--patients", "400"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"$ pgphi init --suggest", "$ pgphi keys init", "$ pgphi plan", "$ pgphi apply", "$ pgphi verify", "$ pgphi status",
		"0 mismatches, 0 rows pending", "complete", "== summary:",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`metrics: serving http://127\.0\.0\.1:\d+/metrics`).MatchString(stderr.String()) {
		t.Errorf("demo did not say where apply's metrics were:\n%s", stderr.String())
	}
	rm := regexp.MustCompile(`(?m)^report:\s+(\S+\.html)`).FindStringSubmatch(out)
	if rm == nil {
		t.Fatalf("demo did not say where the report is:\n%s", out)
	}
	page, err := os.ReadFile(rm[1])
	if err != nil || !strings.Contains(string(page), `id="verdict"`) {
		t.Fatalf("demo report %s: %v", rm[1], err)
	}
	os.Remove(rm[1])
	if !regexp.MustCompile(`(?m)^metrics:\s+apply served Prometheus metrics at http://127\.0\.0\.1:\d+/metrics`).MatchString(out) {
		t.Errorf("demo did not say where the metrics were:\n%s", out)
	}
	if !strings.Contains(stderr.String(), "nothing is left running") {
		t.Fatalf("cluster not reported stopped:\n%s", stderr.String())
	}
	// The demo names its data directory; it must be gone (other test
	// packages create clusters of their own meanwhile, so no global count).
	_ = before
	m := regexp.MustCompile(`data in (\S+)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("demo did not say where its data was:\n%s", stderr.String())
	}
	if _, err := os.Stat(filepath.Dir(m[1])); !os.IsNotExist(err) {
		t.Fatalf("demo left its cluster directory %s behind (%v)", filepath.Dir(m[1]), err)
	}
	// The synthetic data has names like these; none may reach the output.
	for _, name := range []string{"José", "O'Brien", "王伟", "Müller"} {
		if strings.Contains(out, name) || strings.Contains(stderr.String(), name) {
			t.Fatalf("demo printed a data value (%q)", name)
		}
	}
}
