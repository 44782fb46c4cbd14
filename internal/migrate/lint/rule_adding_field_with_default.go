package lint

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgphi/pgphi/internal/migrate"
)

// addingFieldWithDefault: a volatile default (random(), clock_timestamp(),
// gen_random_uuid(), ...) makes ADD COLUMN rewrite the whole table under an
// ACCESS EXCLUSIVE lock; constant and stable defaults do not since
// PostgreSQL 11.
type addingFieldWithDefault struct{}

var volatileFuncs = map[string]bool{"random": true, "clock_timestamp": true, "timeofday": true, "gen_random_uuid": true,
	"uuid_generate_v4": true, "uuid_generate_v1": true, "nextval": true, "txid_current": true, "statement_timestamp": false}

func (addingFieldWithDefault) Name() string       { return "adding-field-with-default" }
func (addingFieldWithDefault) Severity() Severity { return Error }
func (addingFieldWithDefault) Check(c *Context, s *migrate.Statement) []string {
	rel, cmds := alterCmds(s)
	if c.newTable(rel) {
		return nil
	}
	var out []string
	for _, cmd := range cmds {
		cd := cmd.GetDef().GetColumnDef()
		if cmd.Subtype != pg_query.AlterTableType_AT_AddColumn || cd == nil {
			continue
		}
		defs := []*pg_query.Node{cd.RawDefault}
		for _, k := range cd.Constraints {
			if k.GetConstraint().GetContype() == pg_query.ConstrType_CONSTR_DEFAULT {
				defs = append(defs, k.GetConstraint().RawExpr)
			}
		}
		for _, d := range defs {
			if d == nil {
				continue
			}
			volatile := false
			for _, f := range funcNames(d) {
				if volatileFuncs[strings.ToLower(f)] {
					volatile = true
				}
			}
			if volatile {
				out = append(out, "column "+cd.Colname+" is added with a volatile default: the whole table is rewritten under an ACCESS EXCLUSIVE lock; add it without the default, set the default, then backfill in batches")
			}
		}
	}
	return out
}
