package lint

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pgphi/pgphi/internal/migrate"
)

// pgphiObjects: a migration may not touch schema pgphi (its state, keys and
// audit trail) nor disable or drop pgphi's triggers on application tables:
// that would let plaintext writes through unmarked.
type pgphiObjects struct{}

func (pgphiObjects) protectsPHI()       {}
func (pgphiObjects) Name() string       { return "pgphi-objects" }
func (pgphiObjects) Severity() Severity { return Error }
func (pgphiObjects) Check(c *Context, s *migrate.Statement) []string {
	var out []string
	// Names are String nodes (qualified function, type and object names)
	// and RangeVars; a string literal that says "pgphi" is data, not a name.
	literal := map[*pg_query.String]bool{}
	walk(s.Node, func(m protoreflect.ProtoMessage) {
		if c, ok := m.(*pg_query.A_Const); ok && c.GetSval() != nil {
			literal[c.GetSval()] = true
		}
	})
	schema := false
	walk(s.Node, func(m protoreflect.ProtoMessage) {
		switch n := m.(type) {
		case *pg_query.RangeVar:
			schema = schema || strings.EqualFold(n.Schemaname, "pgphi")
		case *pg_query.String:
			schema = schema || (!literal[n] && strings.EqualFold(n.Sval, "pgphi"))
		}
	})
	if schema {
		out = append(out, "touches schema pgphi: pgphi's state is changed only by pgphi")
	}
	if d := s.Node.GetDropStmt(); d != nil && d.RemoveType == pg_query.ObjectType_OBJECT_TRIGGER {
		for _, o := range d.Objects {
			if l := o.GetList(); l != nil && len(l.Items) > 0 && strings.Contains(strings.ToLower(l.Items[len(l.Items)-1].GetString_().GetSval()), "pgphi") {
				out = append(out, "drops one of pgphi's triggers")
			}
		}
	}
	_, cmds := alterCmds(s)
	for _, cmd := range cmds {
		switch cmd.Subtype {
		case pg_query.AlterTableType_AT_DisableTrig, pg_query.AlterTableType_AT_DisableTrigAll, pg_query.AlterTableType_AT_DisableTrigUser:
			if cmd.Name == "" || strings.Contains(strings.ToLower(cmd.Name), "pgphi") {
				out = append(out, "disables pgphi's triggers: writes would go through unmarked")
			}
		}
	}
	if v := s.Node.GetVariableSetStmt(); v != nil && v.Name == "session_replication_role" {
		out = append(out, "sets session_replication_role, which switches pgphi's triggers off")
	}
	return out
}
