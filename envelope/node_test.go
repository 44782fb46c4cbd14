package envelope_test

import (
	"os"
	"os/exec"
	"testing"
)

// TestFieldVectorsNode checks testdata/vectors/field_v1.json with the
// independent Node.js implementation in testdata/vectors/verify_field_v1.mjs,
// which is written from docs/FORMAT.md alone. It is skipped if node is not
// installed, unless the CI environment variable is set.
func TestFieldVectorsNode(t *testing.T) {
	runNode(t, "../testdata/vectors/verify_field_v1.mjs", fieldVectorsPath)
}

func runNode(t *testing.T, args ...string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node is required in CI: %v", err)
		}
		t.Skip("node not found on PATH")
	}
	out, err := exec.Command(node, args...).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("node %v: %v", args, err)
	}
}
