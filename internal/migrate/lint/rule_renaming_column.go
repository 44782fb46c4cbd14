package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// renamingColumn: a rename breaks every running application version that
// uses the old name.
type renamingColumn struct{}

func (renamingColumn) Name() string       { return "renaming-column" }
func (renamingColumn) Severity() Severity { return Error }
func (renamingColumn) Check(c *Context, s *migrate.Statement) []string {
	r := s.Node.GetRenameStmt()
	if r == nil || r.RenameType != pg_query.ObjectType_OBJECT_COLUMN {
		return nil
	}
	return []string{"renaming " + tableKey(r.Relation) + "." + r.Subname + " breaks the application versions that use the old name; add a column and copy instead"}
}
