package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/report"
)

// reportBrowser is the installed headless Chromium; without one the test
// skips, except in CI, where scripts/ensure-chromium.sh installed it.
func reportBrowser(t *testing.T) *report.Browser {
	t.Helper()
	b, err := report.FindBrowser()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI: %v (scripts/ensure-chromium.sh installs it)", err)
		}
		t.Skipf("%v; run scripts/ensure-chromium.sh as root", err)
	}
	return b
}

// TestReportInBrowser renders `pgphi report --format html` of a real
// migration in headless Chromium, for an approved one (apply, whose own
// verification is recorded, and a pre-flight check: no separate verify)
// and for one that is not approved (planned and checked, not applied): a
// screenshot (a non-empty PNG), and in the DOM the browser built, the
// state and a row for every requirement, each unmet one saying what
// produces its evidence. `--format pdf` prints a PDF through the same
// browser. No planted value appears in any of them.
func TestReportInBrowser(t *testing.T) {
	t.Parallel()
	b := reportBrowser(t)
	ctx := context.Background()

	// The approved migration's audit trail has a signed checkpoint, under
	// the pinned audit key.
	approved := newFixture(t, "")
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := policy.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(approved.dir, "checkpoint.pem"), string(keyPEM))
	approved.writeConfig(complYAML("environment: test\naudit:\n  signing_key: checkpoint.pem\n  public_key: "+policy.AuthorizedKey(priv.Public().(ed25519.PublicKey))+"\n", ""))
	complCreatePatient(approved, 120, 0)
	complExpect(t, approved.run("keys", "init"), 0)
	complExpect(t, approved.run("apply"), 0)
	complExpect(t, approved.run("check"), 0)
	complExpect(t, approved.run("audit", "checkpoint"), 0)

	refused := newFixture(t, complYAML("environment: test\n", ""))
	complCreatePatient(refused, 50, 0)
	complExpect(t, refused.run("keys", "init"), 0)
	complExpect(t, refused.run("check"), 0)

	for name, f := range map[string]*fixture{"approved": approved, "refused": refused} {
		rep := complGetReport(t, f)
		if rep.Approved != (name == "approved") {
			t.Fatalf("%s: report approved %v; unmet %v", name, rep.Approved, rep.unmet())
		}
		html := f.run("report", "--format", "html")
		complExpect(t, html, 0)
		page := []byte(html.stdout)
		png, err := b.Screenshot(ctx, page)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
			t.Fatalf("%s: the screenshot is not a PNG (%d bytes)", name, len(png))
		}
		dom, err := b.DOM(ctx, page)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		text := string(dom)
		state := `data-state="approved">APPROVED`
		if name == "refused" {
			state = `data-state="not-approved">NOT APPROVED`
		}
		if !strings.Contains(text, state) {
			t.Errorf("%s: the DOM lacks %s", name, state)
		}
		for _, r := range rep.Requirements {
			row := `<tr class="requirement" data-met="` + map[bool]string{true: "true", false: "false"}[r.Met] + `"><td>` + r.Requirement + `</td>`
			if !strings.Contains(text, row) {
				t.Errorf("%s: no row for %q (met %v) in the DOM", name, r.Requirement, r.Met)
			}
			if r.Requirement == "every value verified by decryption" && name == "approved" && !r.Met {
				t.Errorf("apply's own verification was not counted: %s", r.Evidence)
			}
		}
		if name == "approved" && (!strings.Contains(text, "signature and chain proven") || !strings.Contains(text, "records</dd>")) {
			t.Errorf("approved: the DOM does not show the checkpoint proven and what it covers")
		}
		if name == "refused" && !strings.Contains(text, "To produce the evidence: run <code>pgphi apply</code>") {
			t.Errorf("refused: the unmet apply does not say what produces its evidence")
		}
		if strings.Contains(text, complCanary) || strings.Contains(string(png), complCanary) {
			t.Fatalf("%s: a planted value reached the report", name)
		}
		complAssertNoLeak(t, f, complCanary, html)
	}

	pdf := approved.run("report", "--format", "pdf")
	complExpect(t, pdf, 0)
	if !strings.HasPrefix(pdf.stdout, "%PDF") {
		t.Fatalf("report --format pdf: not a PDF: %q", pdf.stdout[:min(len(pdf.stdout), 16)])
	}
	if strings.Contains(pdf.stdout, complCanary) {
		t.Fatal("a planted value reached the PDF")
	}
	// Without Chromium: a clear error and exit 1, before anything is read.
	approved.env = append(approved.env, "PGPHI_CHROMIUM=/nonexistent/chromium")
	complExpect(t, approved.run("report", "--format", "pdf"), 1, "PGPHI_CHROMIUM")
}
