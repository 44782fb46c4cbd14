package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// addingRequiredField: ADD COLUMN ... NOT NULL without a default fails on a
// table with rows and breaks inserts that do not name the column.
type addingRequiredField struct{}

func (addingRequiredField) Name() string       { return "adding-required-field" }
func (addingRequiredField) Severity() Severity { return Error }
func (addingRequiredField) Check(c *Context, s *migrate.Statement) []string {
	rel, cmds := alterCmds(s)
	if c.newTable(rel) {
		return nil
	}
	var out []string
	for _, cmd := range cmds {
		cd := cmd.GetDef().GetColumnDef()
		if cmd.Subtype != pg_query.AlterTableType_AT_AddColumn || cd == nil {
			continue
		}
		notNull, def := cd.IsNotNull, cd.RawDefault != nil
		for _, k := range cd.Constraints {
			switch k.GetConstraint().GetContype() {
			case pg_query.ConstrType_CONSTR_NOTNULL:
				notNull = true
			case pg_query.ConstrType_CONSTR_DEFAULT, pg_query.ConstrType_CONSTR_IDENTITY, pg_query.ConstrType_CONSTR_GENERATED:
				def = true
			}
		}
		if notNull && !def {
			out = append(out, "column "+cd.Colname+" is added NOT NULL without a default: it fails on a table with rows and breaks inserts that do not name it; add it nullable, backfill, then add a NOT VALID check and validate it")
		}
	}
	return out
}
