// Package catalog reads what pgphi needs to know about protected tables from
// PostgreSQL's system catalog: column types, the key that identifies a row, and
// row estimates. It checks the config against the live schema and reports every
// mismatch at the config line that caused it.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/internal/config"
)

// Querier is the part of pgx that catalog needs (a *pgx.Conn, a pool or a transaction).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Column is a column as the catalog describes it.
type Column struct {
	Name      string
	Type      string // format_type(atttypid, atttypmod), e.g. "character varying(255)"
	BaseType  string // type name without modifiers, resolved through domains, e.g. "varchar"
	NotNull   bool
	Default   string // pg_get_expr of the default, "" when none
	Generated bool
	Cleaned   *Cleaned // set when cleanup dropped the plaintext column
	TypeOID   uint32   // pg_type oid; 0 for a cleaned column (its type is in pgphi's state)
}

// baseType strips type modifiers: "character varying(36)" -> "character varying".
func baseType(t string) string {
	if i := strings.IndexByte(t, '('); i >= 0 {
		return strings.TrimSpace(t[:i]) + t[strings.IndexByte(t, ')')+1:]
	}
	return t
}

// Table is a protected table resolved against the catalog.
type Table struct {
	Schema, Name  string
	PrimaryKey    []Column // the key ciphertexts are bound to, in key order
	KeyIsPrimary  bool     // false when a unique not-null index stands in for a primary key
	Protected     []Column // configured columns, in config order
	Config        *config.Table
	EstimatedRows int64
	all           map[string]Column
}

// QualifiedName is schema.table.
func (t *Table) QualifiedName() string { return t.Schema + "." + t.Name }

// Ident is the table as a quoted SQL identifier.
func (t *Table) Ident() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// Column returns any column of the table by name.
func (t *Table) Column(name string) (Column, bool) { c, ok := t.all[name]; return c, ok }

// Cleaned describes a protected column whose plaintext pgphi has dropped:
// the catalog no longer shows its type, pgphi's state does.
type Cleaned struct {
	OriginalType string // format_type of the plaintext column before cleanup
	Encrypted    string // the ciphertext column now
	Index        string // the blind index column, "" when none
	Restoring    bool   // a rollback is putting the plaintext back
}

// Resolve checks every configured table and column against the catalog.
// cleaned (keyed "schema.table.column") supplies the columns cleanup dropped.
func Resolve(ctx context.Context, q Querier, cfg *config.Config, cleaned ...map[string]Cleaned) ([]*Table, error) {
	var out []*Table
	gone := map[string]Cleaned{}
	for _, m := range cleaned {
		for k, v := range m {
			gone[k] = v
		}
	}
	for i := range cfg.Tables {
		t, err := resolveTable(ctx, q, cfg, &cfg.Tables[i], gone)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func resolveTable(ctx context.Context, q Querier, cfg *config.Config, ct *config.Table, gone map[string]Cleaned) (*Table, error) {
	var oid uint32
	var kind string
	var estimate float64
	err := q.QueryRow(ctx, `
		SELECT c.oid, c.relkind::text, c.reltuples::float8
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, ct.Schema, ct.Name).Scan(&oid, &kind, &estimate)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, cfg.Errorf(ct.Line, "check the spelling"+similarTables(ctx, q, ct)+", or create the table first",
			"table %s does not exist in the database", ct.QualifiedName())
	}
	if err != nil {
		return nil, fmt.Errorf("reading catalog for table %s: %w", ct.QualifiedName(), err)
	}
	if kind != "r" && kind != "p" {
		return nil, cfg.Errorf(ct.Line, "protect the underlying table instead", "%s is not an ordinary table (relkind %s)", ct.QualifiedName(), kind)
	}
	if err := checkNames(cfg, ct); err != nil {
		return nil, err
	}
	t := &Table{Schema: ct.Schema, Name: ct.Name, Config: ct, all: map[string]Column{}}
	var canRead bool
	if err := q.QueryRow(ctx, "SELECT has_table_privilege($1::oid, 'SELECT')", oid).Scan(&canRead); err != nil {
		return nil, fmt.Errorf("checking privileges on %s: %w", ct.QualifiedName(), err)
	}
	if estimate >= 0 || !canRead {
		// Roles that may not read the table (an audit officer) plan from the
		// estimate alone.
		t.EstimatedRows = max(int64(estimate), 0)
	} else if err := q.QueryRow(ctx, "SELECT count(*) FROM "+t.Ident()).Scan(&t.EstimatedRows); err != nil {
		// Never analyzed: count instead of showing a meaningless estimate.
		return nil, fmt.Errorf("counting rows of %s: %w", ct.QualifiedName(), err)
	}

	rows, err := q.Query(ctx, `
		SELECT a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod),
		       format_type(COALESCE(NULLIF(bt.typbasetype, 0), a.atttypid), NULL),
		       a.attnotnull, COALESCE(pg_get_expr(d.adbin, d.adrelid), ''), a.attgenerated <> ''
		FROM pg_attribute a
		JOIN pg_type bt ON bt.oid = a.atttypid
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, oid)
	if err != nil {
		return nil, fmt.Errorf("reading columns of %s: %w", ct.QualifiedName(), err)
	}
	var names []string
	for rows.Next() {
		var c Column
		if err := rows.Scan(&c.Name, &c.TypeOID, &c.Type, &c.BaseType, &c.NotNull, &c.Default, &c.Generated); err != nil {
			return nil, err
		}
		t.all[c.Name] = c
		names = append(names, c.Name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading columns of %s: %w", ct.QualifiedName(), err)
	}

	if err := resolveKey(ctx, q, cfg, ct, t, oid); err != nil {
		return nil, err
	}

	for _, cc := range ct.Columns {
		if g, ok := gone[ct.QualifiedName()+"."+cc.Name]; ok {
			base, err := DomainBase(ctx, q, g.OriginalType)
			if err != nil {
				return nil, err
			}
			t.Protected = append(t.Protected, Column{Name: cc.Name, Type: g.OriginalType, BaseType: baseType(base), Cleaned: &g})
			continue
		}
		c, ok := t.all[cc.Name]
		if !ok {
			return nil, cfg.Errorf(cc.Line, "columns of "+ct.QualifiedName()+": "+strings.Join(names, ", "),
				"column %q does not exist in table %s", cc.Name, ct.QualifiedName())
		}
		if c.Generated {
			return nil, cfg.Errorf(cc.Line, "protect the columns it is generated from", "column %s.%s is a generated column", ct.QualifiedName(), cc.Name)
		}
		if strings.HasSuffix(c.Type, "[]") {
			return nil, cfg.Errorf(cc.Line, "store the values in a child table, or as json", "column %s.%s is an array (%s); arrays cannot be searched or verified element by element", ct.QualifiedName(), cc.Name, c.Type)
		}
		encName := cc.Name + cfg.Encryption.ColumnSuffix
		if len(encName) > 63 {
			return nil, cfg.Errorf(cc.Line, "use a shorter encryption.column_suffix", "ciphertext column name %q is longer than PostgreSQL's 63-byte limit", encName)
		}
		if existing, clash := t.all[encName]; clash && existing.BaseType != "bytea" {
			return nil, cfg.Errorf(cc.Line, "rename that column or set another encryption.column_suffix",
				"table %s already has a column %q of type %s, where pgphi would put the ciphertext", ct.QualifiedName(), encName, existing.Type)
		}
		if err := checkTypeCode(ctx, q, cfg, cc.Line, t, c, "protected column"); err != nil {
			return nil, err
		}
		t.Protected = append(t.Protected, c)
	}
	return t, nil
}

// resolveKey picks the row identity: the configured key, else the primary key,
// else a unique index whose columns are all NOT NULL.
func resolveKey(ctx context.Context, q Querier, cfg *config.Config, ct *config.Table, t *Table, oid uint32) error {
	type candidate struct {
		cols    []string
		primary bool
	}
	rows, err := q.Query(ctx, `
		SELECT ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
		             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		             ORDER BY k.ord)::text[],
		       i.indisprimary,
		       bool_and(a2.attnotnull)
		FROM pg_index i
		JOIN pg_attribute a2 ON a2.attrelid = i.indrelid AND a2.attnum = ANY(i.indkey)
		WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
		  AND i.indexprs IS NULL AND NOT (0 = ANY(i.indkey))
		GROUP BY i.indexrelid, i.indkey, i.indisprimary
		ORDER BY i.indisprimary DESC, array_length(i.indkey, 1), i.indexrelid`, oid)
	if err != nil {
		return fmt.Errorf("reading keys of %s: %w", ct.QualifiedName(), err)
	}
	var cands []candidate
	for rows.Next() {
		var c candidate
		var notNull bool
		if err := rows.Scan(&c.cols, &c.primary, &notNull); err != nil {
			return err
		}
		if notNull {
			cands = append(cands, c)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading keys of %s: %w", ct.QualifiedName(), err)
	}

	var chosen *candidate
	if len(ct.PrimaryKey) > 0 {
		for i := range cands {
			if slices.Equal(cands[i].cols, ct.PrimaryKey) {
				chosen = &cands[i]
				break
			}
		}
		if chosen == nil {
			var have []string
			for _, c := range cands {
				have = append(have, "["+strings.Join(c.cols, ", ")+"]")
			}
			fix := "make it the primary key (ALTER TABLE " + t.Ident() + " ADD PRIMARY KEY (...)) or a unique index on NOT NULL columns"
			if len(have) > 0 {
				fix = "use one of the table's unique not-null keys: " + strings.Join(have, " ")
			}
			return cfg.Errorf(ct.Line, fix, "primary_key [%s] of table %s is not a primary key or unique not-null key in the database",
				strings.Join(ct.PrimaryKey, ", "), ct.QualifiedName())
		}
	} else if len(cands) > 0 {
		chosen = &cands[0]
	}
	if chosen == nil {
		return cfg.Errorf(ct.Line, "add one: ALTER TABLE "+t.Ident()+" ADD PRIMARY KEY (...); pgphi binds each ciphertext to its row's key",
			"table %s has no primary key or unique not-null key", ct.QualifiedName())
	}
	t.KeyIsPrimary = chosen.primary
	for _, name := range chosen.cols {
		if err := checkTypeCode(ctx, q, cfg, ct.Line, t, t.all[name], "key column"); err != nil {
			return err
		}
		t.PrimaryKey = append(t.PrimaryKey, t.all[name])
	}
	for _, cc := range ct.Columns {
		if slices.Contains(chosen.cols, cc.Name) {
			return cfg.Errorf(cc.Line, "a key column stays in plaintext: ciphertexts are bound to it", "column %s of table %s is part of its key and cannot be encrypted", cc.Name, ct.QualifiedName())
		}
	}
	return nil
}

func similarTables(ctx context.Context, q Querier, ct *config.Table) string {
	rows, err := q.Query(ctx, `
		SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema','pgphi')
		ORDER BY 1 LIMIT 50`)
	if err != nil {
		return ""
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(names) == 0 {
		return "; the database has no tables outside the system schemas"
	}
	if len(names) > 12 {
		names = append(names[:12], "...")
	}
	return "; tables here: " + strings.Join(names, ", ")
}

// DomainBase returns the type a domain named typ (as format_type spells
// it) is built on, through nested domains, with its modifiers; typ itself
// when it is not a domain or does not resolve. A cleaned column's type is
// known only by that name: its values were encrypted as the base type.
func DomainBase(ctx context.Context, q Querier, typ string) (string, error) {
	var base string
	err := q.QueryRow(ctx, `
		WITH RECURSIVE d(oid, typmod, depth) AS (
		  SELECT t.oid, -1, 0 FROM pg_catalog.pg_type t WHERE t.oid OPERATOR(pg_catalog.=) pg_catalog.to_regtype($1)
		  UNION ALL
		  SELECT t.typbasetype, t.typtypmod, d.depth OPERATOR(pg_catalog.+) 1 FROM d JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) d.oid
		  WHERE t.typtype OPERATOR(pg_catalog.=) 'd' AND d.depth OPERATOR(pg_catalog.<) 16)
		SELECT COALESCE((SELECT pg_catalog.format_type(oid, NULLIF(typmod, -1)) FROM d WHERE depth OPERATOR(pg_catalog.>) 0 ORDER BY depth DESC LIMIT 1), $1)`, typ).Scan(&base)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42601" || strings.HasPrefix(pgErr.Code, "22")) {
		// Not a type name at all (to_regtype still raises on syntax): it
		// does not resolve, and whoever pastes it must refuse it.
		return typ, nil
	}
	if err != nil {
		return "", fmt.Errorf("resolving a recorded type: %w", err)
	}
	return base, nil
}
