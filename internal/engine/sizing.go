package engine

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/keys"
)

// Sizing methods recorded in pgphi.blind_indexes.sizing.
const (
	SizedByRows     = "rows"     // the planner of earlier versions: rows x terms per row
	SizedByDistinct = "distinct" // distinct values in the data (blindindex.Sizer)
	SizedByConfig   = "config"   // search_options.bits
)

// SizeColumns reads, once each, the values of every searchable column that
// has no recorded sizing yet and keeps its blindindex.Sizing on the plan,
// where IndexSpecs takes it. It needs the plaintext (before cleanup); a
// column without plaintext keeps the rows planner. Reads run with the
// table owner's rights in a read-only transaction; memory is bounded by the
// Sizer. Measured sizing is not part of the plan id (every insert would
// change it).
//
// ring, when given, supplies the keys the terms will be written with (the
// active data key), so the simulated arrays are the real ones; nil sizes
// with throwaway keys (a plan).
func SizeColumns(ctx context.Context, pool *pgxpool.Pool, ring *keys.Keyring, p *Plan, production bool) error {
	stored := map[string]bool{}
	rows, err := pool.Query(ctx, `SELECT DISTINCT table_name, column_name FROM pgphi.blind_indexes`)
	if err == nil {
		for rows.Next() {
			var t, c string
			if err := rows.Scan(&t, &c); err != nil {
				rows.Close()
				return err
			}
			stored[indexerKey(t, c)] = true
		}
		rows.Close()
	}
	if p.sizing == nil {
		p.sizing = map[string]blindindex.Sizing{}
	}
	for _, t := range p.Tables {
		for i := range t.Columns {
			c := &t.Columns[i]
			k := indexerKey(t.QualifiedName(), c.Name)
			if !c.HasIndex() || c.Cleaned || stored[k] || len(c.BitsOverride) == len(c.SubKinds()) {
				continue
			}
			if _, done := p.sizing[k]; done {
				continue
			}
			var ks map[blindindex.SubKind][]byte
			if ring != nil {
				ks = map[blindindex.SubKind][]byte{}
				for _, sub := range c.SubKinds() {
					k, err := ring.PurposeKeyFor(ring.ActiveKeyID(), keys.PurposeBlindIndex, t.QualifiedName(), c.Name, string(sub))
					if err != nil {
						return err
					}
					ks[sub] = k
				}
			}
			z, err := sizeColumn(ctx, pool, t, c, ks, production)
			if err != nil {
				return err
			}
			p.sizing[k] = z
		}
	}
	return nil
}

func sizeColumn(ctx context.Context, pool *pgxpool.Pool, t *Target, c *TargetColumn, ks map[blindindex.SubKind][]byte, production bool) (blindindex.Sizing, error) {
	sz, err := blindindex.NewSizer(c.Search, c.SearchOptions, ks)
	if err != nil {
		return blindindex.Sizing{}, fmt.Errorf("sizing the blind index of %s.%s: %w", t.QualifiedName(), c.Name, err)
	}
	err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := asTableOwner(ctx, tx, t, production); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s::text FROM %s WHERE %s IS NOT NULL", ident(c.Name), t.Ident(), ident(c.Name)))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			sz.Add(string(rows.RawValues()[0]))
		}
		return rows.Err()
	})
	if err != nil {
		return blindindex.Sizing{}, fmt.Errorf("sizing the blind index of %s.%s from its values: %w", t.QualifiedName(), c.Name, err)
	}
	return sz.Sizing(), nil
}
