package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// banDropColumn: dropping a column breaks every reader and writer still
// naming it; deploy the application without it first.
type banDropColumn struct{}

func (banDropColumn) Name() string       { return "ban-drop-column" }
func (banDropColumn) Severity() Severity { return Error }
func (banDropColumn) Check(c *Context, s *migrate.Statement) []string {
	rel, cmds := alterCmds(s)
	var out []string
	for _, cmd := range cmds {
		if cmd.Subtype == pg_query.AlterTableType_AT_DropColumn {
			out = append(out, "dropping "+tableKey(rel)+"."+cmd.Name+" breaks the application versions that still use it")
		}
	}
	return out
}
