package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// preferRobustStmts: in a file that runs statement by statement, a
// statement may run again after an interruption; IF [NOT] EXISTS makes that
// harmless.
type preferRobustStmts struct{}

func (preferRobustStmts) Name() string       { return "prefer-robust-stmts" }
func (preferRobustStmts) Severity() Severity { return Warning }
func (preferRobustStmts) Check(c *Context, s *migrate.Statement) []string {
	if !c.File.NonTx() {
		return nil
	}
	msg := []string{"this file runs statement by statement: use IF NOT EXISTS / IF EXISTS so a statement run again after an interruption does no harm"}
	switch {
	case s.Node.GetIndexStmt() != nil && !s.Node.GetIndexStmt().IfNotExists && s.Node.GetIndexStmt().Idxname == "":
		return msg
	case s.Node.GetCreateStmt() != nil && !s.Node.GetCreateStmt().IfNotExists:
		return msg
	case s.Node.GetDropStmt() != nil && !s.Node.GetDropStmt().MissingOk:
		return msg
	}
	_, cmds := alterCmds(s)
	for _, cmd := range cmds {
		if (cmd.Subtype == pg_query.AlterTableType_AT_AddColumn || cmd.Subtype == pg_query.AlterTableType_AT_DropColumn) && !cmd.MissingOk {
			return msg
		}
	}
	return nil
}
