package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// banDropTable: dropping a table loses its data and breaks its users.
type banDropTable struct{}

func (banDropTable) Name() string       { return "ban-drop-table" }
func (banDropTable) Severity() Severity { return Error }
func (banDropTable) Check(c *Context, s *migrate.Statement) []string {
	d := s.Node.GetDropStmt()
	if d == nil || d.RemoveType != pg_query.ObjectType_OBJECT_TABLE {
		return nil
	}
	return []string{"DROP TABLE loses the table's data and breaks the application versions that still use it"}
}
