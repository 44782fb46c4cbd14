package lint

import "github.com/pgphi/pgphi/internal/migrate"

// phiLiteral: a literal value written into a protected column puts PHI in
// source control (and in the migration's history).
type phiLiteral struct{}

func (phiLiteral) protectsPHI()       {}
func (phiLiteral) Name() string       { return "phi-literal" }
func (phiLiteral) Severity() Severity { return Error }
func (phiLiteral) Check(c *Context, s *migrate.Statement) []string {
	var out []string
	if ins := s.Node.GetInsertStmt(); ins != nil {
		sel := ins.SelectStmt.GetSelectStmt()
		for i, col := range ins.Cols {
			name := col.GetResTarget().GetName()
			if c.protected(ins.Relation, name) == nil || sel == nil {
				continue
			}
			for _, row := range sel.ValuesLists {
				if l := row.GetList(); l != nil && i < len(l.Items) && hasConst(l.Items[i]) {
					out = append(out, "writes a literal value into protected column "+tableKey(ins.Relation)+"."+name+": PHI does not belong in a migration file")
					break
				}
			}
		}
	}
	if up := s.Node.GetUpdateStmt(); up != nil {
		for _, t := range up.TargetList {
			rt := t.GetResTarget()
			if rt != nil && c.protected(up.Relation, rt.Name) != nil && hasConst(rt.Val) {
				out = append(out, "writes a literal value into protected column "+tableKey(up.Relation)+"."+rt.Name+": PHI does not belong in a migration file")
			}
		}
	}
	return out
}
