package lint

import "github.com/pgphi/pgphi/internal/migrate"

// banConcurrentIndexCreationInTransaction: a file with a statement that
// cannot run in a transaction runs statement by statement, so its other
// statements lose their atomicity: a failure leaves the ones before it
// done. Put such statements in a file of their own.
type banConcurrentIndexCreationInTransaction struct{}

func (banConcurrentIndexCreationInTransaction) Name() string {
	return "ban-concurrent-index-creation-in-transaction"
}
func (banConcurrentIndexCreationInTransaction) Severity() Severity { return Warning }
func (banConcurrentIndexCreationInTransaction) Check(c *Context, s *migrate.Statement) []string {
	if !s.NonTx || len(c.File.Statements) == 1 {
		return nil
	}
	for _, o := range c.File.Statements {
		if !o.NonTx && o.Node.GetVariableSetStmt() == nil {
			return []string{"this statement cannot run in a transaction, so the whole file runs statement by statement and its other statements are not atomic; give it a migration of its own"}
		}
	}
	return nil
}
