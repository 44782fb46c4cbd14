package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/pgphi/pgphi/internal/redact"
)

// Kinds of Problem.
const (
	// Chain problems (Verify, VerifyFile, VerifyArchive, ProveExtends).
	KindHashMismatch = "hash-mismatch" // the record's hash does not match its content (or the table's hash/prev columns disagree with it)
	KindBrokenLink   = "broken-link"   // the record's prev is not the hash of the record before it
	KindGap          = "gap"           // records are missing: Seq is the first missing one
	KindReordered    = "reordered"     // a record is stored at another position than its seq
	KindMalformed    = "malformed"     // not a record of the schema (bad JSON, a field added or missing, wrong type)
	// Checkpoint problems (Verify against pgphi.audit_checkpoints, ProveExtends).
	KindCheckpointMismatch = "checkpoint-mismatch" // the record at a signed seq no longer has the signed hash
	KindTruncated          = "truncated"           // the log ends before a signed seq: its newest records were removed
	KindCheckpointInvalid  = "checkpoint-invalid"  // a stored checkpoint whose signature does not verify under a known key
	// File versus table (CompareFileAndTable).
	KindMissingInFile  = "missing-in-file"
	KindMissingInTable = "missing-in-table"
	KindDiffers        = "differs"
)

// Problem is one verification finding: the sequence number where it is, its
// kind (Kind... constants) and a value-free description. A *Problem is also
// an error.
type Problem struct {
	Seq    int64  `json:"seq"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

func (p *Problem) Error() string {
	return fmt.Sprintf("audit: seq %d: %s: %s", p.Seq, p.Kind, p.Detail)
}

// Report is the result of verifying a chain. The chain verifies when
// Problems is empty; Problems are in the order found, the first one at the
// lowest sequence number where history is wrong.
type Report struct {
	Records  int64     `json:"records"`  // records (rows or lines) read
	Head     string    `json:"head"`     // hash of the last record
	HeadSeq  int64     `json:"head_seq"` // seq of the last record
	Problems []Problem `json:"problems"`
}

// OK reports whether no problem was found.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Err returns the first problem as an error, or nil.
func (r *Report) Err() error {
	if len(r.Problems) == 0 {
		return nil
	}
	p := r.Problems[0]
	return &p
}

// chain checks records in the order they are read.
type chain struct {
	rep    Report
	expect int64  // seq the next record should have; 0 = take the first one's
	prev   string // hash the next record's prev should be; "" = unknown
	// signed maps checkpoint seqs to their signed hashes (Verify only).
	signed map[int64][]string
}

// newChain returns a checker. strict: the chain must start at seq 1 (with
// prev ZeroHash); otherwise it may start at any seq (an archive, a range, or
// the table after old records were removed at the end of retention), and the
// first record's prev is checked only when its seq is 1.
func newChain(strict bool) *chain {
	c := &chain{}
	if strict {
		c.expect, c.prev = 1, ZeroHash
	}
	return c
}

func (c *chain) problem(seq int64, kind, format string, args ...any) {
	c.rep.Problems = append(c.rep.Problems, Problem{Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

func (c *chain) start(seq int64) {
	if c.expect == 0 {
		c.expect = seq
		if seq == 1 {
			c.prev = ZeroHash
		}
	}
}

func (c *chain) gap(seq int64) bool {
	if seq <= c.expect {
		return false
	}
	what := fmt.Sprintf("records %d..%d are missing", c.expect, seq-1)
	if seq-1 == c.expect {
		what = fmt.Sprintf("record %d is missing", c.expect)
	}
	if c.expect == 1 && c.rep.Records == 1 {
		what += " (if removed after the retention period, verify them in their archive)"
	}
	c.problem(c.expect, KindGap, "%s", what)
	return true
}

// row checks one row of pgphi.audit_log, read in seq order: its seq, hash
// and prev columns and its record.
func (c *chain) row(seq int64, hash, prev string, raw []byte) {
	c.rep.Records++
	c.start(seq)
	gap := c.gap(seq)
	rec, err := ParseRecord(raw)
	linkOK := true
	switch {
	case err != nil:
		c.problem(seq, KindMalformed, "%s", strings.TrimPrefix(err.Error(), "audit: "))
		linkOK = false
	case rec.Seq != seq:
		c.problem(seq, KindReordered, "position %d holds record %d", seq, rec.Seq)
		linkOK = false
	case rec.Hash != hash || rec.Prev != prev:
		c.problem(seq, KindHashMismatch, "the hash or prev column disagrees with the stored record")
	case rec.ComputeHash() != rec.Hash:
		c.problem(seq, KindHashMismatch, "the recomputed hash differs from the stored hash: the record was changed")
	case !gap && c.prev != "" && rec.Prev != c.prev:
		c.problem(seq, KindBrokenLink, "prev is not the hash of record %d", seq-1)
	}
	c.checkSigned(seq, hash)
	c.rep.Head, c.rep.HeadSeq = hash, seq
	c.expect = seq + 1
	c.prev = ""
	if linkOK {
		c.prev = rec.Hash
	}
}

// line checks one line of a JSON-lines file, read in file order.
func (c *chain) line(n int64, raw []byte) {
	c.rep.Records++
	rec, err := ParseRecord(raw)
	if err != nil {
		seq := c.expect
		if seq == 0 {
			seq = 1
		}
		c.problem(seq, KindMalformed, "line %d: %s", n, strings.TrimPrefix(err.Error(), "audit: "))
		c.expect, c.prev = seq+1, ""
		return
	}
	c.start(rec.Seq)
	if rec.Seq < c.expect {
		c.problem(rec.Seq, KindReordered, "line %d holds record %d after record %d", n, rec.Seq, c.expect-1)
		return
	}
	gap := c.gap(rec.Seq)
	switch {
	case rec.ComputeHash() != rec.Hash:
		c.problem(rec.Seq, KindHashMismatch, "line %d: the recomputed hash differs from the stored hash: the record was changed", n)
	case !gap && c.prev != "" && rec.Prev != c.prev:
		c.problem(rec.Seq, KindBrokenLink, "line %d: prev is not the hash of record %d", n, rec.Seq-1)
	}
	c.rep.Head, c.rep.HeadSeq = rec.Hash, rec.Seq
	c.expect, c.prev = rec.Seq+1, rec.Hash
}

func (c *chain) checkSigned(seq int64, hash string) {
	for _, h := range c.signed[seq] {
		if h != hash {
			c.problem(seq, KindCheckpointMismatch, "a signed checkpoint of seq %d has another hash: history at or before seq %d was rewritten", seq, seq)
			break
		}
	}
	delete(c.signed, seq)
}

// finish reports signed checkpoints beyond the head.
func (c *chain) finish() {
	var beyond int64
	for seq := range c.signed {
		if seq > c.rep.HeadSeq && seq > beyond {
			beyond = seq
		}
	}
	if beyond > 0 {
		c.problem(c.rep.HeadSeq+1, KindTruncated, "a checkpoint was signed at seq %d but the log ends at seq %d: records were removed", beyond, c.rep.HeadSeq)
	}
}

// scanTable feeds the rows of pgphi.audit_log with seq >= from to c.
func scanTable(ctx context.Context, q Querier, from int64, c *chain) error {
	rows, err := q.Query(ctx, `SELECT seq, hash, prev, record::text FROM pgphi.audit_log WHERE seq >= $1 ORDER BY seq`, from)
	if err != nil {
		return fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
	}
	defer rows.Close()
	for rows.Next() {
		var (
			seq              int64
			hash, prev, text string
		)
		if err := rows.Scan(&seq, &hash, &prev, &text); err != nil {
			return fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
		}
		c.row(seq, hash, prev, []byte(text))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
	}
	return nil
}

// loadSigned reads the checkpoints stored in pgphi.audit_checkpoints and
// returns the signed hash of each seq. With keys nil every stored
// checkpoint counts (its seq and hash were checked against the chain when
// pgphi.audit_checkpoint_record stored it). With keys, only checkpoints whose
// signature verifies under one of them count; the others are returned as
// problems of kind checkpoint-invalid (a bogus row: it proves nothing and
// blocks nothing).
func loadSigned(ctx context.Context, q Querier, keys []ed25519.PublicKey) (map[int64][]string, []Problem, error) {
	cps, err := Checkpoints(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	m := map[int64][]string{}
	var bad []Problem
	for i := range cps {
		cp := &cps[i]
		if keys != nil {
			if err := VerifyCheckpointKeys(cp, keys); err != nil {
				bad = append(bad, Problem{Seq: cp.Seq, Kind: KindCheckpointInvalid,
					Detail: fmt.Sprintf("a stored checkpoint of seq %d (key %s) has no valid signature by a known key", cp.Seq, cp.KeyFingerprint)})
				continue
			}
		}
		m[cp.Seq] = append(m[cp.Seq], cp.Hash)
	}
	return m, bad, nil
}

// Verify recomputes the whole chain in pgphi.audit_log, from seq 1 to the
// head, and reports every problem: a record whose hash does not match its
// content (hash-mismatch), whose prev is not its predecessor's hash
// (broken-link), missing records (gap, at the first missing seq), a record
// stored at another seq than its own (reordered), and a record that is not of
// the schema (malformed). It also checks the chain against every checkpoint
// stored in pgphi.audit_checkpoints (checkpoint-mismatch, truncated) — their
// signatures are checked by VerifyCheckpoint, with the auditor's key.
//
// A returned error means verification could not run (database error); a
// chain with problems is a Report with Problems, not an error. The chain
// alone cannot reveal that its newest records were removed or that it was
// rewritten consistently from some record on: compare with the mirror file
// (CompareFileAndTable) and the auditor's checkpoints (ProveExtends).
func Verify(ctx context.Context, q Querier) (*Report, error) {
	return VerifyWithKeys(ctx, q, nil)
}

// VerifyWithKeys is Verify that also checks the signature of every stored
// checkpoint against keys (audit.public_key and any other allowed checkpoint
// signers): a stored checkpoint without a valid signature by one of them is
// a problem of kind checkpoint-invalid at its seq and is not used to judge
// the chain. With keys nil it is Verify.
func VerifyWithKeys(ctx context.Context, q Querier, keys []ed25519.PublicKey) (*Report, error) {
	signed, bad, err := loadSigned(ctx, q, keys)
	if err != nil {
		return nil, err
	}
	c := newChain(true)
	c.signed = signed
	if err := scanTable(ctx, q, 1, c); err != nil {
		return nil, err
	}
	c.finish()
	c.rep.Problems = append(c.rep.Problems, bad...)
	return &c.rep, nil
}

// VerifyFile runs Verify's checks on a JSON-lines file (the mirror, or an
// export from seq 1): every line a record, the records in seq order from 1
// without gaps, every hash and link right. A line cut short (truncation) is
// malformed at the seq it should have had; the removal of whole lines at the
// end shows only against the table (CompareFileAndTable) or a checkpoint.
func VerifyFile(path string) (*Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	c := newChain(true)
	if err := scanLines(f, c); err != nil {
		return nil, fmt.Errorf("audit: reading %s: %w", path, err)
	}
	return &c.rep, nil
}

// scanLines feeds the lines of r to c. A final line without a newline is
// checked too (it is usually cut short and will be malformed).
func scanLines(r io.Reader, c *chain) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var n int64
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			n++
			c.line(n, bytes.TrimSuffix(line, []byte("\n")))
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// CompareFileAndTable reads the JSON-lines file at path and pgphi.audit_log
// side by side, in order, and returns the first difference: a record
// missing from the file (missing-in-file: a deleted line, or a mirror that
// has not caught up — Log.Sync brings it up), missing from the table
// (missing-in-table), or present in both with different content (differs;
// Detail names the differing fields, never their content). It returns nil
// when both hold exactly the same records.
func CompareFileAndTable(ctx context.Context, q Querier, path string) (*Problem, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	var lineNo int64
	nextLine := func() ([]byte, bool, error) {
		line, err := br.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			return nil, false, nil
		}
		if err != nil && err != io.EOF {
			return nil, false, err
		}
		lineNo++
		return bytes.TrimSuffix(line, []byte("\n")), true, nil
	}

	rows, err := q.Query(ctx, `SELECT seq, hash, prev, record::text FROM pgphi.audit_log ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
	}
	defer rows.Close()
	var lastSeq int64
	for {
		var (
			seq              int64
			hash, prev, text string
		)
		inTable := rows.Next()
		if inTable {
			if err := rows.Scan(&seq, &hash, &prev, &text); err != nil {
				return nil, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
			}
		} else if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("audit: reading pgphi.audit_log: %w", redact.Error(err))
		}
		line, inFile, err := nextLine()
		if err != nil {
			return nil, fmt.Errorf("audit: reading %s: %w", path, err)
		}
		switch {
		case !inTable && !inFile:
			return nil, nil
		case !inFile:
			return &Problem{Seq: seq, Kind: KindMissingInFile, Detail: fmt.Sprintf("the file ends after %d lines; the table continues with record %d", lineNo, seq)}, nil
		}
		fileRec, ferr := ParseRecord(line)
		switch {
		case !inTable:
			s := lastSeq + 1
			if ferr == nil {
				s = fileRec.Seq
			}
			return &Problem{Seq: s, Kind: KindMissingInTable, Detail: fmt.Sprintf("line %d is beyond the table's last record %d", lineNo, lastSeq)}, nil
		case ferr != nil:
			return &Problem{Seq: seq, Kind: KindDiffers, Detail: fmt.Sprintf("line %d is not a valid record (table record %d)", lineNo, seq)}, nil
		case fileRec.Seq > seq:
			return &Problem{Seq: seq, Kind: KindMissingInFile, Detail: fmt.Sprintf("line %d holds record %d; record %d is not in the file there", lineNo, fileRec.Seq, seq)}, nil
		case fileRec.Seq < seq:
			return &Problem{Seq: fileRec.Seq, Kind: KindMissingInTable, Detail: fmt.Sprintf("line %d holds record %d, which the table lacks at that position", lineNo, fileRec.Seq)}, nil
		}
		tableRec, terr := ParseRecord([]byte(text))
		if terr != nil {
			return &Problem{Seq: seq, Kind: KindDiffers, Detail: fmt.Sprintf("the table's record %d is not a valid record (line %d is)", seq, lineNo)}, nil
		}
		d := diffFields(fileRec, tableRec)
		if fileRec.Hash != hash && !slices.Contains(d, "hash") {
			d = append(d, "hash column")
		}
		if fileRec.Prev != prev && !slices.Contains(d, "prev") {
			d = append(d, "prev column")
		}
		if len(d) > 0 {
			return &Problem{Seq: seq, Kind: KindDiffers, Detail: fmt.Sprintf("line %d and the table's record %d differ in %s", lineNo, seq, strings.Join(d, ", "))}, nil
		}
		lastSeq = seq
	}
}
