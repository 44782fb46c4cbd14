package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/keys"
)

// ColumnRule is a validation rule pgphi carries from the plaintext column:
// a CHECK constraint on the column alone, or the constraints of its domain.
// Once applications write ciphertext with NULL plaintext, the CHECK passes
// on the NULL whatever the value: pgphi applies the rule to the value
// itself when it is sealed (application API) and when it is verified.
//
// The rule is evaluated by PostgreSQL, not re-implemented: the expression
// runs on the candidate value cast to the column's type, in a read-only
// transaction, with the rights of whoever would have run the CHECK on an
// INSERT (the application's role in the API; the table owner in verify),
// so it gains nothing it did not have.
type ColumnRule struct {
	Column     string
	Kind       string // "check" or "domain"
	Name       string // constraint or domain name
	Expression string // CHECK expression (for a domain: its type)
}

// recordRules stores the rules of t's protected columns (expand's
// transaction). A CHECK that names other columns too cannot be evaluated
// on one value: the plan warns about it instead.
func (t *Target) recordRules(ctx context.Context, tx pgx.Tx) error {
	var cols []string
	for _, c := range t.Columns {
		cols = append(cols, c.Name)
	}
	rows, err := tx.Query(ctx, `
		SELECT a.attname::pg_catalog.text, 'check', c.conname::pg_catalog.text,
		       pg_catalog.regexp_replace(pg_catalog.regexp_replace(pg_catalog.pg_get_constraintdef(c.oid), '^CHECK ', ''), ' NOT VALID$', '')
		FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.conrelid AND a.attnum OPERATOR(pg_catalog.=) c.conkey[1]
		WHERE c.conrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND c.contype OPERATOR(pg_catalog.=) 'c'
		  AND pg_catalog.cardinality(c.conkey) OPERATOR(pg_catalog.=) 1 AND a.attname OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[])
		  AND c.conname::pg_catalog.text NOT LIKE 'pgphi\_%'
		UNION ALL
		SELECT a.attname::pg_catalog.text, 'domain', a.atttypid::pg_catalog.regtype::pg_catalog.text, a.atttypid::pg_catalog.regtype::pg_catalog.text
		FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type ty ON ty.oid OPERATOR(pg_catalog.=) a.atttypid
		WHERE a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND a.attname OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[])
		  AND ty.typtype OPERATOR(pg_catalog.=) 'd'
		ORDER BY 1, 2, 3`, t.Ident(), cols)
	if err != nil {
		return fmt.Errorf("reading the CHECKs and domains of %s: %w", t.QualifiedName(), err)
	}
	rules, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ColumnRule, error) {
		var x ColumnRule
		err := r.Scan(&x.Column, &x.Kind, &x.Name, &x.Expression)
		return x, err
	})
	if err != nil {
		return fmt.Errorf("reading the CHECKs and domains of %s: %w", t.QualifiedName(), err)
	}
	for _, x := range rules {
		if _, err := tx.Exec(ctx, `INSERT INTO pgphi.column_rules (table_name, column_name, kind, rule_name, expression) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (table_name, column_name, kind, rule_name) DO UPDATE SET expression = EXCLUDED.expression`,
			t.QualifiedName(), x.Column, x.Kind, x.Name, x.Expression); err != nil {
			return fmt.Errorf("recording rule %s of %s.%s: %w", x.Name, t.QualifiedName(), x.Column, err)
		}
	}
	return nil
}

// LoadRules reads the validation rules of table (schema.table) by column.
func LoadRules(ctx context.Context, q catalog.Querier, table string) (map[string][]ColumnRule, error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT pg_catalog.to_regclass('pgphi.column_rules') IS NOT NULL").Scan(&exists); err != nil || !exists {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT column_name, kind, rule_name, expression FROM pgphi.column_rules WHERE table_name OPERATOR(pg_catalog.=) $1 ORDER BY 1, 2, 3`, table)
	if err != nil {
		return nil, fmt.Errorf("reading the validation rules of %s: %w", table, err)
	}
	rules, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ColumnRule, error) {
		var x ColumnRule
		err := r.Scan(&x.Column, &x.Kind, &x.Name, &x.Expression)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the validation rules of %s: %w", table, err)
	}
	out := map[string][]ColumnRule{}
	for _, x := range rules {
		out[x.Column] = append(out[x.Column], x)
	}
	return out, nil
}

// RuleQuery is one SELECT that evaluates rules on candidate values: for
// the i-th (column, type, rules) it casts parameter $i (the value's
// canonical text) to the column's type — which checks a domain's
// constraints — and yields, per CHECK, whether it is not false (a CHECK
// passes on NULL). The result is one boolean per CHECK, in order.
func RuleQuery(cols []RuleInput) string {
	var sel []string
	for i, c := range cols {
		from := fmt.Sprintf("(SELECT $%d::pg_catalog.text::%s AS %s) AS pgphi_candidate", i+1, c.Type, ident(c.Column))
		hasCheck := false
		for _, x := range c.Rules {
			if x.Kind == "check" {
				sel = append(sel, fmt.Sprintf("(SELECT (%s) IS NOT FALSE FROM %s)", x.Expression, from))
				hasCheck = true
			}
		}
		if !hasCheck {
			// A domain only: the cast is the check. The value is used (a
			// function call on it), so the planner cannot skip the cast.
			sel = append(sel, fmt.Sprintf("(SELECT pg_catalog.num_nulls(%s) OPERATOR(pg_catalog.>=) 0 FROM %s)", ident(c.Column), from))
		}
	}
	return "SELECT " + strings.Join(sel, ", ")
}

// RuleInput is one value's column, type and rules for RuleQuery.
type RuleInput struct {
	Column, Type string
	Rules        []ColumnRule
}

// RuleNames lists, in RuleQuery's result order, what each result checks.
func RuleNames(cols []RuleInput) []string {
	var out []string
	for _, c := range cols {
		hasCheck := false
		for _, x := range c.Rules {
			if x.Kind == "check" {
				out = append(out, "check "+x.Name)
				hasCheck = true
			}
		}
		if !hasCheck {
			out = append(out, "domain "+c.Type)
		}
	}
	return out
}

// ProblemRule is a verification problem: a value breaks a validation rule
// carried from its plaintext column (the rule is named after it).
const ProblemRule = "value breaks a validation rule of its column:"

// verifyRules applies the validation rules of t's columns to every value
// (the plaintext where there is one, else the decrypted ciphertext): a
// value the application wrote only as ciphertext never met the CHECK. The
// rules run in read-only transactions as the table's owner where the
// connected role may act as it, pages of values at a time; a domain that
// refuses a page is evaluated value by value to name the rows.
func verifyRules(ctx context.Context, pool *pgxpool.Pool, ring *keys.Keyring, t *Target, res *VerifyResult) error {
	rules, err := LoadRules(ctx, pool, t.QualifiedName())
	if err != nil || len(rules) == 0 {
		return err
	}
	for i := range t.Columns {
		c := &t.Columns[i]
		if len(rules[c.Name]) == 0 {
			continue
		}
		typ, err := columnType(ctx, pool, t, c)
		if err != nil {
			return err
		}
		in := RuleInput{Column: c.Name, Type: typ, Rules: rules[c.Name]}
		if err := verifyColumnRules(ctx, pool, ring, t, c, in, res); err != nil {
			return err
		}
	}
	return nil
}

// columnType is the column's type as pgphi recorded it at expand.
func columnType(ctx context.Context, q catalog.Querier, t *Target, c *TargetColumn) (string, error) {
	var typ string
	if err := q.QueryRow(ctx, `SELECT original_type FROM pgphi.protected_columns WHERE table_name OPERATOR(pg_catalog.=) $1 AND column_name OPERATOR(pg_catalog.=) $2`,
		t.QualifiedName(), c.Name).Scan(&typ); err != nil {
		return "", fmt.Errorf("reading the type of %s.%s: %w", t.QualifiedName(), c.Name, err)
	}
	return typ, nil
}

func verifyColumnRules(ctx context.Context, pool *pgxpool.Pool, ring *keys.Keyring, t *Target, c *TargetColumn, in RuleInput, res *VerifyResult) error {
	const page = 1000
	nk := len(t.PrimaryKey)
	plain := "NULL::text"
	// While the plaintext is there its own CHECK holds for every plaintext
	// value: only values written as ciphertext only need the rule.
	where := ""
	if !c.Cleaned {
		plain = ident(c.Name) + "::text"
		where = fmt.Sprintf("%s IS NULL AND %s IS NOT NULL", ident(c.Name), ident(c.Encrypted))
	}
	sel := strings.Join(t.KeyTexts(), ", ") + ", " + plain + ", " + ident(c.Encrypted)
	first := fmt.Sprintf("SELECT %s FROM %s %s ORDER BY %s LIMIT %d", sel, t.Ident(), prefixWhere(where), t.keyList(""), page)
	next := fmt.Sprintf("SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT %d", sel, t.Ident(), joinAnd(t.keyCompare(">", 1), where), t.keyList(""), page)
	var checks []string
	for _, x := range in.Rules {
		if x.Kind == "check" {
			checks = append(checks, "("+x.Expression+") IS NOT FALSE")
		}
	}
	// The value is used, so that the cast (a domain's check) is never
	// skipped by the planner.
	checks = append(checks, fmt.Sprintf("pg_catalog.num_nulls(%s) OPERATOR(pg_catalog.>=) 0", ident(in.Column)))
	eval := fmt.Sprintf(`SELECT pgphi_o FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS pgphi_u(pgphi_v, pgphi_o)
		WHERE NOT (SELECT %s FROM (SELECT pgphi_u.pgphi_v::%s AS %s) AS pgphi_candidate)`, strings.Join(checks, " AND "), in.Type, ident(in.Column))
	opener := ring.Opener(t.QualifiedName(), c.Name)
	var last []string
	for {
		var keysOf [][]string
		var values []string
		err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if _, err := asTableOwner(ctx, tx, t, false); err != nil {
				return err
			}
			var rows pgx.Rows
			var err error
			if last == nil {
				rows, err = tx.Query(ctx, first)
			} else {
				args := make([]any, len(last))
				for i, v := range last {
					args[i] = v
				}
				rows, err = tx.Query(ctx, next, args...)
			}
			if err != nil {
				return err
			}
			n := 0
			for rows.Next() {
				n++
				raw := rows.RawValues()
				key := make([]string, nk)
				for i := range nk {
					key[i] = string(raw[i])
				}
				last = key
				pt, ct := raw[nk], raw[nk+1]
				switch {
				case pt != nil:
					values = append(values, string(pt))
				case ct != nil:
					v, err := opener.Open(ct, envelope.Binding{Table: t.QualifiedName(), Column: c.Name, PrimaryKey: key})
					if err != nil {
						continue // reported by the row check
					}
					values = append(values, v.Text)
				default:
					continue
				}
				keysOf = append(keysOf, key)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if n < page {
				last = nil
			}
			if len(values) == 0 {
				return nil
			}
			bad, err := evalRules(ctx, tx, eval, values)
			for _, i := range bad {
				res.add(Mismatch{Table: t.QualifiedName(), Column: c.Name, KeyColumns: t.keyNames(), Key: keysOf[i],
					Problem: ProblemRule + " " + strings.Join(RuleNames([]RuleInput{in}), ", ")})
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("verifying the rules of %s.%s: %w", t.QualifiedName(), c.Name, err)
		}
		if last == nil {
			return nil
		}
	}
}

// evalRules returns the indices of values that break the rules. A cast
// that fails (a domain's constraint) fails the whole statement: then each
// value is evaluated alone, under a savepoint.
func evalRules(ctx context.Context, tx pgx.Tx, eval string, values []string) ([]int, error) {
	bad, err := evalOnce(ctx, tx, eval, values)
	if err == nil {
		return bad, nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || (pgErr.Code != "23514" && !strings.HasPrefix(pgErr.Code, "22")) {
		return nil, err
	}
	bad = nil
	for i, v := range values {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return nil, err
		}
		b, err := evalOnce(ctx, sp, eval, []string{v})
		_ = sp.Rollback(ctx)
		if err != nil || len(b) > 0 {
			bad = append(bad, i)
		}
	}
	return bad, nil
}

func evalOnce(ctx context.Context, tx pgx.Tx, eval string, values []string) ([]int, error) {
	rows, err := tx.Query(ctx, eval, values)
	if err != nil {
		return nil, err
	}
	ords, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, err
	}
	out := make([]int, len(ords))
	for i, o := range ords {
		out[i] = int(o) - 1
	}
	return out, nil
}

func prefixWhere(cond string) string {
	if cond == "" {
		return ""
	}
	return "WHERE " + cond
}

func joinAnd(a, b string) string {
	if b == "" {
		return a
	}
	return a + " AND " + b
}
