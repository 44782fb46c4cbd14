package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// disallowedUniqueConstraint: ADD CONSTRAINT UNIQUE builds its index under
// an ACCESS EXCLUSIVE lock; build the index CONCURRENTLY first and add the
// constraint USING INDEX.
type disallowedUniqueConstraint struct{}

func (disallowedUniqueConstraint) Name() string       { return "disallowed-unique-constraint" }
func (disallowedUniqueConstraint) Severity() Severity { return Error }
func (disallowedUniqueConstraint) Check(c *Context, s *migrate.Statement) []string {
	rel, cmds := alterCmds(s)
	if c.newTable(rel) {
		return nil
	}
	var out []string
	for _, cmd := range cmds {
		k := cmd.GetDef().GetConstraint()
		if cmd.Subtype == pg_query.AlterTableType_AT_AddConstraint && k != nil &&
			(k.Contype == pg_query.ConstrType_CONSTR_UNIQUE || k.Contype == pg_query.ConstrType_CONSTR_PRIMARY) && k.Indexname == "" {
			out = append(out, "constraint "+k.Conname+" builds its index while the table is locked; CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT ... USING INDEX")
		}
	}
	return out
}
