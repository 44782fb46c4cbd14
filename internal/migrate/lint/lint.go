// Package lint checks migration files before they run: rules that keep a
// migration from locking out the application (named as squawk names them
// where they overlap) and rules only pgphi can have because it knows which
// columns hold PHI. Each rule is one file implementing Rule. A finding on a
// statement is suppressed by a comment `-- pgphi:ignore RULE reason` before
// it; the reason is kept with the finding for the audit record.
package lint

import (
	"sort"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/migrate"
)

// Severity: an error blocks `up` in production; a warning is printed.
type Severity string

const (
	Error   Severity = "error"
	Warning Severity = "warning"
)

// Rule is one lint rule.
type Rule interface {
	Name() string
	Severity() Severity
	// Check returns one message per problem in statement s of the file.
	Check(c *Context, s *migrate.Statement) []string
}

// protectsPHI is implemented by the rules whose errors block a migration in
// every environment, not only in production: they keep PHI protected, and a
// development database may hold a copy of real data.
type protectsPHI interface{ protectsPHI() }

// Column is a column pgphi protects (pgphi.yaml) or has protected.
type Column struct {
	Schema, Table, Name string
	Cleaned             bool // the plaintext column was dropped by cleanup
}

// Context is what the rules know: the file and pgphi's protected columns.
type Context struct {
	File      *migrate.File
	Protected []Column
	// Configured are "schema.table.column" names listed in pgphi.yaml.
	Configured map[string]bool
	created    map[string]bool // tables created by earlier statements of the file
}

// FromConfig is the context of cfg's protected columns (nil: none);
// cleaned holds the "schema.table.column" names whose plaintext cleanup
// removed.
func FromConfig(cfg *config.Config, cleaned map[string]bool) Context {
	c := Context{Configured: map[string]bool{}}
	if cfg == nil {
		return c
	}
	for _, t := range cfg.Tables {
		for _, col := range t.Columns {
			key := t.QualifiedName() + "." + col.Name
			c.Configured[strings.ToLower(key)] = true
			c.Protected = append(c.Protected, Column{Schema: t.Schema, Table: t.Name, Name: col.Name, Cleaned: cleaned[key]})
		}
	}
	return c
}

// Finding is one problem found.
type Finding struct {
	Rule     string   `json:"rule"`
	Severity Severity `json:"severity"`
	File     string   `json:"file"`
	Line     int      `json:"line"`
	Col      int      `json:"column"`
	Message  string   `json:"message"`
	PHI      bool     `json:"phi,omitempty"` // an error here blocks in every environment
	Ignored  bool     `json:"ignored,omitempty"`
	Reason   string   `json:"reason,omitempty"`
}

// Rules are every rule, by name.
func Rules() []Rule {
	rs := []Rule{
		requireConcurrentIndexCreation{}, requireConcurrentIndexDeletion{}, addingRequiredField{},
		addingFieldWithDefault{}, changingColumnType{}, constraintMissingNotValid{}, addingForeignKeyConstraint{},
		disallowedUniqueConstraint{}, banDropColumn{}, banDropTable{}, renamingColumn{}, renamingTable{},
		requireLockTimeout{}, banConcurrentIndexCreationInTransaction{}, preferRobustStmts{},
		phiColumnNotConfigured{}, protectedColumnChanged{}, phiLiteral{}, pgphiObjects{},
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Name() < rs[j].Name() })
	return rs
}

// File runs every rule on f.
func File(c Context, f *migrate.File) []Finding {
	c.File = f
	c.created = map[string]bool{}
	var out []Finding
	for _, s := range f.Statements {
		for _, r := range Rules() {
			for _, msg := range r.Check(&c, s) {
				_, phi := r.(protectsPHI)
				fd := Finding{Rule: r.Name(), Severity: r.Severity(), File: f.Name, Line: s.Line, Col: s.Col, Message: msg, PHI: phi}
				if reason, ok := s.Ignores[r.Name()]; ok {
					fd.Ignored, fd.Reason = true, reason
				}
				out = append(out, fd)
			}
		}
		if cs := s.Node.GetCreateStmt(); cs != nil {
			c.created[tableKey(cs.Relation)] = true
		}
	}
	return out
}

// Blocking reports whether findings has an error not ignored that blocks
// in this environment: every error in production, PHI errors everywhere.
func Blocking(findings []Finding, production bool) bool {
	for _, f := range findings {
		if f.Severity == Error && !f.Ignored && (production || f.PHI) {
			return true
		}
	}
	return false
}

func tableKey(rv *pg_query.RangeVar) string {
	if rv == nil {
		return ""
	}
	s := rv.Schemaname
	if s == "" {
		s = "public"
	}
	return strings.ToLower(s + "." + rv.Relname)
}

// newTable reports whether rv was created earlier in the same file: a
// table nobody uses yet cannot lock anyone out.
func (c *Context) newTable(rv *pg_query.RangeVar) bool { return c.created[tableKey(rv)] }

// protected returns the protected column of table rv named col, or nil.
func (c *Context) protected(rv *pg_query.RangeVar, col string) *Column {
	k := tableKey(rv)
	for i := range c.Protected {
		p := &c.Protected[i]
		if strings.ToLower(p.Schema+"."+p.Table) == k && strings.EqualFold(p.Name, col) {
			return p
		}
	}
	return nil
}

// alterCmds returns the table and commands of an ALTER TABLE.
func alterCmds(s *migrate.Statement) (*pg_query.RangeVar, []*pg_query.AlterTableCmd) {
	at := s.Node.GetAlterTableStmt()
	if at == nil || at.Objtype != pg_query.ObjectType_OBJECT_TABLE {
		return nil, nil
	}
	var cmds []*pg_query.AlterTableCmd
	for _, n := range at.Cmds {
		if c := n.GetAlterTableCmd(); c != nil {
			cmds = append(cmds, c)
		}
	}
	return at.Relation, cmds
}

// walk calls fn for every message in the tree under n.
func walk(n protoreflect.ProtoMessage, fn func(protoreflect.ProtoMessage)) {
	if n == nil {
		return
	}
	walkMsg(n.ProtoReflect(), fn)
}

func walkMsg(m protoreflect.Message, fn func(protoreflect.ProtoMessage)) {
	if !m.IsValid() {
		return
	}
	fn(m.Interface())
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walkMsg(l.Get(i).Message(), fn)
			}
		case fd.Message() != nil && !fd.IsMap():
			walkMsg(v.Message(), fn)
		}
		return true
	})
}

// rangeVars lists every table the statement names.
func rangeVars(s *migrate.Statement) []*pg_query.RangeVar {
	var out []*pg_query.RangeVar
	walk(s.Node, func(m protoreflect.ProtoMessage) {
		if rv, ok := m.(*pg_query.RangeVar); ok {
			out = append(out, rv)
		}
	})
	return out
}

// columnRefs lists the last name of every column reference.
func columnRefs(n protoreflect.ProtoMessage) []string {
	var out []string
	walk(n, func(m protoreflect.ProtoMessage) {
		if cr, ok := m.(*pg_query.ColumnRef); ok && len(cr.Fields) > 0 {
			if s := cr.Fields[len(cr.Fields)-1].GetString_(); s != nil {
				out = append(out, s.Sval)
			}
		}
	})
	return out
}

func hasConst(n protoreflect.ProtoMessage) bool {
	found := false
	walk(n, func(m protoreflect.ProtoMessage) {
		if c, ok := m.(*pg_query.A_Const); ok && !c.Isnull {
			found = true
		}
	})
	return found
}

// funcNames lists the last name of every function called under n.
func funcNames(n protoreflect.ProtoMessage) []string {
	var out []string
	walk(n, func(m protoreflect.ProtoMessage) {
		if fc, ok := m.(*pg_query.FuncCall); ok && len(fc.Funcname) > 0 {
			if s := fc.Funcname[len(fc.Funcname)-1].GetString_(); s != nil {
				out = append(out, s.Sval)
			}
		}
	})
	return out
}

// AddsConfigured lists the columns f adds that pgphi.yaml protects: they
// hold plaintext until pgphi encrypts them.
func AddsConfigured(c Context, f *migrate.File) []string {
	var out []string
	for _, s := range f.Statements {
		rel, cmds := alterCmds(s)
		for _, cmd := range cmds {
			if cd := cmd.GetDef().GetColumnDef(); cmd.Subtype == pg_query.AlterTableType_AT_AddColumn && cd != nil && c.Configured[tableKey(rel)+"."+strings.ToLower(cd.Colname)] {
				out = append(out, tableKey(rel)+"."+cd.Colname)
			}
		}
		if cs := s.Node.GetCreateStmt(); cs != nil {
			for _, e := range cs.TableElts {
				if cd := e.GetColumnDef(); cd != nil && c.Configured[tableKey(cs.Relation)+"."+strings.ToLower(cd.Colname)] {
					out = append(out, tableKey(cs.Relation)+"."+cd.Colname)
				}
			}
		}
	}
	return out
}

// Migrations lints the up files of ms and lists the columns they add that
// pgphi.yaml protects (AddsConfigured); a file that does not parse stops it
// (migrate.ErrParse, naming file, line and column).
func Migrations(c Context, ms []*migrate.Migration) ([]Finding, []string, error) {
	var all []Finding
	var adds []string
	for _, m := range ms {
		f, err := migrate.Parse(m.UpFile, m.Up)
		if err != nil {
			return nil, nil, err
		}
		all = append(all, File(c, f)...)
		adds = append(adds, AddsConfigured(c, f)...)
	}
	return all, adds, nil
}
