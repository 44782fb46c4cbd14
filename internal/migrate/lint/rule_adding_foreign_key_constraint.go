package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// addingForeignKeyConstraint: a foreign key takes SHARE ROW EXCLUSIVE locks
// on both tables, even NOT VALID; it waits behind (and blocks) their writers.
type addingForeignKeyConstraint struct{}

func (addingForeignKeyConstraint) Name() string       { return "adding-foreign-key-constraint" }
func (addingForeignKeyConstraint) Severity() Severity { return Warning }
func (addingForeignKeyConstraint) Check(c *Context, s *migrate.Statement) []string {
	rel, cmds := alterCmds(s)
	if c.newTable(rel) {
		return nil
	}
	var out []string
	for _, cmd := range cmds {
		k := cmd.GetDef().GetConstraint()
		if cmd.Subtype == pg_query.AlterTableType_AT_AddConstraint && k != nil && k.Contype == pg_query.ConstrType_CONSTR_FOREIGN {
			out = append(out, "foreign key "+k.Conname+" locks "+tableKey(rel)+" and "+tableKey(k.Pktable)+" against writes while it is added; keep it NOT VALID and validate separately")
		}
	}
	return out
}
