package lint

import "github.com/pgphi/pgphi/internal/migrate"

// requireConcurrentIndexCreation: CREATE INDEX without CONCURRENTLY blocks
// writes to the table for the whole build.
type requireConcurrentIndexCreation struct{}

func (requireConcurrentIndexCreation) Name() string       { return "require-concurrent-index-creation" }
func (requireConcurrentIndexCreation) Severity() Severity { return Error }
func (requireConcurrentIndexCreation) Check(c *Context, s *migrate.Statement) []string {
	is := s.Node.GetIndexStmt()
	if is == nil || is.Concurrent || c.newTable(is.Relation) {
		return nil
	}
	return []string{"CREATE INDEX on " + tableKey(is.Relation) + " without CONCURRENTLY blocks writes for the whole build; use CREATE INDEX CONCURRENTLY"}
}
