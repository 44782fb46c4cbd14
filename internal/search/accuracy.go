package search

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/internal/engine"
)

// Accuracy is the oracle check of one table's encrypted search: a few
// random values of each searchable column, searched through the blind
// index (Find) and answered from the plaintext with the search kind's own
// match predicate over every row; a query is exact when both answers hold
// the same rows. No value leaves this function: results are counts.
type Accuracy struct {
	Table   string `json:"table"`
	Queries int    `json:"queries"`
	Exact   int    `json:"exact"`
	// Columns lists the columns whose queries missed or added rows, by name.
	Columns []string `json:"columns_missed,omitempty"`
}

// Ratio is the share of exact queries (1 without queries).
func (a Accuracy) Ratio() float64 {
	if a.Queries == 0 {
		return 1
	}
	return float64(a.Exact) / float64(a.Queries)
}

// queryFor is the query each search kind is checked with: the sampled
// value itself (a prefix query of a whole value is a prefix query too).
var queryFor = map[blindindex.Kind]blindindex.QueryKind{
	blindindex.Exact: blindindex.QExact, blindindex.Prefix: blindindex.QPrefix, blindindex.Contains: blindindex.QContains,
	blindindex.Phonetic: blindindex.QPhonetic, blindindex.Phone: blindindex.QPhone, blindindex.Date: blindindex.QDate,
}

// CheckAccuracy samples perColumn random values of every searchable column
// that still has its plaintext (after cleanup there is no plaintext answer
// to compare with) and compares encrypted search with the plaintext answer.
// A query the kind refuses for the value (a date query on a timestamp, a
// phone query on a value that is no number) is skipped. The plaintext is
// read in one pass per table for all its queries, and every encrypted
// search reads in the snapshot the plaintext was read in, so writes of the
// application meanwhile change neither answer.
func (s *Searcher) CheckAccuracy(ctx context.Context, perColumn int) ([]Accuracy, error) {
	var out []Accuracy
	for _, t := range s.Plan.Tables {
		acc, err := s.checkTable(ctx, t, perColumn)
		if err != nil {
			return nil, err
		}
		if acc.Queries > 0 {
			out = append(out, acc)
		}
	}
	return out, nil
}

// accuracyCheck is one sampled query of one column: its plan and the keys
// of the rows the plaintext answers with.
type accuracyCheck struct {
	col  int // index into the table's columns
	q    blindindex.Query
	plan *blindindex.Plan
	want []string
	// sealedOnly are the rows whose value exists only as ciphertext
	// (written by an application under require_encryption): the plaintext
	// cannot answer for them, so the encrypted answer leaves them out too.
	sealedOnly map[string]bool
}

func (s *Searcher) checkTable(ctx context.Context, t *engine.Target, k int) (Accuracy, error) {
	acc := Accuracy{Table: t.QualifiedName()}
	// Both answers come from one snapshot: the application may go on
	// writing (apply runs beside it) without making them differ.
	tx, err := s.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return acc, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var snap string
	if err := tx.QueryRow(ctx, "SELECT pg_catalog.pg_export_snapshot()").Scan(&snap); err != nil {
		return acc, fmt.Errorf("accuracy check of %s: exporting a snapshot: %w", t.QualifiedName(), err)
	}
	if !snapshotRE.MatchString(snap) {
		return acc, fmt.Errorf("accuracy check of %s: unexpected snapshot id", t.QualifiedName())
	}
	// On a large table, values and answers come from one repeatable
	// sample of its rows.
	// The catalog's estimate may be stale or missing (never analyzed).
	var total int64
	if err := tx.QueryRow(ctx, "SELECT pg_catalog.count(*) FROM "+t.Ident()).Scan(&total); err != nil {
		return acc, fmt.Errorf("accuracy check of %s: %w", t.QualifiedName(), err)
	}
	from := t.Ident()
	sampled := total > oracleRows
	if sampled {
		seed, err := randomSeed()
		if err != nil {
			return acc, err
		}
		from += fmt.Sprintf(" TABLESAMPLE BERNOULLI (%g) REPEATABLE (%d)", math.Max(100*oracleRows/float64(total), 0.0001), seed)
	}
	var checks []*accuracyCheck
	var cols []int
	for i := range t.Columns {
		c := &t.Columns[i]
		if !c.HasIndex() || c.Cleaned {
			continue
		}
		idx := s.indexers.For(t.QualifiedName(), c.Name)
		if idx == nil {
			continue
		}
		values, err := sampleValues(ctx, tx, t, from, c, k)
		if err != nil {
			return acc, err
		}
		n := len(checks)
		for _, v := range values {
			for _, kind := range c.Search {
				qk, ok := queryFor[kind]
				if !ok {
					continue
				}
				q := blindindex.Query{Kind: qk, Value: v}
				plan, err := idx.Query(q)
				if errors.Is(err, blindindex.ErrInvalidQuery) {
					continue
				}
				if err != nil {
					return acc, fmt.Errorf("accuracy check of %s.%s: %w", t.QualifiedName(), c.Name, err)
				}
				checks = append(checks, &accuracyCheck{col: i, q: q, plan: plan})
			}
		}
		if len(checks) > n {
			cols = append(cols, i)
		}
	}
	if len(checks) == 0 {
		return acc, nil
	}
	within, err := plaintextAnswers(ctx, tx, t, from, sampled, cols, checks)
	if err != nil {
		return acc, err
	}
	in := *s
	in.snapshot = snap
	missed := map[int]bool{}
	for _, ch := range checks {
		ok, err := in.sameAnswer(ctx, t, ch, within)
		if err != nil {
			return acc, err
		}
		if ok {
			acc.Exact++
		} else {
			missed[ch.col] = true
		}
	}
	for _, i := range cols {
		if missed[i] {
			acc.Columns = append(acc.Columns, t.Columns[i].Name)
		}
	}
	acc.Queries = len(checks)
	return acc, nil
}

var snapshotRE = regexp.MustCompile(`^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$`)

// sampleValues reads up to k random non-NULL values of a column from
// (the table, or its repeatable sample).
func sampleValues(ctx context.Context, tx pgx.Tx, t *engine.Target, from string, c *engine.TargetColumn, k int) ([]string, error) {
	col := pgx.Identifier{c.Name}.Sanitize()
	rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s::pg_catalog.text FROM %s WHERE %s IS NOT NULL ORDER BY pg_catalog.random() LIMIT %d",
		col, from, col, k))
	if err != nil {
		return nil, fmt.Errorf("sampling %s.%s for the accuracy check: %w", t.QualifiedName(), c.Name, err)
	}
	values, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("sampling %s.%s for the accuracy check: %w", t.QualifiedName(), c.Name, err)
	}
	return values, nil
}

func randomSeed() (uint32, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b[:]) >> 1, nil
}

// oracleRows bounds the rows the plaintext answer is computed over: on a
// larger table, a random sample of about this many rows (TABLESAMPLE), and
// both answers are compared within it. Evaluating a search kind's match
// predicate is the oracle's cost (normalization, phonetic keys, phone
// parsing): it must stay small beside the apply it ends.
const oracleRows = 2000

// plaintextAnswers reads from (the table, or its sample) once and sets each
// check's want: the keys of the rows whose plaintext the query's predicate
// matches. It returns the keys of the rows read when it read a sample (nil:
// every row). Each distinct value of a column is matched once.
func plaintextAnswers(ctx context.Context, tx pgx.Tx, t *engine.Target, from string, sampled bool, cols []int, checks []*accuracyCheck) (map[string]bool, error) {
	for _, ch := range checks {
		ch.want, ch.sealedOnly = nil, map[string]bool{}
	}
	sel := t.KeyTexts()
	pos := map[int]int{} // column index -> position in the select list; the next is "sealed only"
	byCol := map[int][]*accuracyCheck{}
	for _, i := range cols {
		pos[i] = len(sel)
		c := &t.Columns[i]
		sel = append(sel, pgx.Identifier{c.Name}.Sanitize()+"::pg_catalog.text",
			fmt.Sprintf("(%s IS NULL AND %s IS NOT NULL)", pgx.Identifier{c.Name}.Sanitize(), pgx.Identifier{c.Encrypted}.Sanitize()))
	}
	for _, ch := range checks {
		byCol[ch.col] = append(byCol[ch.col], ch)
	}
	var within map[string]bool
	if sampled {
		within = map[string]bool{}
	}
	rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s FROM %s", strings.Join(sel, ", "), from))
	if err != nil {
		return nil, fmt.Errorf("reading the plaintext answers of %s: %w", t.QualifiedName(), err)
	}
	defer rows.Close()
	nk := len(t.PrimaryKey)
	memo := map[int]map[string][]bool{} // column -> value -> match of each of its checks
	for _, i := range cols {
		memo[i] = map[string][]bool{}
	}
	for rows.Next() {
		raw := rows.RawValues()
		parts := make([]string, nk)
		for i := range nk {
			parts[i] = string(raw[i])
		}
		key := strings.Join(parts, "\x00")
		if within != nil {
			within[key] = true
		}
		for _, i := range cols {
			pt, sealed := raw[pos[i]], raw[pos[i]+1]
			if len(sealed) == 1 && (sealed[0] == 1 || sealed[0] == 't') {
				for _, ch := range byCol[i] {
					ch.sealedOnly[key] = true
				}
				continue
			}
			if pt == nil {
				continue
			}
			match, ok := memo[i][string(pt)]
			if !ok {
				v := string(pt)
				match = make([]bool, len(byCol[i]))
				for j, ch := range byCol[i] {
					match[j] = ch.plan.Match(v)
				}
				memo[i][v] = match
			}
			for j, m := range match {
				if m {
					byCol[i][j].want = append(byCol[i][j].want, key)
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the plaintext answers of %s: %w", t.QualifiedName(), err)
	}
	return within, nil
}

// sameAnswer runs the check's search through the blind index and compares
// the rows with the plaintext answer, within the rows it was computed over
// (within; nil: all).
func (s *Searcher) sameAnswer(ctx context.Context, t *engine.Target, ch *accuracyCheck, within map[string]bool) (bool, error) {
	res, err := s.Find(ctx, t.QualifiedName(), t.Columns[ch.col].Name, ch.q)
	if err != nil {
		return false, fmt.Errorf("accuracy check of %s.%s: %w", t.QualifiedName(), t.Columns[ch.col].Name, err)
	}
	var got []string
	for _, k := range res.Keys {
		key := strings.Join(k, "\x00")
		if (within == nil || within[key]) && !ch.sealedOnly[key] {
			got = append(got, key)
		}
	}
	slices.Sort(got)
	want := slices.Clone(ch.want)
	slices.Sort(want)
	return slices.Equal(got, want), nil
}
