package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgphi/pgphi/internal/hooks"
)

// ErrNoBrowser is returned by FindBrowser when no headless Chromium is
// installed: the PDF report needs one.
var ErrNoBrowser = errors.New("no Chromium found to print the PDF (install Debian's `chromium` package, or set PGPHI_CHROMIUM to its path); the HTML report prints the same page")

// Browser is a headless Chromium that renders the HTML report: to PDF, to
// a screenshot, or to the DOM it built (for tests). It runs with pgphi's
// minimal child environment, a throwaway profile, and no network use the
// page could trigger (the page loads nothing).
type Browser struct {
	Path string
}

// FindBrowser looks for Chromium: $PGPHI_CHROMIUM, else chromium,
// chromium-browser, google-chrome-stable or google-chrome on PATH.
func FindBrowser() (*Browser, error) {
	if p := os.Getenv("PGPHI_CHROMIUM"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			return nil, fmt.Errorf("PGPHI_CHROMIUM: %w", err)
		}
		return &Browser{Path: p}, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return &Browser{Path: p}, nil
		}
	}
	return nil, ErrNoBrowser
}

// run renders page (an HTML document) with the extra arguments; out names
// the file the browser writes, read back and returned (empty: stdout).
func (b *Browser) run(ctx context.Context, page []byte, out string, args ...string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "pgphi-report-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	in := filepath.Join(dir, "report.html")
	if err := os.WriteFile(in, page, 0o600); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	base := []string{"--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
		"--disable-extensions", "--disable-background-networking", "--disable-sync", "--mute-audio",
		"--user-data-dir=" + filepath.Join(dir, "profile"), "--window-size=1200,1600"}
	if os.Geteuid() == 0 {
		// Chromium refuses to run as root with its sandbox.
		base = append(base, "--no-sandbox")
	}
	outPath := ""
	if out != "" {
		outPath = filepath.Join(dir, out)
	}
	var full []string
	for _, a := range args {
		full = append(full, strings.Replace(a, "%s", outPath, 1))
	}
	cmd := exec.CommandContext(ctx, b.Path, append(append(base, full...), "file://"+in)...)
	cmd.Env = hooks.MinimalEnv("HOME=" + dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("chromium (%s) failed: %v", b.Path, err)
	}
	if out == "" {
		return stdout.Bytes(), nil
	}
	data, err := os.ReadFile(outPath)
	if err != nil || len(data) == 0 {
		return nil, fmt.Errorf("chromium (%s) wrote no %s", b.Path, out)
	}
	return data, nil
}

// PDF prints the page to PDF (A4, the page's print stylesheet, no browser
// header or footer).
func (b *Browser) PDF(ctx context.Context, page []byte) ([]byte, error) {
	return b.run(ctx, page, "report.pdf", "--print-to-pdf=%s", "--no-pdf-header-footer")
}

// Screenshot renders the page to a PNG.
func (b *Browser) Screenshot(ctx context.Context, page []byte) ([]byte, error) {
	return b.run(ctx, page, "report.png", "--screenshot=%s", "--hide-scrollbars")
}

// DOM returns the document as the browser built it (--dump-dom).
func (b *Browser) DOM(ctx context.Context, page []byte) ([]byte, error) {
	return b.run(ctx, page, "", "--dump-dom")
}
