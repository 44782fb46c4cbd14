package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// changingColumnType: ALTER COLUMN ... TYPE rewrites the table (and its
// indexes) under an ACCESS EXCLUSIVE lock for most type changes.
type changingColumnType struct{}

func (changingColumnType) Name() string       { return "changing-column-type" }
func (changingColumnType) Severity() Severity { return Error }
func (changingColumnType) Check(c *Context, s *migrate.Statement) []string {
	rel, cmds := alterCmds(s)
	if c.newTable(rel) {
		return nil
	}
	var out []string
	for _, cmd := range cmds {
		if cmd.Subtype == pg_query.AlterTableType_AT_AlterColumnType {
			out = append(out, "changing the type of "+cmd.Name+" rewrites "+tableKey(rel)+" under an ACCESS EXCLUSIVE lock; add a new column, backfill it, then switch")
		}
	}
	return out
}
