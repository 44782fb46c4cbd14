package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/keys"
)

// Mismatch is one value that failed verification. It names the row, never the value.
type Mismatch struct {
	Table      string   `json:"table"`
	Column     string   `json:"column"`
	KeyColumns []string `json:"key_columns"`
	Key        []string `json:"key"`
	Problem    string   `json:"problem"`
}

func (m Mismatch) String() string {
	return fmt.Sprintf("%s.%s at (%s)=(%s): %s", m.Table, m.Column, strings.Join(m.KeyColumns, ", "), strings.Join(m.Key, ", "), m.Problem)
}

// VerifyResult is the outcome of decrypting and comparing every value.
type VerifyResult struct {
	Rows       int64      `json:"rows"`
	Values     int64      `json:"values_checked"`
	Mismatches int64      `json:"mismatches"`
	Pending    int64      `json:"rows_pending"`
	Examples   []Mismatch `json:"examples"` // the first MaxExamples mismatches

	// Triggers lists what is wrong with pgphi's triggers, mark functions and
	// envelope checks (CheckTriggers): with any, writes may have gone
	// unmarked or unchecked, and the verification fails.
	Triggers []TriggerProblem `json:"trigger_problems,omitempty"`

	// InaccurateSearch lists the tables whose sampled encrypted searches
	// answered below the accuracy threshold (the command line's oracle
	// check); with any, the verification fails.
	InaccurateSearch []string `json:"inaccurate_search,omitempty"`
}

// OK reports whether every value decrypted to its plaintext, no row is
// pending, and pgphi's triggers are in place.
func (v *VerifyResult) OK() bool {
	return v.Mismatches == 0 && v.Pending == 0 && len(v.Triggers) == 0 && len(v.InaccurateSearch) == 0
}

// MaxExamples bounds how many mismatches a result lists.
const MaxExamples = 50

// Problems a verification can find.
const (
	ProblemMissing    = "plaintext has no ciphertext"
	ProblemUndecrypt  = "ciphertext does not decrypt for this row and column (moved, altered or wrong key)"
	ProblemDifferent  = "ciphertext decrypts to a different value than the plaintext"
	ProblemWrongType  = "ciphertext holds a value of another type"
	ProblemNoTerms    = "value has no blind index terms"
	ProblemWrongTerms = "blind index terms do not match the value"
)

// ErrNotExpanded is returned by Verify and Status when apply has not added the ciphertext columns yet.
var ErrNotExpanded = errors.New("the ciphertext columns do not exist yet (no apply has run)")

// Verify decrypts every ciphertext of every planned column and compares it with
// the plaintext still present. It reads in key order without locking.
func Verify(ctx context.Context, pool *pgxpool.Pool, ring *keys.Keyring, p *Plan, batch int) (*VerifyResult, error) {
	return VerifyObserved(ctx, pool, ring, p, batch, nil)
}

// VerifyObserved is Verify reporting each table's counts to m (nil: none).
func VerifyObserved(ctx context.Context, pool *pgxpool.Pool, ring *keys.Keyring, p *Plan, batch int, m Metrics) (*VerifyResult, error) {
	if batch <= 0 {
		// Pages of a thousand rows: a few are in memory at once (one being
		// read, one per checker, one queued), whatever the table's size.
		batch = 1000
	}
	res := &VerifyResult{}
	var err error
	var mu sync.Mutex
	for _, t := range p.Tables {
		if err := t.loadUniques(ctx, pool); err != nil {
			return nil, err
		}
		if err := checkExpanded(ctx, pool, t); err != nil {
			return nil, err
		}
	}
	// Triggers first: a write that lands while the values are read is
	// covered only if the triggers were in place.
	if res.Triggers, err = CheckTriggers(ctx, pool, p); err != nil {
		return nil, err
	}
	ix, err := LoadIndexers(ctx, pool, ring, p)
	if err != nil {
		return nil, err
	}
	err = runWorkers(ctx, min(len(p.Tables), 4), func(ctx context.Context, w int) error {
		for i := w; i < len(p.Tables); i += min(len(p.Tables), 4) {
			part, err := verifyTable(ctx, pool, ring, ix, p.Tables[i], batch)
			if err != nil {
				return err
			}
			if err := verifyRules(ctx, pool, ring, p.Tables[i], part); err != nil {
				return err
			}
			if m != nil {
				m.Verified(p.Tables[i].QualifiedName(), part.Rows, part.Values, part.Mismatches)
			}
			mu.Lock()
			res.merge(part)
			mu.Unlock()
		}
		return nil
	})
	return res, err
}

func checkExpanded(ctx context.Context, pool *pgxpool.Pool, t *Target) error {
	want := t.addedColumns()
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = ANY($2) AND NOT attisdropped",
		t.Ident(), want).Scan(&n); err != nil {
		return err
	}
	if n != len(want) {
		return withNextStep(fmt.Errorf("%s: %w", t.QualifiedName(), ErrNotExpanded), OpApply)
	}
	return nil
}

// verifyChunk is one batch of rows read for verification, copied out of
// pgx's buffers so that a checker can work on it while the next is read.
type verifyChunk struct {
	seq     int
	rows    [][][]byte // per row, the raw values of the select list
	formats []int16    // per field, the wire format
}

// verifyTable reads the table in key order on one connection and checks the
// rows on several goroutines: decrypting and recomputing blind index terms
// is the expensive part, and reading the next batch overlaps with it.
func verifyTable(ctx context.Context, pool *pgxpool.Pool, ring *keys.Keyring, ix Indexers, t *Target, batch int) (*VerifyResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	checkers := max(1, runtime.GOMAXPROCS(0))
	chunks := make(chan verifyChunk, 1)
	results := make([]*VerifyResult, 0, 64)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range checkers {
		wg.Go(func() {
			c := newRowChecker(ring, ix, t)
			for ch := range chunks {
				part := &VerifyResult{}
				for _, raw := range ch.rows {
					c.check(part, raw, ch.formats)
				}
				mu.Lock()
				for len(results) <= ch.seq {
					results = append(results, nil)
				}
				results[ch.seq] = part
				mu.Unlock()
			}
		})
	}
	readErr := readForVerify(ctx, pool, t, batch, chunks)
	close(chunks)
	wg.Wait()
	if readErr != nil {
		return nil, readErr
	}
	// Merge in read order, so the examples are the first mismatches in key order.
	res := &VerifyResult{}
	for _, part := range results {
		if part != nil {
			res.merge(part)
		}
	}
	return res, nil
}

// verifySelect is the select list of verification: the key as text, then per
// column the plaintext as text, the ciphertext and the terms (NULL when the
// column has no index), then whether the row is pending.
func verifySelect(t *Target) string {
	var sel strings.Builder
	for _, k := range t.KeyTexts() {
		sel.WriteString(k + ", ")
	}
	for i, c := range t.Columns {
		idx := "NULL::bigint[]"
		if c.HasIndex() {
			idx = ident(c.Index)
		}
		plain := ident(c.Name) + "::text"
		if c.Cleaned {
			plain = "NULL::text"
		}
		fmt.Fprintf(&sel, "%s AS pgphi_value_%d, %s, %s, ", plain, i, ident(c.Encrypted), idx)
	}
	for _, u := range t.Uniques {
		sel.WriteString(ident(u.Column) + ", ")
	}
	if t.Cleaned() {
		sel.WriteString("false")
	} else {
		sel.WriteString(ident(MarkerColumn) + " IS TRUE")
	}
	return sel.String()
}

// readForVerify pages through the table in key order and hands each page to
// the checkers.
func readForVerify(ctx context.Context, pool *pgxpool.Pool, t *Target, batch int, out chan<- verifyChunk) error {
	nk := len(t.PrimaryKey)
	sel := verifySelect(t)
	first := fmt.Sprintf("SELECT %s FROM %s ORDER BY %s LIMIT $1", sel, t.Ident(), t.keyList(""))
	next := fmt.Sprintf("SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT $%d", sel, t.Ident(), t.keyCompare(">", 1), t.keyList(""), nk+1)
	var last []string
	for seq := 0; ; seq++ {
		var rows pgx.Rows
		// Each page is read as the table's owner where the connected role
		// may act as it: row-level security (off in pgphi's sessions, so a
		// filtered read fails rather than hiding rows) does not apply to
		// the owner.
		tx, err := pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
		if err != nil {
			return fmt.Errorf("reading %s: %w", t.QualifiedName(), err)
		}
		if _, err := asTableOwner(ctx, tx, t, false); err != nil {
			tx.Rollback(ctx)
			return err
		}
		if last == nil {
			rows, err = tx.Query(ctx, first, batch)
		} else {
			args := make([]any, 0, nk+1)
			for _, v := range last {
				args = append(args, v)
			}
			rows, err = tx.Query(ctx, next, append(args, batch)...)
		}
		if err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("reading %s: %w", t.QualifiedName(), err)
		}
		ch := verifyChunk{seq: seq}
		for _, fd := range rows.FieldDescriptions() {
			ch.formats = append(ch.formats, fd.Format)
		}
		for rows.Next() {
			raw := rows.RawValues()
			// One allocation per row holds all of its values.
			size := 0
			for _, v := range raw {
				size += len(v)
			}
			slab := make([]byte, 0, size)
			row := make([][]byte, len(raw))
			for i, v := range raw {
				if v != nil {
					slab = append(slab, v...)
					row[i] = slab[len(slab)-len(v) : len(slab) : len(slab)]
				}
			}
			ch.rows = append(ch.rows, row)
		}
		rows.Close()
		err = rows.Err()
		tx.Rollback(ctx)
		if err != nil {
			return fmt.Errorf("reading %s: %w", t.QualifiedName(), err)
		}
		n := len(ch.rows)
		if n > 0 {
			last = make([]string, nk)
			for i := range nk {
				last[i] = string(ch.rows[n-1][i])
			}
			select {
			case out <- ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if n < batch {
			return nil
		}
	}
}

// rowChecker checks rows of one table; each checker goroutine has its own.
type rowChecker struct {
	t       *Target
	typeMap *pgtype.Map
	openers []*envelope.Opener
	index   []*blindindex.Column
	stored  []int64
	want    []int64
	ukeys   [][]byte // digest keys of t.Uniques
	texts   [][]byte // per column, the value of the row being checked
}

func newRowChecker(ring *keys.Keyring, ix Indexers, t *Target) *rowChecker {
	c := &rowChecker{t: t, typeMap: pgtype.NewMap(), openers: make([]*envelope.Opener, len(t.Columns)), index: make([]*blindindex.Column, len(t.Columns))}
	c.texts = make([][]byte, len(t.Columns))
	// A key that cannot be derived leaves ukeys short: every digest is
	// then reported as not matching.
	c.ukeys, _ = uniqueKeys(ring, t)
	for i, col := range t.Columns {
		c.openers[i] = ring.Opener(t.QualifiedName(), col.Name)
		if col.HasIndex() {
			c.index[i] = ix.For(t.QualifiedName(), col.Name)
		}
	}
	return c
}

// check verifies one row and records the outcome in res.
func (c *rowChecker) check(res *VerifyResult, raw [][]byte, formats []int16) {
	t := c.t
	nk := len(t.PrimaryKey)
	key := make([]string, nk)
	for i := range nk {
		key[i] = string(raw[i])
	}
	res.Rows++
	flag := raw[len(raw)-1]
	if len(flag) == 1 && (flag[0] == 1 || flag[0] == 't') {
		// The application changed this row since it was encrypted; the
		// next apply re-encrypts it. Its stale ciphertext was cleared.
		res.Pending++
		return
	}
	for i, col := range t.Columns {
		pt, ct, terms := raw[nk+3*i], raw[nk+3*i+1], raw[nk+3*i+2]
		res.Values++
		c.texts[i] = nil
		problem := ""
		// text is the value the terms must match: the plaintext, or, for a
		// value the application wrote encrypted (no plaintext), the
		// decrypted ciphertext.
		text, hasValue := string(pt), pt != nil
		switch {
		case pt == nil && ct == nil:
		case ct == nil:
			problem = ProblemMissing
		default:
			v, err := c.openers[i].Open(ct, envelope.Binding{Table: t.QualifiedName(), Column: col.Name, PrimaryKey: key})
			switch {
			case err != nil:
				problem = ProblemUndecrypt
			case v.Type != col.ValueType:
				problem = ProblemWrongType
			case pt != nil && v.Text != string(pt):
				problem = ProblemDifferent
			}
			text, hasValue = v.Text, err == nil
		}
		if problem == "" && c.index[i] != nil && hasValue {
			c.want = c.index[i].Terms(c.want[:0], text)
			c.stored = c.stored[:0]
			if terms == nil {
				problem = ProblemNoTerms
			} else if err := c.typeMap.Scan(pgtype.Int8ArrayOID, formats[nk+3*i+2], terms, &c.stored); err != nil || !slices.Equal(c.stored, c.want) {
				problem = ProblemWrongTerms
			}
		}
		if problem != "" {
			res.add(Mismatch{Table: t.QualifiedName(), Column: col.Name, KeyColumns: t.keyNames(), Key: key, Problem: problem})
			continue
		}
		if hasValue {
			c.texts[i] = []byte(text)
		}
	}
	// Each digest against the row's values (decrypted where there is no
	// plaintext): a wrong one would let a duplicate in, or refuse a
	// legitimate value. Skipped where a member already failed above.
	base := nk + 3*len(t.Columns)
outer:
	for j := range t.Uniques {
		u := &t.Uniques[j]
		for _, m := range u.members {
			pt, ct := raw[nk+3*m], raw[nk+3*m+1]
			if c.texts[m] == nil && (pt != nil || ct != nil) {
				continue outer
			}
		}
		stored := raw[base+j]
		var want []byte
		if j < len(c.ukeys) {
			want = u.digest(c.ukeys[j], c.texts)
		}
		if j >= len(c.ukeys) || !bytes.Equal(stored, want) {
			res.add(Mismatch{Table: t.QualifiedName(), Column: u.Column, KeyColumns: t.keyNames(), Key: key, Problem: ProblemUniq})
		}
	}
}

// merge adds the counts of part, and its examples while there is room.
func (v *VerifyResult) merge(part *VerifyResult) {
	v.Rows += part.Rows
	v.Values += part.Values
	v.Mismatches += part.Mismatches
	v.Pending += part.Pending
	for _, m := range part.Examples {
		if len(v.Examples) < MaxExamples {
			v.Examples = append(v.Examples, m)
		}
	}
}

func (v *VerifyResult) add(m Mismatch) {
	v.Mismatches++
	if len(v.Examples) < MaxExamples {
		v.Examples = append(v.Examples, m)
	}
}

// verifyStep ends apply with a full verification.
type verifyStep struct{}

func (verifyStep) Describe() string {
	return "verify: decrypt every ciphertext and compare it with its plaintext"
}

// VerifyError is returned by apply when verification finds problems.
type VerifyError struct{ Result *VerifyResult }

func (e *VerifyError) Error() string {
	if n := len(e.Result.Triggers); n > 0 {
		return fmt.Sprintf("verification failed: %d mismatched values, %d rows pending, %d problems with pgphi's triggers", e.Result.Mismatches, e.Result.Pending, n)
	}
	return fmt.Sprintf("verification failed: %d mismatched values, %d rows pending", e.Result.Mismatches, e.Result.Pending)
}

func (verifyStep) Run(ctx context.Context, r *Runner) error {
	res, err := VerifyObserved(ctx, r.Pool, r.Keys, r.Plan, 0, r.Metrics)
	if err != nil {
		return err
	}
	r.verified = res
	r.logf("    verified %d values in %d rows: %d mismatches, %d rows pending", res.Values, res.Rows, res.Mismatches, res.Pending)
	for _, p := range res.Triggers {
		r.logf("    TRIGGER %s", p)
	}
	if res.Mismatches > 0 || len(res.Triggers) > 0 {
		for _, m := range res.Examples {
			r.logf("    MISMATCH %s", m)
		}
		return &VerifyError{Result: res}
	}
	return nil
}

// RolledBack reports whether plan was rolled back: no column pgphi adds
// exists on any of its tables, and the audit trail's last successful apply,
// cleanup or rollback of the plan is a rollback (before any apply there is
// none). Then the plaintext is the only copy and there is nothing to
// verify; before apply there is nothing either, but that is not a pass.
func RolledBack(ctx context.Context, pool *pgxpool.Pool, p *Plan) (at time.Time, ok bool, err error) {
	for _, t := range p.Tables {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = ANY($2) AND NOT attisdropped",
			t.Ident(), t.addedColumns()).Scan(&n); err != nil {
			return at, false, err
		}
		if n != 0 {
			return at, false, nil
		}
	}
	var command string
	err = pool.QueryRow(ctx, `SELECT record->>'command', recorded_at FROM pgphi.audit_log
		WHERE record->>'plan_id' = $1 AND record->>'event' = 'success' AND record->>'command' IN ('apply', 'cleanup', 'rollback')
		ORDER BY seq DESC LIMIT 1`, p.ID).Scan(&command, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return at, false, nil
	}
	if err != nil {
		return at, false, fmt.Errorf("reading the audit trail: %w", err)
	}
	return at, command == "rollback", nil
}
