package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/pgphi/pgphi/unique"
)

// UniqueRule is a UNIQUE constraint, primary key or unique index whose key
// columns include a protected column, and whether pgphi can carry it over
// to a <col>_uniq digest column (package unique).
type UniqueRule struct {
	Object           string   // the constraint's name, or the index's for an index no constraint owns
	Kind             string   // "unique", "primary key" or "unique index"
	Index            string   // the index (schema-qualified)
	Members          []string // key columns, in order
	MemberTypes      []string // base type of each member
	NullsNotDistinct bool
	Predicate        string // partial index predicate as PostgreSQL prints it; "" when none
	// Refusal says why pgphi cannot carry the rule ("" when it can): an
	// expression or a column that is not protected among its keys, a
	// protected column in its predicate or INCLUDE list, a nondeterministic
	// collation, a float or another type whose equality pgphi does not
	// reproduce, a deferrable constraint.
	Refusal string
}

// UniqueRules reads the unique rules of t that involve a protected column
// whose plaintext is still there.
func UniqueRules(ctx context.Context, q Querier, t *Table) ([]UniqueRule, error) {
	protected := map[string]bool{}
	for _, c := range t.Protected {
		if c.Cleaned == nil {
			protected[c.Name] = true
		}
	}
	if len(protected) == 0 {
		return nil, nil
	}
	rows, err := q.Query(ctx, `
		SELECT COALESCE(c.conname::pg_catalog.text, ic.relname::pg_catalog.text),
		       CASE c.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique' ELSE 'unique index' END,
		       i.indexrelid::pg_catalog.regclass::pg_catalog.text,
		       COALESCE(c.condeferrable, false),
		       i.indnullsnotdistinct,
		       COALESCE(pg_catalog.pg_get_expr(i.indpred, i.indrelid), ''),
		       ARRAY(SELECT COALESCE(a.attname::pg_catalog.text, '')
		             FROM pg_catalog.generate_series(0, i.indnkeyatts - 1) k
		             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) i.indkey[k] AND i.indkey[k] OPERATOR(pg_catalog.<>) 0
		             ORDER BY k),
		       ARRAY(SELECT COALESCE(pg_catalog.format_type(COALESCE(NULLIF(ty.typbasetype, 0), ty.oid), NULL), '')
		             FROM pg_catalog.generate_series(0, i.indnkeyatts - 1) k
		             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) i.indkey[k] AND i.indkey[k] OPERATOR(pg_catalog.<>) 0
		             LEFT JOIN pg_catalog.pg_type ty ON ty.oid OPERATOR(pg_catalog.=) a.atttypid
		             ORDER BY k),
		       ARRAY(SELECT COALESCE(co.collisdeterministic, true)
		             FROM pg_catalog.generate_series(0, i.indnkeyatts - 1) k
		             LEFT JOIN pg_catalog.pg_collation co ON co.oid OPERATOR(pg_catalog.=) i.indcollation[k]
		             ORDER BY k),
		       ARRAY(SELECT DISTINCT a.attname::pg_catalog.text FROM pg_catalog.pg_depend d
		             JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) d.refobjid AND a.attnum OPERATOR(pg_catalog.=) d.refobjsubid
		             WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) i.indexrelid
		               AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid OPERATOR(pg_catalog.=) i.indrelid
		               AND d.refobjsubid OPERATOR(pg_catalog.>) 0),
		       ARRAY(SELECT a.attname::pg_catalog.text FROM pg_catalog.generate_series(i.indnkeyatts, i.indnatts - 1) k
		             JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) i.indkey[k])
		FROM pg_catalog.pg_index i
		JOIN pg_catalog.pg_class ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
		LEFT JOIN pg_catalog.pg_constraint c ON c.conindid OPERATOR(pg_catalog.=) i.indexrelid AND c.conrelid OPERATOR(pg_catalog.=) i.indrelid
		     AND c.contype OPERATOR(pg_catalog.=) ANY ('{p,u}'::pg_catalog."char"[])
		WHERE i.indrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND i.indisunique
		  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint x WHERE x.conindid OPERATOR(pg_catalog.=) i.indexrelid AND x.contype OPERATOR(pg_catalog.=) 'x')
		ORDER BY 1`, t.Ident())
	if err != nil {
		return nil, fmt.Errorf("reading the unique rules of %s: %w", t.QualifiedName(), err)
	}
	defer rows.Close()
	var out []UniqueRule
	for rows.Next() {
		var u UniqueRule
		var deferrable bool
		var deterministic []bool
		var depends, include []string
		if err := rows.Scan(&u.Object, &u.Kind, &u.Index, &deferrable, &u.NullsNotDistinct, &u.Predicate, &u.Members, &u.MemberTypes, &deterministic, &depends, &include); err != nil {
			return nil, fmt.Errorf("reading the unique rules of %s: %w", t.QualifiedName(), err)
		}
		// A constraint's index depends on the constraint, not on its
		// columns: its key columns count too.
		involved := false
		for _, d := range append(depends, u.Members...) {
			involved = involved || protected[d]
		}
		if !involved {
			continue
		}
		u.Refusal = uniqueRefusal(u, protected, deferrable, deterministic, depends, include)
		out = append(out, u)
	}
	return out, rows.Err()
}

func uniqueRefusal(u UniqueRule, protected map[string]bool, deferrable bool, deterministic []bool, depends, include []string) string {
	if deferrable {
		return "it is deferrable, the unique index pgphi builds is not"
	}
	for i, m := range u.Members {
		switch {
		case m == "":
			return "one of its keys is an expression"
		case !protected[m]:
			return "it mixes protected and unprotected columns (" + m + " is not protected)"
		case !deterministic[i]:
			return "column " + m + " has a nondeterministic collation: equal values have different bytes"
		}
		if err := unique.Supported(u.MemberTypes[i]); err != nil {
			return "column " + m + ": " + strings.TrimPrefix(err.Error(), "unique: ")
		}
	}
	for _, d := range depends {
		if protected[d] && !slices.Contains(u.Members, d) {
			return "its predicate or INCLUDE list uses protected column " + d
		}
	}
	for _, c := range include {
		if protected[c] {
			return "its INCLUDE list holds protected column " + c
		}
	}
	return ""
}

// UniqColumns names the digest column of each carried rule: <first member>_uniq,
// and <first member>_uniq_<8 hex digits of the rule's name> for a second
// rule led by the same column (rules in name order). Refused rules get "".
func UniqColumns(rules []UniqueRule) []string {
	out := make([]string, len(rules))
	taken := map[string]bool{}
	for i, u := range rules {
		if u.Refusal != "" {
			continue
		}
		name := u.Members[0] + "_uniq"
		if taken[name] {
			sum := sha256.Sum256([]byte(u.Object))
			name += "_" + hex.EncodeToString(sum[:4])
		}
		taken[name] = true
		out[i] = name
	}
	return out
}
