package backup

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Manifest describes what a backup holds; it travels inside the encryption,
// signed with the audit checkpoint key.
type Manifest struct {
	Version       int        `json:"version"` // 1
	BackupID      string     `json:"backup_id"`
	Format        string     `json:"format"`
	Database      string     `json:"database"`
	ServerVersion string     `json:"server_version"`
	TakenAt       time.Time  `json:"taken_at"`
	PlanID        string     `json:"plan_id"`
	KeyIDs        []uint32   `json:"key_ids"` // data keys whose ciphertexts or blind indexes the backup holds
	Tables        []TableSum `json:"tables"`
	// SigningKey is the fingerprint of the Ed25519 key that signed it.
	SigningKey string `json:"signing_key"`
}

// TableSum is one table's row count and checksum.
type TableSum struct {
	Table string `json:"table"` // schema-qualified
	Rows  int64  `json:"rows"`
	// SHA256 is the SHA-256 of the table's rows as COPY text in primary-key
	// order (Ordered), or, for a table without a primary key, the sum
	// modulo 2^64 per 8-byte lane of the SHA-256 of each row (a multiset
	// hash, independent of order).
	SHA256  string `json:"sha256"`
	Ordered bool   `json:"ordered"`
}

// Rows is the total row count of the manifest's tables.
func (m *Manifest) Rows() int64 {
	var n int64
	for _, t := range m.Tables {
		n += t.Rows
	}
	return n
}

// signedMessage is what the manifest's signature covers.
func signedMessage(manifestJSON []byte) []byte {
	return append([]byte("pgphi-backup-manifest-v1\n"), manifestJSON...)
}

// Digest is the hex SHA-256 of the manifest's JSON as stored in the file;
// pgphi.backups records it.
func Digest(manifestJSON []byte) string {
	sum := sha256.Sum256(manifestJSON)
	return hex.EncodeToString(sum[:])
}

// writeManifest writes u32be(len) || json || signature.
func writeManifest(w io.Writer, mjson, sig []byte) error {
	if _, err := w.Write(binary.BigEndian.AppendUint32(nil, uint32(len(mjson)))); err != nil {
		return err
	}
	if _, err := w.Write(mjson); err != nil {
		return err
	}
	_, err := w.Write(sig)
	return err
}

// readManifest reads what writeManifest wrote and checks the signature
// against any of trusted.
func readManifest(r io.Reader, trusted []ed25519.PublicKey) (*Manifest, []byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, nil, corrupt("reading the manifest", err)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size == 0 || size > maxManifestSize {
		return nil, nil, fmt.Errorf("%w: manifest length %d", ErrCorrupt, size)
	}
	mjson := make([]byte, size)
	if _, err := io.ReadFull(r, mjson); err != nil {
		return nil, nil, corrupt("reading the manifest", err)
	}
	sig := make([]byte, ed25519.SignatureSize)
	if _, err := io.ReadFull(r, sig); err != nil {
		return nil, nil, corrupt("reading the manifest's signature", err)
	}
	ok := false
	for _, k := range trusted {
		if ed25519.Verify(k, signedMessage(mjson), sig) {
			ok = true
			break
		}
	}
	if !ok {
		return nil, nil, fmt.Errorf("%w: the manifest's signature is not by the audit key", ErrBadSignature)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(mjson))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil || m.Version != 1 {
		return nil, nil, fmt.Errorf("%w: the manifest is not a version 1 manifest", ErrCorrupt)
	}
	return &m, mjson, nil
}

// canonicalSettings make COPY's text the same on every server and session.
var canonicalSettings = []string{
	"SET LOCAL DateStyle = 'ISO, YMD'", "SET LOCAL TimeZone = 'UTC'", "SET LOCAL IntervalStyle = 'postgres'",
	"SET LOCAL extra_float_digits = 3", "SET LOCAL bytea_output = 'hex'",
}

// sumTables counts and checksums every ordinary table outside the system
// schemas, in tx's snapshot. Nothing read is kept or shown: only counts and
// hashes leave this function.
func sumTables(ctx context.Context, tx pgx.Tx) ([]TableSum, error) {
	for _, s := range canonicalSettings {
		if _, err := tx.Exec(ctx, s); err != nil {
			return nil, err
		}
	}
	type table struct {
		schema, name string
		pk           []string
	}
	rows, err := tx.Query(ctx, `SELECT n.nspname::text, c.relname::text,
			COALESCE((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_catalog.pg_index i
				CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
				JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
				WHERE i.indrelid = c.oid AND i.indisprimary), ARRAY[]::text[])
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
		ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("backup: listing tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var t table
		return t, r.Scan(&t.schema, &t.name, &t.pk)
	})
	if err != nil {
		return nil, fmt.Errorf("backup: listing tables: %w", err)
	}
	out := make([]TableSum, 0, len(tables))
	for _, t := range tables {
		q := "SELECT * FROM ONLY " + pgx.Identifier{t.schema, t.name}.Sanitize()
		if len(t.pk) > 0 {
			order := make([]string, len(t.pk))
			for i, c := range t.pk {
				order[i] = pgx.Identifier{c}.Sanitize() + `::text COLLATE "C"`
			}
			q += " ORDER BY " + strings.Join(order, ", ")
		}
		h := newRowHasher(len(t.pk) > 0)
		if _, err := tx.Conn().PgConn().CopyTo(ctx, h, "COPY ("+q+") TO STDOUT"); err != nil {
			return nil, fmt.Errorf("backup: reading %s.%s: %w", t.schema, t.name, err)
		}
		out = append(out, h.sum(t.schema+"."+t.name))
	}
	slices.SortFunc(out, func(a, b TableSum) int { return strings.Compare(a.Table, b.Table) })
	return out, nil
}

// rowHasher hashes COPY text: the whole stream (ordered), or each row on its
// own, summed (unordered). COPY text escapes newlines inside values, so a
// row is a line.
type rowHasher struct {
	ordered bool
	whole   interface {
		io.Writer
		Sum([]byte) []byte
	}
	rows    int64
	partial []byte
	lanes   [4]uint64
}

func newRowHasher(ordered bool) *rowHasher { return &rowHasher{ordered: ordered, whole: sha256.New()} }

func (h *rowHasher) Write(p []byte) (int, error) {
	h.whole.Write(p)
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			h.partial = append(h.partial, p...)
			break
		}
		h.row(append(h.partial, p[:i+1]...))
		h.partial = h.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (h *rowHasher) row(line []byte) {
	h.rows++
	if h.ordered {
		return
	}
	s := sha256.Sum256(line)
	for i := range h.lanes {
		h.lanes[i] += binary.BigEndian.Uint64(s[8*i:])
	}
}

func (h *rowHasher) sum(table string) TableSum {
	ts := TableSum{Table: table, Rows: h.rows, Ordered: h.ordered}
	if h.ordered {
		ts.SHA256 = hex.EncodeToString(h.whole.Sum(nil))
	} else {
		var b []byte
		for _, l := range h.lanes {
			b = binary.BigEndian.AppendUint64(b, l)
		}
		ts.SHA256 = hex.EncodeToString(b)
	}
	return ts
}

// compare lists every difference between the manifest's tables and the
// restored ones (names and counts only: a checksum of a small table could
// be matched against guesses of its values).
func compare(want, got []TableSum) []string {
	byName := map[string]TableSum{}
	for _, t := range got {
		byName[t.Table] = t
	}
	var diffs []string
	for _, w := range want {
		g, ok := byName[w.Table]
		switch {
		case !ok:
			diffs = append(diffs, w.Table+": missing after restore")
		case g.Rows != w.Rows:
			diffs = append(diffs, fmt.Sprintf("%s: %d rows restored, the manifest says %d", w.Table, g.Rows, w.Rows))
		case g.SHA256 != w.SHA256:
			diffs = append(diffs, w.Table+": the restored rows' checksum differs from the manifest's")
		}
	}
	return diffs
}
