package migrate

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Migration is one version of the directory: its up file and, optionally,
// its down file.
type Migration struct {
	Version  int64
	Name     string // the file name without ".up.sql", e.g. 005_add_payment_table
	UpFile   string // base name
	DownFile string // base name, "" when there is none
	Up       []byte
	Down     []byte
	UpSHA    string // hex SHA-256 of Up
}

// Dir is a migrations directory read from disk.
type Dir struct {
	Path       string
	Migrations []*Migration // by version
}

// ErrDir wraps every problem with the directory's files (exit 2).
var ErrDir = errors.New("migrations directory")

// fileRE is golang-migrate's naming: VERSION_TITLE.(up|down).sql.
var fileRE = regexp.MustCompile(`^([0-9]+)_([A-Za-z0-9_\-]+)\.(up|down)\.sql$`)

// SumFile is the name of the chained sum file in the directory.
const SumFile = "pgphi.sum"

// ReadDir reads every migration file of dir. Files that do not follow the
// naming (other than the sum file and dot files) are refused, as are two
// files of one version with different names.
func ReadDir(dir string) (*Dir, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDir, err)
	}
	byVersion := map[int64]*Migration{}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || n == SumFile || strings.HasPrefix(n, ".") {
			continue
		}
		m := fileRE.FindStringSubmatch(n)
		if m == nil {
			if strings.HasSuffix(n, ".sql") {
				return nil, fmt.Errorf("%w: %s: not named NNN_name.up.sql or NNN_name.down.sql", ErrDir, filepath.Join(dir, n))
			}
			continue
		}
		v, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: version out of range", ErrDir, filepath.Join(dir, n))
		}
		name := m[1] + "_" + m[2]
		mig := byVersion[v]
		if mig == nil {
			mig = &Migration{Version: v, Name: name}
			byVersion[v] = mig
		} else if mig.Name != name {
			return nil, fmt.Errorf("%w: version %d has two names: %s and %s", ErrDir, v, mig.Name, name)
		}
		body, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDir, err)
		}
		if m[3] == "up" {
			mig.UpFile, mig.Up = n, body
			mig.UpSHA = hashHex(body)
		} else {
			mig.DownFile, mig.Down = n, body
		}
	}
	d := &Dir{Path: dir}
	for _, m := range byVersion {
		if m.UpFile == "" {
			return nil, fmt.Errorf("%w: %s has a down file but no up file", ErrDir, filepath.Join(dir, m.Name+".down.sql"))
		}
		d.Migrations = append(d.Migrations, m)
	}
	sort.Slice(d.Migrations, func(i, j int) bool { return d.Migrations[i].Version < d.Migrations[j].Version })
	return d, nil
}

// Find returns the migration of version v, or nil.
func (d *Dir) Find(v int64) *Migration {
	for _, m := range d.Migrations {
		if m.Version == v {
			return m
		}
	}
	return nil
}

// New creates the next pair of files for name (NNN_name.up.sql and
// .down.sql, NNN one more than the highest version, at least three digits)
// and rewrites the sum file. It returns the paths created.
func New(dir, name string) ([]string, error) {
	if !regexp.MustCompile(`^[a-z0-9][a-z0-9_]{0,62}$`).MatchString(name) {
		return nil, fmt.Errorf("%w: a migration name is lower-case letters, digits and underscores (at most 63), not %q", ErrDir, name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDir, err)
	}
	d, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, SumFile)); err == nil {
		if err := d.CheckSum(); err != nil {
			return nil, err
		}
	}
	next := int64(1)
	width := 3
	if n := len(d.Migrations); n > 0 {
		last := d.Migrations[n-1]
		next = last.Version + 1
		if w := len(strings.SplitN(last.Name, "_", 2)[0]); w > width {
			width = w
		}
	}
	base := fmt.Sprintf("%0*d_%s", width, next, name)
	up, down := filepath.Join(dir, base+".up.sql"), filepath.Join(dir, base+".down.sql")
	header := "-- " + base + "\n-- pgphi runs this file in one transaction unless a statement cannot run in one\n-- (CREATE INDEX CONCURRENTLY, ...); then each statement runs and is recorded on its own.\n"
	if err := os.WriteFile(up, []byte(header), 0o644); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDir, err)
	}
	if err := os.WriteFile(down, []byte("-- reverts "+base+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDir, err)
	}
	if d, err = ReadDir(dir); err != nil {
		return nil, err
	}
	if err := d.WriteSum(); err != nil {
		return nil, err
	}
	return []string{up, down}, nil
}

func hashHex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
