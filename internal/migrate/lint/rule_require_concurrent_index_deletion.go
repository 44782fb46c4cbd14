package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// requireConcurrentIndexDeletion: DROP INDEX without CONCURRENTLY takes an
// ACCESS EXCLUSIVE lock on the table.
type requireConcurrentIndexDeletion struct{}

func (requireConcurrentIndexDeletion) Name() string       { return "require-concurrent-index-deletion" }
func (requireConcurrentIndexDeletion) Severity() Severity { return Error }
func (requireConcurrentIndexDeletion) Check(c *Context, s *migrate.Statement) []string {
	d := s.Node.GetDropStmt()
	if d == nil || d.RemoveType != pg_query.ObjectType_OBJECT_INDEX || d.Concurrent {
		return nil
	}
	return []string{"DROP INDEX without CONCURRENTLY locks its table against reads and writes; use DROP INDEX CONCURRENTLY"}
}
