package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/catalog"
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
			// A domain only: the cast is the check.
			sel = append(sel, fmt.Sprintf("(SELECT %s IS NOT NULL OR true FROM %s)", ident(c.Column), from))
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
