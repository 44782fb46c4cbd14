package cli

import (
	"bytes"
	"os"
	"path/filepath"
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
	if !strings.Contains(stderr.String(), "nothing is left running") {
		t.Fatalf("cluster not reported stopped:\n%s", stderr.String())
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgphi-pg-*"))
	if len(after) > len(before) {
		t.Fatalf("demo left cluster directories behind: %v", after)
	}
	// The synthetic data has names like these; none may reach the output.
	for _, name := range []string{"José", "O'Brien", "王伟", "Müller"} {
		if strings.Contains(out, name) || strings.Contains(stderr.String(), name) {
			t.Fatalf("demo printed a data value (%q)", name)
		}
	}
}
