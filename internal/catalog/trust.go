package catalog

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgphi/pgphi/internal/config"
)

// checkNames refuses schema, table and column names that contain ".".
// Ciphertexts are bound to "schema.table" and the column (docs/FORMAT.md),
// and keys are derived from the same names: with no "." inside a name,
// "schema.table" splits one way only, so "a.b".c and a."b.c" can never
// share associated data or a derived key.
func checkNames(cfg *config.Config, ct *config.Table) error {
	for _, n := range []struct{ kind, name string }{{"schema", ct.Schema}, {"table", ct.Name}} {
		if strings.Contains(n.name, ".") {
			return cfg.Errorf(ct.Line, "rename the "+n.kind+" (ALTER "+strings.ToUpper(n.kind)+" ... RENAME TO ...); pgphi binds ciphertexts to schema.table, which must split one way only",
				"%s name %q of table %q.%q contains \".\"", n.kind, n.name, ct.Schema, ct.Name)
		}
	}
	for _, cc := range ct.Columns {
		if strings.Contains(cc.Name, ".") {
			return cfg.Errorf(cc.Line, "rename the column (ALTER TABLE ... RENAME COLUMN ...)",
				"column name %q of table %q.%q contains \".\"", cc.Name, ct.Schema, ct.Name)
		}
	}
	return nil
}

// checkTypeCode refuses a protected or key column whose values, on their way
// to or from text, would run code that a role other than a superuser owns.
func checkTypeCode(ctx context.Context, q Querier, cfg *config.Config, line int, t *Table, c Column, what string) error {
	found, err := UntrustedTypeCode(ctx, q, c.TypeOID)
	if err != nil {
		return fmt.Errorf("inspecting the type of %s.%s: %w", t.QualifiedName(), c.Name, err)
	}
	if len(found) == 0 {
		return nil
	}
	return cfg.Errorf(line, "use a type whose text conversion is PostgreSQL's own (a plain enum, a domain whose CHECK calls only built-in functions, a built-in type), or have a superuser own that code",
		"%s %s.%s has type %s, whose conversion to or from text runs %s: pgphi (and every role that writes the table) would run that role's code",
		what, t.QualifiedName(), c.Name, c.Type, found[0])
}

// UntrustedTypeCode lists the code owned by roles that are not superusers
// that PostgreSQL may run when a value of type typeOID is converted to text
// (col::text, the output function) or back (text::type, the input
// function and domain constraints), each as "function f(args) owned by role
// r (reason)". Empty means only code a superuser owns is reachable: a plain
// enum owned by any role (enum_in/enum_out are built in) is fine; a
// user-defined cast to or from text, a user-owned input/output function, a
// domain CHECK or default calling a user function, a range canonical or
// subtype-diff function, are not. Element, field, base and range subtypes
// are followed: record_out and array_out call their members' output
// functions. Casts are followed only where text conversion would pick them:
// on the type itself and the base types of a domain.
func UntrustedTypeCode(ctx context.Context, q Querier, typeOID uint32) ([]string, error) {
	type visit struct {
		oid   uint32
		casts bool // a ::text of this type (or text::type) would look for a cast
	}
	seen := map[uint32]bool{} // oid -> casts checked
	queue := []visit{{typeOID, true}}
	var found []string
	for len(queue) > 0 && len(seen) < 1000 {
		v := queue[0]
		queue = queue[1:]
		if checked, ok := seen[v.oid]; ok && (checked || !v.casts) {
			continue
		}
		seen[v.oid] = v.casts
		var name string
		var base, elem, subtype, ofRange uint32
		var members, refTypes []uint32
		var problems []string
		err := q.QueryRow(ctx, typeCodeSQL, v.oid, v.casts).Scan(&name, &base, &elem, &subtype, &ofRange, &members, &refTypes, &problems)
		if err != nil {
			return nil, err
		}
		for _, p := range problems {
			found = append(found, p+" (reached through type "+name+")")
		}
		if base != 0 {
			queue = append(queue, visit{base, v.casts})
		}
		for _, o := range append(append([]uint32{elem, subtype, ofRange}, members...), refTypes...) {
			if o != 0 {
				queue = append(queue, visit{o, false})
			}
		}
	}
	return found, nil
}

// typeCodeSQL describes one type: its name, the types it is made of (domain
// base, array element, range subtype, the range of a multirange, composite
// fields, types its domain constraints and default refer to), and every
// function or operator it depends on whose code a non-superuser owns,
// together with casts to and from text when $2.
const typeCodeSQL = `
WITH ty AS (SELECT * FROM pg_catalog.pg_type WHERE oid OPERATOR(pg_catalog.=) $1::pg_catalog.oid),
refs AS (
	SELECT d.refclassid, d.refobjid, 'used by the type' AS why
	  FROM pg_catalog.pg_depend d, ty
	 WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) ty.oid
	UNION ALL
	SELECT d.refclassid, d.refobjid, 'called by domain constraint ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c.conname::pg_catalog.text)
	  FROM pg_catalog.pg_constraint c
	  JOIN pg_catalog.pg_depend d ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) c.oid, ty
	 WHERE c.contypid OPERATOR(pg_catalog.=) ty.oid
),
funcs AS (
	SELECT p.oid, refs.why FROM refs JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) refs.refobjid
	 WHERE refs.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
	UNION ALL
	SELECT o.oprcode::pg_catalog.oid, refs.why OPERATOR(pg_catalog.||) ', operator ' OPERATOR(pg_catalog.||) o.oid::pg_catalog.regoperator::pg_catalog.text
	  FROM refs JOIN pg_catalog.pg_operator o ON o.oid OPERATOR(pg_catalog.=) refs.refobjid
	 WHERE refs.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_operator'::pg_catalog.regclass
	UNION ALL
	SELECT f.oid, f.why FROM ty, LATERAL (VALUES (ty.typinput::pg_catalog.oid, 'input function'), (ty.typoutput, 'output function'),
		(ty.typreceive, 'receive function'), (ty.typsend, 'send function'), (ty.typmodin, 'type modifier input function'),
		(ty.typmodout, 'type modifier output function'), (ty.typsubscript, 'subscript handler')) f(oid, why)
	UNION ALL
	SELECT c.castfunc, 'cast ' OPERATOR(pg_catalog.||) pg_catalog.format_type(c.castsource, NULL) OPERATOR(pg_catalog.||) ' -> ' OPERATOR(pg_catalog.||) pg_catalog.format_type(c.casttarget, NULL)
	  FROM pg_catalog.pg_cast c, ty
	 WHERE $2 AND c.castfunc OPERATOR(pg_catalog.<>) 0
	   AND ((c.castsource OPERATOR(pg_catalog.=) ty.oid AND c.casttarget OPERATOR(pg_catalog.=) 'pg_catalog.text'::pg_catalog.regtype)
	     OR (c.casttarget OPERATOR(pg_catalog.=) ty.oid AND c.castsource OPERATOR(pg_catalog.=) 'pg_catalog.text'::pg_catalog.regtype))
)
SELECT pg_catalog.format_type(ty.oid, NULL),
       ty.typbasetype::pg_catalog.oid, ty.typelem::pg_catalog.oid,
       COALESCE((SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid OPERATOR(pg_catalog.=) ty.oid), 0)::pg_catalog.oid,
       COALESCE((SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid OPERATOR(pg_catalog.=) ty.oid), 0)::pg_catalog.oid,
       ARRAY(SELECT a.atttypid FROM pg_catalog.pg_attribute a
              WHERE ty.typrelid OPERATOR(pg_catalog.<>) 0 AND a.attrelid OPERATOR(pg_catalog.=) ty.typrelid
                AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped)::pg_catalog.oid[],
       ARRAY(SELECT refs.refobjid FROM refs WHERE refs.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass)::pg_catalog.oid[],
       ARRAY(SELECT DISTINCT 'function ' OPERATOR(pg_catalog.||) p.oid::pg_catalog.regprocedure::pg_catalog.text
                    OPERATOR(pg_catalog.||) ' owned by role ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(r.rolname::pg_catalog.text)
                    OPERATOR(pg_catalog.||) ' (' OPERATOR(pg_catalog.||) funcs.why OPERATOR(pg_catalog.||) ')'
               FROM funcs JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) funcs.oid
               JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.proowner
              WHERE funcs.oid OPERATOR(pg_catalog.<>) 0 AND NOT r.rolsuper)::pg_catalog.text[]
  FROM ty`
