package lint

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// protectedColumnChanged: a protected column is renamed, retyped or dropped
// outside pgphi (a DROP leaves the plaintext in dead tuples, WAL and
// backups; `cleanup` purges it), a cleaned column's plaintext is read or
// written again, or a protected column's plaintext is copied into another
// table (INSERT ... SELECT, CREATE TABLE AS).
type protectedColumnChanged struct{}

func (protectedColumnChanged) protectsPHI()       {}
func (protectedColumnChanged) Name() string       { return "protected-column-changed" }
func (protectedColumnChanged) Severity() Severity { return Error }
func (protectedColumnChanged) Check(c *Context, s *migrate.Statement) []string {
	var out []string
	if r := s.Node.GetRenameStmt(); r != nil && r.RenameType == pg_query.ObjectType_OBJECT_COLUMN && c.protected(r.Relation, r.Subname) != nil {
		out = append(out, "renames protected column "+tableKey(r.Relation)+"."+r.Subname+": pgphi's triggers, ciphertext and blind indexes are bound to its name")
	}
	rel, cmds := alterCmds(s)
	for _, cmd := range cmds {
		p := c.protected(rel, cmd.Name)
		if p == nil {
			continue
		}
		switch cmd.Subtype {
		case pg_query.AlterTableType_AT_AlterColumnType:
			out = append(out, "retypes protected column "+tableKey(rel)+"."+cmd.Name+": its ciphertext and terms are of the old type's canonical text")
		case pg_query.AlterTableType_AT_DropColumn:
			out = append(out, "drops protected column "+tableKey(rel)+"."+cmd.Name+" outside pgphi: a DROP leaves the plaintext in dead rows, WAL and backups; pgphi's cleanup purges it")
		}
	}
	// Reads and writes: every table the statement names, every column it
	// references.
	rvs := rangeVars(s)
	refs := columnRefs(s.Node)
	if ins := s.Node.GetInsertStmt(); ins != nil {
		for _, col := range ins.Cols {
			if rt := col.GetResTarget(); rt != nil {
				refs = append(refs, rt.Name)
			}
		}
	}
	if up := s.Node.GetUpdateStmt(); up != nil {
		for _, t := range up.TargetList {
			if rt := t.GetResTarget(); rt != nil {
				refs = append(refs, rt.Name)
			}
		}
	}
	copies := s.Node.GetCreateTableAsStmt() != nil || (s.Node.GetInsertStmt() != nil && s.Node.GetInsertStmt().SelectStmt.GetSelectStmt().GetFromClause() != nil) ||
		s.Node.GetSelectStmt().GetIntoClause() != nil
	if up := s.Node.GetUpdateStmt(); up != nil {
		// An UPDATE copies a protected column when a new value reads it.
		refs = refs[:0]
		for _, t := range up.TargetList {
			if rt := t.GetResTarget(); rt != nil {
				refs = append(refs, columnRefs(rt.Val)...)
				if p := c.protected(up.Relation, rt.Name); p != nil && p.Cleaned {
					refs = append(refs, rt.Name)
				}
			}
		}
		copies = true
	}
	seen := map[string]bool{}
	for _, rv := range rvs {
		for _, col := range refs {
			p := c.protected(rv, col)
			if p == nil || seen[tableKey(rv)+col] {
				continue
			}
			seen[tableKey(rv)+col] = true
			switch {
			case p.Cleaned:
				out = append(out, "uses "+tableKey(rv)+"."+col+", whose plaintext cleanup removed: read and write it through pgphi's API")
			case copies:
				out = append(out, "copies protected column "+tableKey(rv)+"."+col+" as plaintext into another table")
			}
		}
	}
	return out
}
