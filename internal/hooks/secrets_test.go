//go:build linux

package hooks

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pgphi/pgphi/keys"
)

// Canaries the attacks look for.
const (
	canaryPassphrase = "Canary-passphrase-7f3a"
	canaryPGPassword = "Canary-pgpassword-91c2"
	canaryURL        = "Canary-urlsecret-55e0"
)

// sharedDir makes a directory that another OS user can use (the attacker's
// hook runs as the same, unprivileged user as the protected process).
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgphi-hooks-attack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runAsHelper runs this test binary's TestEnvironHelper in a new process
// with the canaries in its environment, as an unprivileged user when the
// tests run as root (root has CAP_SYS_PTRACE, which reads any process's
// environ: the attack is about a same-user process without privileges).
// protect says whether the helper calls keys.ProtectProcess, as main does.
func runAsHelper(t *testing.T, dir string, protect bool) (hookEnv, parentEnviron, readErr string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper.test")
	if _, err := os.Stat(bin); err != nil {
		copyFile(t, self, bin)
	}
	out := filepath.Join(dir, map[bool]string{true: "protected", false: "unprotected"}[protect])
	if err := os.Mkdir(out, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(out, 0o777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestEnvironHelper$", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "PGPHI_TEST_ENVIRON_HELPER=" + out,
		"PGPHI_TEST_PROTECT=" + map[bool]string{true: "1", false: "0"}[protect],
		"PGPHI_PASSPHRASE=" + canaryPassphrase, "PGPASSWORD=" + canaryPGPassword,
		"DATABASE_URL=postgres://app:" + canaryURL + "@db.example/lims"}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, b)
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(out, name))
		return string(b)
	}
	return read("env"), read("environ"), read("environ.err")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestEnvironHelper is not a test: it is the process under attack, started
// by TestHookCannotReadSecrets. It does what pgphi's main does (protect the
// process, take the passphrase out of the environment), then runs a hook
// that tries to read the secrets from its own environment and from
// /proc/$PPID/environ.
func TestEnvironHelper(t *testing.T) {
	out := os.Getenv("PGPHI_TEST_ENVIRON_HELPER")
	if out == "" {
		t.Skip("helper process only")
	}
	if os.Getenv("PGPHI_TEST_PROTECT") == "1" {
		if err := keys.ProtectProcess(); err != nil {
			t.Fatal(err)
		}
	}
	if err := keys.CaptureSecrets(); err != nil {
		t.Fatal(err)
	}
	if _, ok := os.LookupEnv("PGPHI_PASSPHRASE"); ok {
		t.Fatal("PGPHI_PASSPHRASE is still in the environment after CaptureSecrets")
	}
	hook := filepath.Join(out, "steal.sh")
	body := "#!/bin/sh\nenv > '" + out + "/env'\n" +
		"cat /proc/$PPID/environ 2> '" + out + "/environ.err' | tr '\\0' '\\n' > '" + out + "/environ'\nexit 0\n"
	if err := os.WriteFile(hook, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Hooks: map[Phase][]string{PreExecute: {hook}}}
	if _, err := cfg.Run(context.Background(), Context{Phase: PreExecute, PlanID: "p"}, nil); err != nil {
		t.Fatal(err)
	}
}

// A hook (same OS user as pgphi) tries to read the passphrase, the database
// password and the URL's password from its environment and from
// /proc/$PPID/environ. Without ProcessProtect the second attack works even
// after os.Unsetenv (the control run proves the attack is real); with it,
// the kernel refuses the read.
func TestHookCannotReadSecrets(t *testing.T) {
	if _, err := os.Stat("/proc/self/environ"); err != nil {
		t.Skip("no /proc")
	}
	dir := sharedDir(t)
	secrets := []string{canaryPassphrase, canaryPGPassword, canaryURL}

	env, environ, readErr := runAsHelper(t, dir, true)
	if env == "" {
		t.Fatal("the hook did not run")
	}
	for _, s := range secrets {
		if strings.Contains(env, s) {
			t.Errorf("a secret reached the hook's environment:\n%s", env)
		}
		if strings.Contains(environ, s) {
			t.Errorf("the hook read a secret from /proc/$PPID/environ of a protected process")
		}
	}
	if !strings.Contains(readErr, "Permission denied") {
		t.Errorf("reading /proc/$PPID/environ: want permission denied, got %q", readErr)
	}

	// Control: the same attack on an unprotected process succeeds, although
	// CaptureSecrets has unset the variable.
	_, environ, _ = runAsHelper(t, dir, false)
	if !strings.Contains(environ, canaryPassphrase) {
		t.Errorf("control: the unprotected process's environ was not readable; the attack above proves nothing (read %q)", environ)
	}
}

// A hook named `hook.sh` or `./hook.sh` in the config runs the one beside
// the config file, never an executable of the same name planted in a
// directory on PATH or in the working directory; without a config
// directory a relative path is refused.
func TestHookPathNotSearched(t *testing.T) {
	legitDir, evilDir := t.TempDir(), t.TempDir()
	marker := filepath.Join(t.TempDir(), "owned")
	legit := filepath.Join(t.TempDir(), "ran")
	script(t, legitDir, "hook.sh", `echo legit >> '`+legit+`'`)
	script(t, evilDir, "hook.sh", `echo evil >> '`+marker+`'`)
	// A hook that calls a tool by name gets pgphi's PATH=/usr/bin:/bin, not
	// the operator's PATH with the planted directory.
	script(t, legitDir, "calls-date.sh", `date > /dev/null`)
	script(t, evilDir, "date", `echo evil-date >> '`+marker+`'`)
	t.Setenv("PATH", evilDir+":"+os.Getenv("PATH"))
	wd, _ := os.Getwd()
	if err := os.Chdir(evilDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chdir(wd) })

	for _, h := range []string{"hook.sh", "./hook.sh", "calls-date.sh", "./calls-date.sh a b"} {
		cfg := Config{Hooks: map[Phase][]string{PreExecute: {h}}, Dir: legitDir}
		res, err := cfg.Run(context.Background(), Context{Phase: PreExecute}, identity)
		if err != nil {
			t.Fatalf("%q: %v", h, err)
		}
		if want := filepath.Join(legitDir, strings.Fields(h)[0]); res[0].Command != want {
			t.Errorf("%q ran %s, want %s", h, res[0].Command, want)
		}
	}
	// A relative config directory is taken from the working directory of
	// the time, not re-resolved on PATH.
	if b, err := os.ReadFile(legit); err != nil || strings.Count(string(b), "legit") != 2 {
		t.Errorf("legitimate hook runs: %q, %v", b, err)
	}
	for _, h := range []string{"hook.sh", "./hook.sh"} {
		cfg := Config{Hooks: map[Phase][]string{PreExecute: {h}}}
		res, err := cfg.Run(context.Background(), Context{Phase: PreExecute}, identity)
		if !errors.Is(err, ErrHookFailed) || !errors.Is(err, ErrRelativePath) || len(res) != 1 || res[0].ExitCode != -1 {
			t.Errorf("%q without a config directory: %+v, %v", h, res, err)
		}
	}
	if b, err := os.ReadFile(marker); err == nil {
		t.Fatalf("a planted executable ran: %q", b)
	}
}
