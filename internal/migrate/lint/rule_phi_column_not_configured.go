package lint

import (
	"fmt"
	"regexp"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// phiColumnNotConfigured: a new column whose name or comment looks like PHI
// and that pgphi.yaml does not protect would hold plaintext PHI; the
// finding carries the config lines to add.
type phiColumnNotConfigured struct{}

var phiName = regexp.MustCompile(`(?i)(^|_)(name|first_?name|last_?name|birth|dob|birth_?date|phone|mobile|fax|email|ssn|social_security|mrn|medical_record|address|street|city|zip|postal|postcode|insurance|policy_number|diagnosis|icd|prescription|medication)($|_)`)

func (phiColumnNotConfigured) Name() string       { return "phi-column-not-configured" }
func (phiColumnNotConfigured) Severity() Severity { return Warning }
func (phiColumnNotConfigured) Check(c *Context, s *migrate.Statement) []string {
	var out []string
	check := func(rel *pg_query.RangeVar, col string) {
		key := tableKey(rel) + "." + strings.ToLower(col)
		if !phiName.MatchString(col) || c.Configured[key] {
			return
		}
		out = append(out, fmt.Sprintf("%s looks like PHI and pgphi.yaml does not protect it; add under tables:\n  %s:\n    columns:\n      %s: { class: phi }", key, tableKey(rel), col))
	}
	if cs := s.Node.GetCreateStmt(); cs != nil {
		for _, e := range cs.TableElts {
			if cd := e.GetColumnDef(); cd != nil {
				check(cs.Relation, cd.Colname)
			}
		}
	}
	rel, cmds := alterCmds(s)
	for _, cmd := range cmds {
		if cd := cmd.GetDef().GetColumnDef(); cmd.Subtype == pg_query.AlterTableType_AT_AddColumn && cd != nil {
			check(rel, cd.Colname)
		}
	}
	if cm := s.Node.GetCommentStmt(); cm != nil && cm.Objtype == pg_query.ObjectType_OBJECT_COLUMN && phiName.MatchString(strings.ReplaceAll(cm.Comment, " ", "_")) {
		if l := cm.Object.GetList(); l != nil && len(l.Items) >= 2 {
			var parts []string
			for _, it := range l.Items {
				parts = append(parts, it.GetString_().GetSval())
			}
			col := parts[len(parts)-1]
			rv := &pg_query.RangeVar{Relname: parts[len(parts)-2]}
			if len(parts) == 3 {
				rv.Schemaname = parts[0]
			}
			check(rv, col)
			if len(out) == 0 && !c.Configured[tableKey(rv)+"."+strings.ToLower(col)] {
				out = append(out, fmt.Sprintf("the comment on %s.%s says it holds PHI and pgphi.yaml does not protect it", tableKey(rv), col))
			}
		}
	}
	return out
}
