package pgphi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/redact"
	"github.com/pgphi/pgphi/internal/search"
)

// find runs a search in the caller's transaction under Within, else in its own.
func (c *Client) find(ctx context.Context, m *metadata, table, column string, q Query) (*search.Result, error) {
	if w, ok := withinOf(ctx); ok {
		return m.searcher.FindIn(ctx, w.tx, table, column, q)
	}
	return m.searcher.Find(ctx, table, column, q)
}

// Found is a row FindRows found: its key and the values it was asked to read.
type Found struct {
	Key    Key
	Values map[string]Plain // by column name
}

// FindRows is Find followed by the compatibility read (as Read) of columns
// (protected columns of the same table) of every row found, with one audit
// record for both (command api.search: table, the searched column and the
// columns read, kind, reason, number of rows; never values or keys). With
// no columns it returns the keys, as Find.
func (c *Client) FindRows(ctx context.Context, table, column string, q Query, columns []string, reason string) ([]Found, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, ErrReason
	}
	m, useEncrypted, _, err := c.state(ctx)
	if err != nil {
		return nil, err
	}
	t, _, err := m.target(table, "")
	if err != nil {
		return nil, err
	}
	cols := make([]string, 0, len(columns))
	for _, name := range columns {
		_, col, err := m.target(t.QualifiedName(), name)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(cols, col.Name) {
			cols = append(cols, col.Name)
		}
	}
	res, err := c.find(ctx, m, table, column, q)
	if err != nil {
		return nil, fmt.Errorf("pgphi: %w", redact.Error(err))
	}
	out := make([]Found, len(res.Keys))
	for i, k := range res.Keys {
		out[i] = Found{Key: Key{}, Values: map[string]Plain{}}
		for j, name := range res.KeyColumns {
			out[i].Key[name] = k[j]
		}
	}
	if len(cols) > 0 && len(out) > 0 {
		if err := c.readRows(ctx, m, t.QualifiedName(), cols, useEncrypted, out); err != nil {
			return nil, err
		}
	}
	if err := c.record(ctx, "api.search", res.Table, append([]string{res.Column}, cols...), reason, int64(len(out)),
		map[string]string{"kind": string(q.Kind)}); err != nil {
		return nil, err
	}
	return out, nil
}

// readRows fills rows[i].Values with the compatibility read of cols, one
// statement per row in one round trip (each compares the key columns with
// their canonical text, so the table's key index is used).
func (c *Client) readRows(ctx context.Context, m *metadata, table string, cols []string, useEncrypted bool, rows []Found) error {
	t, _, err := m.target(table, "")
	if err != nil {
		return err
	}
	var sel []string
	tcs := make([]int, len(cols))
	for i, name := range cols {
		_, col, _ := m.target(table, name)
		for j := range t.Columns {
			if t.Columns[j].Name == col.Name {
				tcs[i] = j
			}
		}
		plain := "NULL::text"
		if !col.Cleaned {
			plain = pgx.Identifier{col.Name}.Sanitize() + "::text"
		}
		sel = append(sel, pgx.Identifier{col.Encrypted}.Sanitize(), plain)
	}
	var where []string
	for i, k := range t.PrimaryKey {
		where = append(where, fmt.Sprintf("%s = $%d", pgx.Identifier{k.Name}.Sanitize(), i+1))
	}
	sql := fmt.Sprintf("SELECT %s FROM %s WHERE %s", strings.Join(sel, ", "), t.Ident(), strings.Join(where, " AND "))
	return c.inTx(ctx, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		for i := range rows {
			b, err := binding(t, "", rows[i].Key)
			if err != nil {
				return err
			}
			args := make([]any, len(b.PrimaryKey))
			for j, v := range b.PrimaryKey {
				args[j] = v
			}
			r := &rows[i]
			batch.Queue(sql, args...).QueryRow(func(row pgx.Row) error {
				vals := make([]any, 2*len(cols))
				cts := make([][]byte, len(cols))
				pts := make([]*string, len(cols))
				for j := range cols {
					vals[2*j], vals[2*j+1] = &cts[j], &pts[j]
				}
				if err := row.Scan(vals...); err != nil {
					if errors.Is(err, pgx.ErrNoRows) {
						return nil // deleted since the search: nothing to read
					}
					return err
				}
				for j, name := range cols {
					col := &t.Columns[tcs[j]]
					ct, pt := cts[j], pts[j]
					plain := !useEncrypted && !col.Cleaned
					switch {
					case pt != nil && (plain || ct == nil):
						r.Values[name] = Plain{Text: *pt}
					case ct == nil:
						r.Values[name] = Plain{Null: true}
					default:
						kb, _ := binding(t, col.Name, r.Key)
						v, err := c.ring.Opener(t.QualifiedName(), col.Name).Open(ct, kb)
						if err == nil && v.Type != col.ValueType {
							err = fmt.Errorf("%w: value type %s, the column's is %s", envelope.ErrFormat, v.Type, col.ValueType)
						}
						if err != nil {
							return fmt.Errorf("pgphi: %s.%s: %w", t.QualifiedName(), col.Name, err)
						}
						r.Values[name] = Plain{Text: v.Text}
					}
				}
				return nil
			})
		}
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return fmt.Errorf("pgphi: reading %s: %w", t.QualifiedName(), redact.Error(err))
		}
		return nil
	})
}
