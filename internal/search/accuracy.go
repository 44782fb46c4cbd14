package search

import (
	"context"
	"errors"
	"fmt"
	"math"
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
// read in one pass per column; a row the application changes between the
// two answers can make one query differ, so a differing query is asked
// again once before it counts.
func (s *Searcher) CheckAccuracy(ctx context.Context, perColumn int) ([]Accuracy, error) {
	var out []Accuracy
	for _, t := range s.Plan.Tables {
		acc := Accuracy{Table: t.QualifiedName()}
		for i := range t.Columns {
			c := &t.Columns[i]
			if !c.HasIndex() || c.Cleaned {
				continue
			}
			n, exact, err := s.checkColumn(ctx, t, c, perColumn)
			if err != nil {
				return nil, err
			}
			acc.Queries += n
			acc.Exact += exact
			if exact < n {
				acc.Columns = append(acc.Columns, c.Name)
			}
		}
		if acc.Queries > 0 {
			out = append(out, acc)
		}
	}
	return out, nil
}

func (s *Searcher) checkColumn(ctx context.Context, t *engine.Target, c *engine.TargetColumn, k int) (queries, exact int, err error) {
	idx := s.indexers.For(t.QualifiedName(), c.Name)
	if idx == nil {
		return 0, 0, nil
	}
	col := pgx.Identifier{c.Name}.Sanitize()
	sample := ""
	if t.EstimatedRows > 10000 {
		sample = fmt.Sprintf(" TABLESAMPLE BERNOULLI (%g)", math.Max(100*1000/float64(t.EstimatedRows), 0.01))
	}
	rows, err := s.Pool.Query(ctx, fmt.Sprintf("SELECT %s::pg_catalog.text FROM %s%s WHERE %s IS NOT NULL ORDER BY pg_catalog.random() LIMIT %d",
		col, t.Ident(), sample, col, k))
	if err != nil {
		return 0, 0, fmt.Errorf("sampling %s.%s for the accuracy check: %w", t.QualifiedName(), c.Name, err)
	}
	values, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, 0, fmt.Errorf("sampling %s.%s for the accuracy check: %w", t.QualifiedName(), c.Name, err)
	}
	type check struct {
		q    blindindex.Query
		plan *blindindex.Plan
		want []string
	}
	var checks []*check
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
				return 0, 0, fmt.Errorf("accuracy check of %s.%s: %w", t.QualifiedName(), c.Name, err)
			}
			checks = append(checks, &check{q: q, plan: plan})
		}
	}
	if len(checks) == 0 {
		return 0, 0, nil
	}
	plainAnswer := func() error {
		for _, ch := range checks {
			ch.want = nil
		}
		rows, err := s.Pool.Query(ctx, fmt.Sprintf("SELECT %s, %s::pg_catalog.text FROM %s WHERE %s IS NOT NULL",
			strings.Join(t.KeyTexts(), ", "), col, t.Ident(), col))
		if err != nil {
			return err
		}
		defer rows.Close()
		nk := len(t.PrimaryKey)
		for rows.Next() {
			raw := rows.RawValues()
			pt := string(raw[nk])
			var key string
			for _, ch := range checks {
				if ch.plan.Match(pt) {
					if key == "" {
						parts := make([]string, nk)
						for i := range nk {
							parts[i] = string(raw[i])
						}
						key = strings.Join(parts, "\x00")
					}
					ch.want = append(ch.want, key)
				}
			}
		}
		return rows.Err()
	}
	if err := plainAnswer(); err != nil {
		return 0, 0, fmt.Errorf("reading the plaintext answer of %s.%s: %w", t.QualifiedName(), c.Name, err)
	}
	same := func(ch *check) (bool, error) {
		res, err := s.Find(ctx, t.QualifiedName(), c.Name, ch.q)
		if err != nil {
			return false, err
		}
		var got []string
		for _, k := range res.Keys {
			got = append(got, strings.Join(k, "\x00"))
		}
		slices.Sort(got)
		want := slices.Clone(ch.want)
		slices.Sort(want)
		return slices.Equal(got, want), nil
	}
	var differ []*check
	for _, ch := range checks {
		ok, err := same(ch)
		if err != nil {
			return 0, 0, fmt.Errorf("accuracy check of %s.%s: %w", t.QualifiedName(), c.Name, err)
		}
		if ok {
			exact++
		} else {
			differ = append(differ, ch)
		}
	}
	if len(differ) > 0 {
		if err := plainAnswer(); err != nil {
			return 0, 0, fmt.Errorf("reading the plaintext answer of %s.%s: %w", t.QualifiedName(), c.Name, err)
		}
		for _, ch := range differ {
			if ok, err := same(ch); err == nil && ok {
				exact++
			}
		}
	}
	return len(checks), exact, nil
}
