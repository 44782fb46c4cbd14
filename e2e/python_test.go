package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The Python examples run under Debian's python3 with its packaged modules
// (scripts/ensure-python.sh installs them), never a python3 found on PATH:
// a pyenv or virtualenv interpreter there usually lacks them.

var (
	pythonOnce sync.Once
	pythonPath string
	pythonErr  string
)

// python returns the interpreter for the Python examples: $PGPHI_PYTHON or
// /usr/bin/python3, with sqlalchemy, psycopg2 and cryptography. When they
// are missing it runs scripts/ensure-python.sh as root; it skips t only when
// they are missing, this is not root and CI is not set.
func python(t testing.TB) string {
	t.Helper()
	pythonOnce.Do(func() {
		pythonPath = os.Getenv("PGPHI_PYTHON")
		if pythonPath == "" {
			pythonPath = "/usr/bin/python3"
		}
		if pythonHasModules(pythonPath) {
			return
		}
		if os.Geteuid() == 0 && os.Getenv("PGPHI_PYTHON") == "" {
			cmd := exec.Command("bash", filepath.Join(moduleRoot(), "scripts", "ensure-python.sh"))
			out, err := cmd.CombinedOutput()
			if err == nil && pythonHasModules(pythonPath) {
				return
			}
			pythonErr = "scripts/ensure-python.sh could not install them: " + strings.TrimSpace(string(out))
			return
		}
		if os.Getenv("PGPHI_PYTHON") != "" {
			pythonErr = "install them for that interpreter (PGPHI_PYTHON), or unset PGPHI_PYTHON to use Debian's /usr/bin/python3"
			return
		}
		pythonErr = "run scripts/ensure-python.sh as root (apt-get install python3 python3-sqlalchemy python3-psycopg2 python3-cryptography), or set PGPHI_PYTHON to an interpreter that has them"
	})
	if pythonErr != "" {
		msg := pythonPath + " lacks sqlalchemy, psycopg2 or cryptography: " + pythonErr
		if os.Geteuid() == 0 || os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return pythonPath
}

func pythonHasModules(py string) bool {
	return exec.Command(py, "-c", "import sqlalchemy, psycopg2, cryptography.hazmat.primitives.ciphers.aead").Run() == nil
}

// moduleRoot is the repository root (the e2e tests run in e2e/).
func moduleRoot() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}

// pythonEnv is a clean environment for a Python example: nothing of pgphi's
// or libpq's, no user site packages, no bytecode files in the source tree.
func pythonEnv() []string {
	env := []string{"PYTHONNOUSERSITE=1", "PYTHONDONTWRITEBYTECODE=1", "PYTHONIOENCODING=utf-8", "LC_ALL=C.UTF-8"}
	for _, kv := range cleanEnv() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PYTHON") || name == "LC_ALL" || name == "VIRTUAL_ENV" {
			continue
		}
		env = append(env, kv)
	}
	return env
}
