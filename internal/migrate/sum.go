package migrate

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The sum file (pgphi.sum) chains the directory's files, as atlas.sum
// does: each line is a file name and a hash over that file's content and
// every line before it, so an edit, a reorder or an insert changes the hash
// of that file's line and of every line after it. The first line hashes
// all the others.
//
//	h1:<base64 SHA-256 of the lines below, each with its newline>
//	001_init.up.sql h1:<base64 SHA-256(previous hash || name || "\n" || SHA-256(content))>
//	001_init.down.sql h1:...
//
// Files are in version order, each up file before its down file; the first
// line's previous hash is 32 zero bytes.

// ErrTampered wraps every refusal because files or history do not match
// what was recorded (exit 2).
var ErrTampered = errors.New("migrations do not match their recorded hashes")

type sumLine struct{ file, hash string }

func (d *Dir) sumLines() []sumLine {
	prev := make([]byte, sha256.Size)
	var out []sumLine
	add := func(name string, body []byte) {
		content := sha256.Sum256(body)
		h := sha256.New()
		h.Write(prev)
		h.Write([]byte(name + "\n"))
		h.Write(content[:])
		prev = h.Sum(nil)
		out = append(out, sumLine{name, "h1:" + base64.StdEncoding.EncodeToString(prev)})
	}
	for _, m := range d.Migrations {
		add(m.UpFile, m.Up)
		if m.DownFile != "" {
			add(m.DownFile, m.Down)
		}
	}
	return out
}

func renderSum(lines []sumLine) string {
	var body strings.Builder
	for _, l := range lines {
		body.WriteString(l.file + " " + l.hash + "\n")
	}
	total := sha256.Sum256([]byte(body.String()))
	return "h1:" + base64.StdEncoding.EncodeToString(total[:]) + "\n" + body.String()
}

// WriteSum writes the sum file for the directory as it is now.
func (d *Dir) WriteSum() error {
	if err := os.WriteFile(filepath.Join(d.Path, SumFile), []byte(renderSum(d.sumLines())), 0o644); err != nil {
		return fmt.Errorf("%w: %v", ErrDir, err)
	}
	return nil
}

// CheckSum compares the directory with its sum file and names the first
// file that differs: edited, inserted, reordered, removed or not recorded.
func (d *Dir) CheckSum() error {
	path := filepath.Join(d.Path, SumFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s is missing", ErrTampered, path)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDir, err)
	}
	text := string(raw)
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "h1:") {
		return fmt.Errorf("%w: %s: the first line is not the sum of the file", ErrTampered, path)
	}
	var recorded []sumLine
	for i, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 2 || !strings.HasPrefix(f[1], "h1:") {
			return fmt.Errorf("%w: %s:%d: not a FILE h1:HASH line", ErrTampered, path, i+2)
		}
		recorded = append(recorded, sumLine{f[0], f[1]})
	}
	if renderSum(recorded) != text {
		return fmt.Errorf("%w: %s was edited by hand (its first line does not sum the others)", ErrTampered, path)
	}
	want := d.sumLines()
	for i := 0; i < len(want) || i < len(recorded); i++ {
		switch {
		case i >= len(recorded):
			return fmt.Errorf("%w: %s is not in %s (added after the sum was written)", ErrTampered, want[i].file, SumFile)
		case i >= len(want):
			return fmt.Errorf("%w: %s is in %s but not in the directory (removed)", ErrTampered, recorded[i].file, SumFile)
		case want[i].file != recorded[i].file:
			if d.hasFile(recorded[i].file) {
				return fmt.Errorf("%w: %s is out of its recorded order (inserted before %s, or reordered)", ErrTampered, want[i].file, recorded[i].file)
			}
			return fmt.Errorf("%w: %s is in %s but not in the directory (removed or renamed)", ErrTampered, recorded[i].file, SumFile)
		case want[i].hash != recorded[i].hash:
			return fmt.Errorf("%w: %s was edited after the sum was written", ErrTampered, filepath.Join(d.Path, want[i].file))
		}
	}
	return nil
}

func (d *Dir) hasFile(name string) bool {
	for _, m := range d.Migrations {
		if m.UpFile == name || m.DownFile == name {
			return true
		}
	}
	return false
}
