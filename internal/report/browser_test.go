package report

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

// browser returns the installed Chromium; without one the test skips,
// except in CI (CI set), where scripts/ensure-chromium.sh installed it.
func browser(t *testing.T) *Browser {
	t.Helper()
	b, err := FindBrowser()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI: %v (scripts/ensure-chromium.sh installs it)", err)
		}
		t.Skipf("%v; run scripts/ensure-chromium.sh as root", err)
	}
	return b
}

// TestHTMLReportInChromium renders an approved and a refused report in
// headless Chromium: a non-empty PNG screenshot, and in the DOM the
// browser built, the APPROVED / NOT APPROVED state and every requirement
// row with its evidence; a PDF starts with %PDF.
func TestHTMLReportInChromium(t *testing.T) {
	b := browser(t)
	ctx := context.Background()
	refused := completeFacts()
	refused.Checklist = nil
	refused.Verification = nil
	for name, f := range map[string]*Facts{"approved": completeFacts(), "refused": refused} {
		var page bytes.Buffer
		if err := Render(&page, "html", f); err != nil {
			t.Fatal(err)
		}
		png, err := b.Screenshot(ctx, page.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
			t.Fatalf("%s: screenshot is not a PNG (%d bytes)", name, len(png))
		}
		dom, err := b.DOM(ctx, page.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		text := string(dom)
		wantState := `data-state="approved">APPROVED`
		if name == "refused" {
			wantState = `data-state="not-approved">NOT APPROVED`
		}
		if !strings.Contains(text, wantState) {
			t.Errorf("%s: the DOM lacks %s", name, wantState)
		}
		for _, i := range f.Assess() {
			if !strings.Contains(text, "<td>"+i.Requirement+"</td>") {
				t.Errorf("%s: no row for requirement %q in the DOM", name, i.Requirement)
			}
			if !i.Met && !strings.Contains(text, "To produce the evidence") {
				t.Errorf("%s: unmet %q without what produces its evidence", name, i.Requirement)
			}
		}
		for _, want := range []string{
			"<td>alice</td><td>dba</td><td class=\"mono\">SHA256:x</td>", "apply of plan-abc in production, database lab, until 2026-11-28T12:00:00Z",
			"#4 <code>cd</code>", "SHA256:auditor", "checkpoint #4 covers all but the newest 1 records", `class="sig"`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("%s: the DOM lacks %q", name, want)
			}
		}
		if strings.Contains(text, "<script") {
			t.Errorf("%s: the page has a script", name)
		}
	}
	var page bytes.Buffer
	if err := Render(&page, "html", completeFacts()); err != nil {
		t.Fatal(err)
	}
	pdf, err := b.PDF(ctx, page.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(pdf, []byte("%PDF")) {
		t.Fatalf("not a PDF: %q", pdf[:min(len(pdf), 16)])
	}
}
