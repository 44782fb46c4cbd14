package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// renamingTable: a rename breaks every running application version that
// uses the old name.
type renamingTable struct{}

func (renamingTable) Name() string       { return "renaming-table" }
func (renamingTable) Severity() Severity { return Error }
func (renamingTable) Check(c *Context, s *migrate.Statement) []string {
	r := s.Node.GetRenameStmt()
	if r == nil || r.RenameType != pg_query.ObjectType_OBJECT_TABLE {
		return nil
	}
	return []string{"renaming " + tableKey(r.Relation) + " breaks the application versions that use the old name"}
}
