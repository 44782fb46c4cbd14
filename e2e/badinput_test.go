package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInputExitCodes checks the exit code and message an operator gets for
// each kind of mistake, and that none of them shows a Go stack trace
// (runPgphi fails the test on one).
func TestBadInputExitCodes(t *testing.T) {
	t.Parallel()
	const goodConfig = `version: 1
environment: test
tables:
  patient:
    columns:
      first_name: { class: pii }
`
	f := newFixture(t, goodConfig)
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, first_name text, last_name text);
		CREATE TABLE nokey (id int, first_name text);
		INSERT INTO patient SELECT g, 'n' || g, 'l' || g FROM generate_series(1, 10) g;`)

	t.Run("missing config file", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nope.yaml")
		out, errOut, code := runPgphi(t, f.env, "--config", missing, "--database-url", f.url, "plan")
		if code != 2 {
			t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		for _, want := range []string{missing, "not found", "pgphi init"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr does not contain %q (the file and the hint):\n%s", want, errOut)
			}
		}
	})

	t.Run("missing default config", func(t *testing.T) {
		// No --config and no $PGPHI_CONFIG: ./pgphi.yaml in an empty directory.
		out, errOut, code := runPgphi(t, f.env, "--database-url", f.url, "plan")
		if code != 2 || !strings.Contains(errOut, "pgphi init") {
			t.Fatalf("exit %d, want 2 with a `pgphi init` hint\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
	})

	t.Run("unknown column", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "pgphi.yaml")
		// Line 7 names a column the table does not have.
		writeFile(t, cfg, `version: 1
environment: test
tables:
  patient:
    columns:
      first_name: { class: pii }
      no_such_column: { class: phi }
      last_name: { class: pii }
`)
		out, errOut, code := runPgphi(t, f.env, "--config", cfg, "--database-url", f.url, "plan")
		if code != 2 {
			t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		for _, want := range []string{"pgphi.yaml:7", "no_such_column"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr does not contain %q:\n%s", want, errOut)
			}
		}
	})

	t.Run("unknown key in config", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "pgphi.yaml")
		writeFile(t, cfg, `version: 1
environment: test
tables:
  patient:
    columns:
      first_name: { class: pii, serach: [exact] }
`)
		out, errOut, code := runPgphi(t, f.env, "--config", cfg, "--database-url", f.url, "plan")
		if code != 2 || !strings.Contains(errOut, "pgphi.yaml:6") || !strings.Contains(errOut, "serach") {
			t.Fatalf("exit %d, want 2 naming pgphi.yaml:6 and the key\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
	})

	t.Run("table without primary key", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "pgphi.yaml")
		writeFile(t, cfg, `version: 1
environment: test
tables:
  nokey:
    columns:
      first_name: { class: pii }
`)
		out, errOut, code := runPgphi(t, f.env, "--config", cfg, "--database-url", f.url, "plan")
		if code != 2 {
			t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		if !strings.Contains(errOut, "nokey") || !strings.Contains(errOut, "primary key") {
			t.Errorf("stderr does not name the table and the missing primary key:\n%s", errOut)
		}
		if !strings.Contains(errOut, "pgphi.yaml:4") {
			t.Errorf("stderr does not point at the table's line (pgphi.yaml:4):\n%s", errOut)
		}
	})

	t.Run("unreachable database", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close() // nothing listens on port now
		url := fmt.Sprintf("postgres://nobody:s3cret-pw@127.0.0.1:%d/nodb?sslmode=disable&connect_timeout=5", port)
		for _, cmd := range [][]string{{"plan"}, {"status"}, {"apply"}, {"verify"}, {"keys", "init"}} {
			args := append([]string{"--config", f.config, "--database-url", url}, cmd...)
			out, errOut, code := runPgphi(t, f.env, args...)
			if code != 3 {
				t.Errorf("pgphi %s: exit %d, want 3\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd, " "), code, out, errOut)
			}
			if strings.Contains(out+errOut, "s3cret-pw") {
				t.Errorf("pgphi %s printed the password of the connection string:\n%s", strings.Join(cmd, " "), errOut)
			}
		}
	})

	t.Run("no key configured", func(t *testing.T) {
		for _, cmd := range [][]string{{"keys", "init"}, {"apply"}} {
			args := append(f.globals(), cmd...)
			out, errOut, code := runPgphi(t, nil, args...)
			if code != 2 {
				t.Errorf("pgphi %s without PGPHI_PASSPHRASE/PGPHI_KEY_FILE: exit %d, want 2\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd, " "), code, out, errOut)
			}
			if !strings.Contains(errOut, "PGPHI_PASSPHRASE") || !strings.Contains(errOut, "PGPHI_KEY_FILE") {
				t.Errorf("stderr does not say how to configure a key:\n%s", errOut)
			}
		}
	})

	t.Run("wrong passphrase", func(t *testing.T) {
		f.mustRun("keys", "init")
		args := append(f.globals(), "apply")
		out, errOut, code := runPgphi(t, []string{"PGPHI_PASSPHRASE=not-the-" + testPassphrase}, args...)
		if code != 2 {
			t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		if !strings.Contains(errOut, "wrong passphrase") {
			t.Errorf("stderr does not say wrong passphrase:\n%s", errOut)
		}
		// Refused before touching the table: no ciphertext column was added.
		c := f.conn()
		if n := queryInt(t, c, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'patient' AND column_name LIKE '%encrypted'`); n != 0 {
			t.Errorf("apply with a wrong passphrase added %d ciphertext columns", n)
		}
	})

	t.Run("usage errors", func(t *testing.T) {
		for _, args := range [][]string{
			{"plan", "--no-such-flag"},
			{"--no-such-flag", "status"},
			{"apply", "--workers", "many"},
			{"plan", "extra-argument"},
			{"keys", "init", "extra-argument"},
		} {
			all := append(f.globals(), args...)
			out, errOut, code := runPgphi(t, f.env, all...)
			if code != 2 {
				t.Errorf("pgphi %s: exit %d, want 2 (usage error)\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
			}
		}
	})

	t.Run("unknown command", func(t *testing.T) {
		// A mistyped command is a usage error like a mistyped flag (contract:
		// exit 2), with the same pointer to --help.
		all := append(f.globals(), "aply")
		out, errOut, code := runPgphi(t, f.env, all...)
		if code != 2 {
			t.Errorf("pgphi aply: exit %d, want 2 (usage error)\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		if !strings.Contains(errOut, "--help") {
			t.Errorf("pgphi aply: stderr has no pointer to --help:\n%s", errOut)
		}
	})
}
