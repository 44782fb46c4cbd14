//go:build linux

package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Secrets of pgphi's environment must not reach a hook, a planted binary, or
// a server named by the config; the passphrase can be given without the
// environment at all.

const (
	secretsCanaryPass = "Canary-e2e-passphrase-4a9"
	secretsCanaryPG   = "Canary-e2e-pgpassword-c07"
	secretsCanaryPIN  = "Canary-e2e-pkcs11-pin-5d1"
)

// A config whose database.url names ${PGPHI_PASSPHRASE} (or any variable
// outside the documented PGPHI_DB_*) is refused before any connection:
// the passphrase is neither looked up as a host name nor printed.
func TestConfigURLCannotExpandSecrets(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "")
	for _, u := range []string{
		"postgres://app@${PGPHI_PASSPHRASE}.invalid/lims",
		"postgres://app:$PGPASSWORD@127.0.0.1/lims",
		"host=127.0.0.1 user=${PGPHI_PASSPHRASE_FILE} dbname=x",
	} {
		f.writeConfig("version: 1\ndatabase:\n  url: \"" + u + "\"\ntables:\n  patient:\n    columns:\n      ssn: { class: pii }\n")
		out, errOut, code := runPgphi(t, []string{"PGPHI_PASSPHRASE=" + secretsCanaryPass, "PGPASSWORD=" + secretsCanaryPG},
			"--config", f.config, "status")
		if code != 2 || !strings.Contains(errOut, "does not expand") {
			t.Errorf("url %s: want exit 2 naming the variable, got %d\n%s%s", u, code, out, errOut)
		}
		if strings.Contains(out+errOut, secretsCanaryPass) || strings.Contains(out+errOut, secretsCanaryPG) {
			t.Errorf("url %s: a secret was printed:\n%s%s", u, out, errOut)
		}
	}
}

// The passphrase given in a file (mode 0600) or on a file descriptor works
// like PGPHI_PASSPHRASE; a file others may read is refused.
func TestPassphraseFileAndFD(t *testing.T) {
	t.Parallel()
	f := newFixture(t, complYAML("environment: test", ""))
	complCreatePatient(f, 20, 0)
	f.env = nil // no PGPHI_PASSPHRASE
	pass := filepath.Join(f.dir, "passphrase")
	writeFile(t, pass, secretsCanaryPass+"\n")
	if err := os.Chmod(pass, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runPgphi(t, []string{"PGPHI_PASSPHRASE_FILE=" + pass}, append(f.globals(), "keys", "init")...)
	if code != 0 {
		t.Fatalf("keys init with PGPHI_PASSPHRASE_FILE: %d\n%s%s", code, out, errOut)
	}
	// The same passphrase on descriptor 3 opens the keys.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, secretsCanaryPass)
	w.Close()
	cmd := exec.Command(pgphiBin, append(f.globals(), "apply")...)
	cmd.Env = append(cleanEnv(), "PGPHI_PASSPHRASE_FD=3")
	cmd.ExtraFiles = []*os.File{r}
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("apply with PGPHI_PASSPHRASE_FD: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	r.Close()
	// A wrong passphrase in the file is a wrong key, as with the variable.
	writeFile(t, pass, "not-"+secretsCanaryPass)
	if out, errOut, code := runPgphi(t, []string{"PGPHI_PASSPHRASE_FILE=" + pass}, append(f.globals(), "verify")...); code != 2 {
		t.Errorf("wrong passphrase in the file: %d\n%s%s", code, out, errOut)
	}
	// Attack: a passphrase file readable by others is refused, and the
	// passphrase is not printed.
	writeFile(t, pass, secretsCanaryPass)
	if err := os.Chmod(pass, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runPgphi(t, []string{"PGPHI_PASSPHRASE_FILE=" + pass}, append(f.globals(), "verify")...)
	if code != 2 || !strings.Contains(errOut, "accessible by group or others") || strings.Contains(out+errOut, secretsCanaryPass) {
		t.Errorf("passphrase file of mode 0644: %d\n%s%s", code, out, errOut)
	}
	// Two sources at once are refused rather than guessed between.
	if err := os.Chmod(pass, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runPgphi(t, []string{"PGPHI_PASSPHRASE_FILE=" + pass, "PGPHI_PASSPHRASE=" + secretsCanaryPass}, append(f.globals(), "verify")...)
	if code != 2 || !strings.Contains(errOut, "only one") || strings.Contains(out+errOut, secretsCanaryPass) {
		t.Errorf("two passphrase sources: %d\n%s%s", code, out, errOut)
	}
}

// A pre_execute hook, running as the same OS user as pgphi, tries to steal
// the passphrase and the database password: from its environment and from
// /proc/$PPID/environ. The hook is configured as `steal.sh`, and another
// steal.sh is planted in a directory on PATH: the one beside the config
// file must run. pgphi runs as an unprivileged user (root could read any
// process's memory anyway).
func TestHookCannotStealSecrets(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "")
	complCreatePatient(f, 20, 0)
	shared, err := os.MkdirTemp("", "pgphi-e2e-hook-attack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	evil := filepath.Join(shared, "evil")
	loot := filepath.Join(shared, "loot")
	for _, d := range []string{shared, evil, loot} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(shared, "pgphi")
	data, err := os.ReadFile(pgphiBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	hook := "#!/bin/sh\nenv > '" + loot + "/env'\n" +
		"cat /proc/$PPID/environ 2> '" + loot + "/environ.err' | tr '\\0' '\\n' > '" + loot + "/environ'\n" +
		"echo hook-ran > '" + loot + "/ran'\nexit 3\n"
	writeExecutable(t, filepath.Join(shared, "steal.sh"), hook)
	writeExecutable(t, filepath.Join(evil, "steal.sh"), "#!/bin/sh\necho planted > '"+loot+"/planted'\nexit 0\n")
	config := filepath.Join(shared, "pgphi.yaml")
	writeFile(t, config, complYAML("environment: test\nhooks:\n  pre_execute: ['steal.sh']\n", ""))
	if err := os.Chmod(config, 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config", config, "--database-url", f.url, "apply")
	cmd.Dir = shared
	cmd.Env = append(cleanEnv(), "PATH="+evil+":/usr/bin:/bin", "HOME="+shared,
		"PGPHI_PASSPHRASE="+secretsCanaryPass, "PGPASSWORD="+secretsCanaryPG, "PGPHI_PKCS11_PIN="+secretsCanaryPIN)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 4 || !strings.Contains(stderr.String(), "pre_execute hook "+filepath.Join(shared, "steal.sh")) {
		t.Fatalf("want the hook beside the config to veto apply (exit 4), got %v\n%s%s", err, stdout.String(), stderr.String())
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(loot, name))
		return string(b)
	}
	if read("ran") == "" {
		t.Fatal("the hook did not run")
	}
	if p := read("planted"); p != "" {
		t.Fatal("the steal.sh planted on PATH ran instead of the configured one")
	}
	for _, name := range []string{"env", "environ"} {
		got := read(name)
		if strings.Contains(got, secretsCanaryPass) || strings.Contains(got, secretsCanaryPG) || strings.Contains(got, secretsCanaryPIN) {
			t.Errorf("the hook stole a secret through its %s:\n%s", name, got)
		}
	}
	if e := read("environ.err"); !strings.Contains(e, "Permission denied") {
		t.Errorf("reading /proc/$PPID/environ: want permission denied, got %q", e)
	}
	if env := read("env"); !strings.Contains(env, "PATH=/usr/bin:/bin\n") || strings.Contains(env, "PGPASSWORD") || strings.Contains(env, "PGPHI_PASSPHRASE") || strings.Contains(env, "PGPHI_PKCS11_PIN") {
		t.Errorf("hook environment:\n%s", env)
	}
}

func writeExecutable(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
}
