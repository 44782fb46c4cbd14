package engine

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/keys"
)

// ColumnLeakage is the measured leakage of one searchable column's terms
// (blindindex.ColumnLeakage) with where it comes from.
type ColumnLeakage struct {
	Table  string `json:"table"`
	Column string `json:"column"`
	// Stored is true when the sizing is the recorded one (the terms in the
	// table); false when it is the sizing the next apply would record.
	Stored bool `json:"stored"`
	// Sizing is how the bits were chosen (SizedByRows, SizedByDistinct,
	// SizedByConfig; "mixed" when the families differ).
	Sizing string `json:"sizing"`
	blindindex.ColumnLeakage
	// Accepted is the pinned reason this column may stay below
	// blindindex.TargetShare ("" when none).
	Accepted string `json:"accepted_leakage,omitempty"`
}

// Below reports whether the column breaks the leakage rule: some sub-kind's
// terms or its whole term arrays are shared by fewer than
// blindindex.TargetShare distinct values on average.
func (l ColumnLeakage) Below() bool { return l.Min() < blindindex.TargetShare }

// MeasureLeakage computes the terms of the current value of every row of
// every searchable column, with the recorded keys and bits (or, for a column
// not indexed yet, the sizing its first apply would record, under the active
// data key), and measures what they leak. Values are the plaintext before
// cleanup (rows the application changed since their terms were written
// included) and the decrypted ciphertext after. It needs the keys, reads
// every row once with the table owner's rights, and keeps one entry per
// distinct value in memory. No value leaves this function.
func MeasureLeakage(ctx context.Context, pool *pgxpool.Pool, ring *keys.Keyring, p *Plan, production bool) ([]ColumnLeakage, error) {
	if err := SizeColumns(ctx, pool, ring, p, production); err != nil {
		return nil, err
	}
	specs, err := IndexSpecs(ctx, pool, p)
	if err != nil {
		return nil, err
	}
	ix, err := buildIndexers(specs, ring, p)
	if err != nil {
		return nil, err
	}
	var out []ColumnLeakage
	for _, t := range p.Tables {
		for i := range t.Columns {
			c := &t.Columns[i]
			if !c.HasIndex() {
				continue
			}
			l := ColumnLeakage{Table: t.QualifiedName(), Column: c.Name, Stored: true}
			for _, s := range specs {
				if s.Table != l.Table || s.Column != l.Column {
					continue
				}
				l.Stored = l.Stored && s.Stored
				switch {
				case l.Sizing == "":
					l.Sizing = s.Sizing
				case l.Sizing != s.Sizing:
					l.Sizing = "mixed"
				}
			}
			m := blindindex.NewMeasurer(ix.For(l.Table, l.Column))
			if err := readValues(ctx, pool, ring, t, c, production, m.Add); err != nil {
				return nil, err
			}
			l.ColumnLeakage = m.Result()
			out = append(out, l)
		}
	}
	return out, nil
}

// readValues calls fn with the canonical text of every non-null value of
// column c: the plaintext while it exists, else the decrypted ciphertext.
func readValues(ctx context.Context, pool *pgxpool.Pool, ring *keys.Keyring, t *Target, c *TargetColumn, production bool, fn func(string)) error {
	opener := ring.Opener(t.QualifiedName(), c.Name)
	nk := len(t.PrimaryKey)
	return pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := asTableOwner(ctx, tx, t, production); err != nil {
			return err
		}
		sel := strings.Join(t.KeyTexts(), ", ")
		var sql string
		if c.Cleaned {
			sql = fmt.Sprintf("SELECT %s, %s, NULL::text FROM %s WHERE %s IS NOT NULL", sel, ident(c.Encrypted), t.Ident(), ident(c.Encrypted))
		} else {
			sql = fmt.Sprintf("SELECT %s, NULL::bytea, %s::text FROM %s WHERE %s IS NOT NULL", sel, ident(c.Name), t.Ident(), ident(c.Name))
		}
		rows, err := tx.Query(ctx, sql)
		if err != nil {
			return fmt.Errorf("reading %s.%s: %w", t.QualifiedName(), c.Name, err)
		}
		defer rows.Close()
		for rows.Next() {
			raw := rows.RawValues()
			if raw[nk+1] != nil {
				fn(string(raw[nk+1]))
				continue
			}
			key := make([]string, nk)
			for i := range nk {
				key[i] = string(raw[i])
			}
			v, err := opener.Open(raw[nk], envelope.Binding{Table: t.QualifiedName(), Column: c.Name, PrimaryKey: key})
			if err != nil {
				return fmt.Errorf("%s.%s: ciphertext does not decrypt: %w (at key (%s))", t.QualifiedName(), c.Name, err, strings.Join(key, ", "))
			}
			fn(v.Text)
		}
		return rows.Err()
	})
}

// FormatShare renders a number of distinct values per term for people:
// two decimals, "-" for a column without values.
func FormatShare(x float64) string {
	if math.IsInf(x, 0) {
		return "-"
	}
	return fmt.Sprintf("%.2f", x)
}
