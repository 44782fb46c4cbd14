package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgphi/pgphi/internal/redact"
)

// Export writes the records of pgphi.audit_log with fromSeq <= seq <= toSeq
// (0 = open end) to w as JSON lines, in seq order, each in canonical form
// (the mirror's format), and returns how many it wrote. A stored record that
// is not of the schema is written as the database returns it, so the export
// shows what is there; VerifyFile then reports it. Export does not verify.
func Export(ctx context.Context, q Querier, w io.Writer, fromSeq, toSeq int64) (int64, error) {
	rows, err := q.Query(ctx, `SELECT record::text FROM pgphi.audit_log
		WHERE seq >= $1::bigint AND ($2::bigint = 0 OR seq <= $2::bigint) ORDER BY seq`, fromSeq, toSeq)
	if err != nil {
		return 0, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
	}
	defer rows.Close()
	bw := bufio.NewWriter(w)
	var n int64
	for rows.Next() {
		var text string
		if err := rows.Scan(&text); err != nil {
			return n, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
		}
		line := []byte(text)
		if rec, err := ParseRecord(line); err == nil {
			line = rec.CanonicalJSON()
		} else {
			line = compactLine(line)
		}
		bw.Write(line)
		if err := bw.WriteByte('\n'); err != nil {
			return n, fmt.Errorf("audit: export: %w", err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("audit: export: %w", err)
	}
	return n, nil
}

// compactLine keeps a foreign JSON text on one line.
func compactLine(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\n"), []byte(`\n`)), []byte("\r"), []byte(`\r`))
}

// List returns the records with fromSeq <= seq <= toSeq (0 = open end), in
// seq order, for reports. A record that is not of the schema is an error
// naming its seq. List does not verify the chain; Verify does.
func List(ctx context.Context, q Querier, fromSeq, toSeq int64) ([]Record, error) {
	rows, err := q.Query(ctx, `SELECT seq, record::text FROM pgphi.audit_log
		WHERE seq >= $1::bigint AND ($2::bigint = 0 OR seq <= $2::bigint) ORDER BY seq`, fromSeq, toSeq)
	if err != nil {
		return nil, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var (
			seq  int64
			text string
		)
		if err := rows.Scan(&seq, &text); err != nil {
			return nil, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
		}
		rec, err := ParseRecord([]byte(text))
		if err != nil {
			return nil, fmt.Errorf("audit: record %d: %w", seq, err)
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
	}
	return out, nil
}

// Archive writes the records older than before — the longest prefix of the
// chain whose records were all recorded before it — to a gzip-compressed
// JSON-lines file in dir, named pgphi-audit-<first seq>-<last seq>.jsonl.gz,
// plus a checksum file of the same name with ".sha256" appended, in
// sha256sum(1) format. It returns the archive's path and the number of
// records. Both files are written to temporary names, fsynced and renamed,
// so an archive is either complete or absent. Archive verifies the records
// it writes and refuses (writing nothing) if they do not verify; an empty
// range returns an error wrapping ErrEmpty.
//
// Archive never deletes anything: the table is append-only and records are
// kept for at least six years (HIPAA, 45 CFR 164.316(b)(2)). Because the
// table keeps every record, each archive starts at the oldest stored record
// and verifies on its own. Removing records after the retention period is a
// deliberate operator action outside pgphi (it requires disabling the
// table's trigger as a superuser), to be taken only after the archive
// covering them has been verified (VerifyArchive) and stored.
func Archive(ctx context.Context, q Querier, dir string, before time.Time) (path string, n int64, err error) {
	var upper int64 // exclusive; 0 = none
	err = q.QueryRow(ctx, `SELECT COALESCE((SELECT min(seq) FROM pgphi.audit_log WHERE recorded_at >= $1), 0)`, before).Scan(&upper)
	if err != nil {
		return "", 0, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
	}
	rows, err := q.Query(ctx, `SELECT seq, hash, prev, record::text FROM pgphi.audit_log
		WHERE ($1::bigint = 0 OR seq < $1::bigint) ORDER BY seq`, upper)
	if err != nil {
		return "", 0, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
	}
	defer rows.Close()

	tmp, err := os.CreateTemp(dir, ".pgphi-audit-*.tmp")
	if err != nil {
		return "", 0, fmt.Errorf("audit: archive: %w", err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	sum := sha256.New()
	zw := gzip.NewWriter(io.MultiWriter(tmp, sum))
	bw := bufio.NewWriter(zw)
	c := newChain(false)
	var first int64
	for rows.Next() {
		var (
			seq              int64
			hash, prev, text string
		)
		if err := rows.Scan(&seq, &hash, &prev, &text); err != nil {
			return "", 0, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
		}
		c.row(seq, hash, prev, []byte(text))
		if err := c.rep.Err(); err != nil {
			return "", 0, fmt.Errorf("audit: not archiving a chain that does not verify: %w", err)
		}
		rec, _ := ParseRecord([]byte(text)) // verified above
		if first == 0 {
			first = seq
		}
		bw.Write(rec.CanonicalJSON())
		bw.WriteByte('\n')
	}
	if err := rows.Err(); err != nil {
		return "", 0, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
	}
	if c.rep.Records == 0 {
		return "", 0, fmt.Errorf("%w: no record was recorded before %s", ErrEmpty, before.UTC().Format(time.RFC3339))
	}
	if err := bw.Flush(); err != nil {
		return "", 0, fmt.Errorf("audit: archive: %w", err)
	}
	if err := zw.Close(); err != nil {
		return "", 0, fmt.Errorf("audit: archive: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("audit: archive: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("audit: archive: %w", err)
	}
	name := fmt.Sprintf("pgphi-audit-%012d-%012d.jsonl.gz", first, c.rep.HeadSeq)
	path = filepath.Join(dir, name)
	sumLine := hex.EncodeToString(sum.Sum(nil)) + "  " + name + "\n"
	if err := writeFileSync(path+".sha256", []byte(sumLine)); err != nil {
		return "", 0, fmt.Errorf("audit: archive: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", 0, fmt.Errorf("audit: archive: %w", err)
	}
	tmp = nil
	if err := syncDir(dir); err != nil {
		return "", 0, fmt.Errorf("audit: archive: %w", err)
	}
	return path, c.rep.Records, nil
}

// writeFileSync writes data to path through a temporary file, fsynced and
// renamed into place.
func writeFileSync(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".pgphi-audit-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// VerifyArchive checks an archive written by Archive: the SHA-256 in
// path+".sha256" matches the file, the gzip stream is intact, and the chain
// inside verifies (hashes, links, no gaps; it may start after seq 1). It
// returns nil or an error naming what is wrong (a *Problem for the chain).
func VerifyArchive(path string) error {
	sumFile, err := os.ReadFile(path + ".sha256")
	if err != nil {
		return fmt.Errorf("audit: archive checksum: %w", err)
	}
	fields := strings.Fields(string(sumFile))
	if len(fields) != 2 || len(fields[0]) != 64 || strings.TrimPrefix(fields[1], "*") != filepath.Base(path) {
		return fmt.Errorf("audit: %s.sha256 is not a sha256sum line for %s", filepath.Base(path), filepath.Base(path))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("audit: archive: %w", err)
	}
	got := sha256.Sum256(data)
	if hex.EncodeToString(got[:]) != strings.ToLower(fields[0]) {
		return fmt.Errorf("audit: archive %s: SHA-256 does not match %s.sha256: the archive was changed", filepath.Base(path), filepath.Base(path))
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("audit: archive %s: %w", filepath.Base(path), err)
	}
	c := newChain(false)
	if err := scanLines(zr, c); err != nil {
		return fmt.Errorf("audit: archive %s: %w", filepath.Base(path), err)
	}
	if c.rep.Records == 0 {
		return fmt.Errorf("audit: archive %s holds no records", filepath.Base(path))
	}
	if err := c.rep.Err(); err != nil {
		return err
	}
	return nil
}
