package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// constraintMissingNotValid: ADD CONSTRAINT CHECK or FOREIGN KEY scans the
// whole table under its lock; NOT VALID then VALIDATE CONSTRAINT (in a
// later statement) checks the rows without blocking writes.
type constraintMissingNotValid struct{}

func (constraintMissingNotValid) Name() string       { return "constraint-missing-not-valid" }
func (constraintMissingNotValid) Severity() Severity { return Error }
func (constraintMissingNotValid) Check(c *Context, s *migrate.Statement) []string {
	rel, cmds := alterCmds(s)
	if c.newTable(rel) {
		return nil
	}
	var out []string
	for _, cmd := range cmds {
		k := cmd.GetDef().GetConstraint()
		if cmd.Subtype != pg_query.AlterTableType_AT_AddConstraint || k == nil {
			continue
		}
		if (k.Contype == pg_query.ConstrType_CONSTR_CHECK || k.Contype == pg_query.ConstrType_CONSTR_FOREIGN) && !k.SkipValidation {
			out = append(out, "constraint "+k.Conname+" is added without NOT VALID: the whole table is checked while writes wait; add it NOT VALID, then VALIDATE CONSTRAINT in a later statement")
		}
	}
	return out
}
