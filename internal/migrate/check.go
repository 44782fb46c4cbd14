package migrate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
)

// Entry is the status of one migration: the directory and the history side
// by side.
type Entry struct {
	Version int64   `json:"version"`
	Name    string  `json:"name"`
	State   string  `json:"state"` // pending, or the history's state; missing: in history but not on disk
	File    string  `json:"file,omitempty"`
	Down    bool    `json:"has_down"`
	Record  *Record `json:"history,omitempty"`
}

// Status lists every migration of the directory and every version of the
// history, by version.
func Status(d *Dir, hist []Record) []Entry {
	hv := byVersion(hist)
	seen := map[int64]bool{}
	var out []Entry
	for _, m := range d.Migrations {
		e := Entry{Version: m.Version, Name: m.Name, File: m.UpFile, Down: m.DownFile != "", State: "pending"}
		if r := hv[m.Version]; r != nil {
			e.Record, e.State = r, r.State
			if r.State == "reverted" {
				e.State = "pending"
			}
		}
		seen[m.Version] = true
		out = append(out, e)
	}
	for i := range hist {
		if !seen[hist[i].Version] && hist[i].Applied() {
			out = append(out, Entry{Version: hist[i].Version, Name: hist[i].Name, State: "missing", Record: &hist[i]})
		}
	}
	return out
}

// Check refuses (ErrTampered) a directory that does not match its sum file,
// an applied migration whose file changed or is gone, and a pending
// migration older than an applied one (inserted behind the history).
func Check(d *Dir, hist []Record) error {
	if err := d.CheckSum(); err != nil {
		return err
	}
	var maxApplied int64 = -1
	for i := range hist {
		r := &hist[i]
		if !r.Applied() {
			continue
		}
		m := d.Find(r.Version)
		if m == nil {
			return fmt.Errorf("%w: migration %s is applied but %s is not in %s", ErrTampered, r.Name, r.Name+".up.sql", d.Path)
		}
		if m.UpSHA != r.SHA256 {
			return fmt.Errorf("%w: %s was edited after it was applied (SHA-256 %s recorded, %s now); write a new migration instead", ErrTampered, filepath.Join(d.Path, m.UpFile), short(r.SHA256), short(m.UpSHA))
		}
		if r.Version > maxApplied {
			maxApplied = r.Version
		}
	}
	hv := byVersion(hist)
	for _, m := range d.Migrations {
		if r := hv[m.Version]; (r == nil || r.State == "reverted") && m.Version < maxApplied {
			return fmt.Errorf("%w: %s is pending but older than applied migration %d (inserted behind the history); give it a version after %d", ErrTampered, filepath.Join(d.Path, m.UpFile), maxApplied, maxApplied)
		}
	}
	return nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// Pending returns the migrations to apply up to version to (to < 0: all),
// in order: those with no history, reverted, failed or interrupted.
func Pending(d *Dir, hist []Record, to int64) []*Migration {
	hv := byVersion(hist)
	var out []*Migration
	for _, m := range d.Migrations {
		if to >= 0 && m.Version > to {
			break
		}
		if r := hv[m.Version]; r == nil || !r.Applied() {
			out = append(out, m)
		}
	}
	return out
}

// ToRevert returns the applied migrations to roll down, newest first: down
// to (but not including) version to, or the last steps ones.
func ToRevert(d *Dir, hist []Record, to int64, steps int) []Record {
	var applied []Record
	for _, r := range hist {
		if r.Applied() {
			applied = append(applied, r)
		}
	}
	var out []Record
	for i := len(applied) - 1; i >= 0; i-- {
		r := applied[i]
		if steps > 0 && len(out) >= steps {
			break
		}
		if steps <= 0 && r.Version <= to {
			break
		}
		out = append(out, r)
	}
	return out
}

// PlanID is what an approval of a migration run signs: a hash of the
// direction, the database identity and the (version, name, SHA-256) of every
// file the run would apply or revert, in order. Another file, another
// database or an edit changes it.
func PlanID(direction, systemIdentifier, database string, files []*Migration) string {
	h := sha256.New()
	fmt.Fprintf(h, "pgphi-migrate-plan-v1\n%s\n%s\n%s\n", direction, systemIdentifier, database)
	for _, m := range files {
		sum := m.UpSHA
		if direction == "down" {
			sum = hashHex(m.Down)
		}
		fmt.Fprintf(h, "%d %s %s\n", m.Version, m.Name, sum)
	}
	return "migrate-" + hex.EncodeToString(h.Sum(nil))[:24]
}

// Names lists migration names for messages.
func Names(ms []*Migration) string {
	n := make([]string, len(ms))
	for i, m := range ms {
		n[i] = m.Name
	}
	return strings.Join(n, ", ")
}
