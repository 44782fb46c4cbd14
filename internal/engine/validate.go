package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgphi/pgphi/internal/config"
)

// Violation counts the rows of a column that break one validation rule. It
// never carries a value: counting happens in the database.
type Violation struct {
	Table  string `json:"table"`
	Column string `json:"column"`
	Rule   string `json:"rule"` // not_null, pattern, max_length
	Rows   int64  `json:"rows"`
}

// ValidationResult is what pre-migration validation found.
type ValidationResult struct {
	Checked    []string    `json:"checked"` // "table.column rule" for every rule evaluated
	Violations []Violation `json:"violations"`
}

// Validate evaluates each column's validate: rules (not_null, pattern,
// max_length) in SQL and returns counts. Patterns are evaluated with
// PostgreSQL's regular expressions (the config checks they also compile as RE2).
func Validate(ctx context.Context, q Querier, cfg *config.Config, p *Plan) (*ValidationResult, error) {
	res := &ValidationResult{}
	for _, t := range p.Tables {
		if t.Cleaned() {
			continue
		}
		var sel []string
		var args []any
		type rule struct{ column, name string }
		var rules []rule
		for i, c := range t.Columns {
			v := t.Config.Columns[i].Validate
			col := ident(c.Name)
			if v.NotNull {
				sel = append(sel, fmt.Sprintf("count(*) FILTER (WHERE %s IS NULL)", col))
				rules = append(rules, rule{c.Name, "not_null"})
			}
			if v.Pattern != "" {
				args = append(args, v.Pattern)
				sel = append(sel, fmt.Sprintf("count(*) FILTER (WHERE %s IS NOT NULL AND %s::text !~ $%d)", col, col, len(args)))
				rules = append(rules, rule{c.Name, "pattern"})
			}
			if v.MaxLength > 0 {
				sel = append(sel, fmt.Sprintf("count(*) FILTER (WHERE char_length(%s::text) > %d)", col, v.MaxLength))
				rules = append(rules, rule{c.Name, "max_length"})
			}
		}
		if len(sel) == 0 {
			continue
		}
		rows, err := q.Query(ctx, fmt.Sprintf("SELECT %s FROM %s", strings.Join(sel, ", "), t.Ident()), args...)
		if err != nil {
			return nil, fmt.Errorf("validating %s: %w", t.QualifiedName(), err)
		}
		var counts []any
		for rows.Next() {
			counts, err = rows.Values()
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
		if err != nil {
			return nil, fmt.Errorf("validating %s: %w", t.QualifiedName(), err)
		}
		for i, r := range rules {
			res.Checked = append(res.Checked, t.QualifiedName()+"."+r.column+" "+r.name)
			if n := counts[i].(int64); n > 0 {
				res.Violations = append(res.Violations, Violation{Table: t.QualifiedName(), Column: r.column, Rule: r.name, Rows: n})
			}
		}
	}
	return res, nil
}
