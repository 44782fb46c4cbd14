package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// EnvBinDir names the environment variable that, when set, selects the
// directory holding the PostgreSQL server binaries (initdb, pg_ctl, postgres).
const EnvBinDir = "PGPHI_PG_BINDIR"

// ErrNoServerBinaries is wrapped by the error FindBinDir returns when no
// PostgreSQL server installation can be found.
var ErrNoServerBinaries = errors.New("PostgreSQL server binaries not found")

// serverBinaries must all be present in a usable bin directory.
var serverBinaries = []string{"initdb", "pg_ctl", "postgres"}

// debianGlob is where Debian and Ubuntu install server binaries (they are
// not on PATH there). A variable so tests can point it elsewhere.
var debianGlob = "/usr/lib/postgresql/*/bin"

// FindBinDir locates the PostgreSQL server binaries: $PGPHI_PG_BINDIR if
// set, else the directory of initdb or pg_ctl found on PATH (symlinks
// resolved), else the highest version under /usr/lib/postgresql/*/bin.
// The directory must contain initdb, pg_ctl and postgres.
func FindBinDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		if err := checkBinDir(dir); err != nil {
			return "", fmt.Errorf("pgcluster: $%s=%s: %w", EnvBinDir, dir, err)
		}
		return dir, nil
	}

	for _, name := range []string{"initdb", "pg_ctl"} {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		if dir := filepath.Dir(p); checkBinDir(dir) == nil {
			return dir, nil
		}
	}

	matches, _ := filepath.Glob(debianGlob)
	sortVersionDirs(matches)
	for _, dir := range matches {
		if checkBinDir(dir) == nil {
			return dir, nil
		}
	}

	return "", fmt.Errorf("pgcluster: %w (looked for initdb, pg_ctl and postgres via $%s, PATH and %s); "+
		"install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql, or run scripts/ensure-postgres.sh) "+
		"or set %s to the directory containing initdb",
		ErrNoServerBinaries, EnvBinDir, debianGlob, EnvBinDir)
}

// checkBinDir reports whether dir holds executable initdb, pg_ctl and postgres.
func checkBinDir(dir string) error {
	var missing []string
	for _, name := range serverBinaries {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s missing or not executable in %s", ErrNoServerBinaries, strings.Join(missing, ", "), dir)
	}
	return nil
}

// sortVersionDirs sorts paths like /usr/lib/postgresql/<version>/bin so the
// highest version comes first ("16" > "9.6", numerically per component).
func sortVersionDirs(dirs []string) {
	version := func(p string) []int {
		var v []int
		for _, part := range strings.Split(filepath.Base(filepath.Dir(p)), ".") {
			n, err := strconv.Atoi(part)
			if err != nil {
				n = -1
			}
			v = append(v, n)
		}
		return v
	}
	sort.SliceStable(dirs, func(i, j int) bool {
		a, b := version(dirs[i]), version(dirs[j])
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k] != b[k] {
				return a[k] > b[k]
			}
		}
		return len(a) > len(b)
	})
}
