package catalog

import (
	"context"
	"fmt"
	"strings"
)

// What pgphi does with an object that depends on a protected column.
const (
	ActionCarried  = "carried over"
	ActionReplaced = "replaced by" // followed by the search kinds, e.g. "replaced by exact, prefix search"
	ActionWarned   = "warned"
	ActionRefused  = "refused"
)

// Where a dependency stops pgphi, before anything changes.
const (
	BlocksPlan    = "plan"    // plan and apply refuse (foreign keys)
	BlocksCheck   = "check"   // `pgphi check` fails and cleanup refuses (views, policies, ...)
	BlocksCleanup = "cleanup" // cleanup refuses (uniqueness pgphi cannot carry over to a digest column)
)

// Dependency is one object that depends on a protected column, and what
// pgphi does with it. It names objects, never values: no definition or
// expression text is kept.
type Dependency struct {
	Table  string `json:"table"`            // schema.table of the protected column
	Column string `json:"column"`           // the protected column
	Kind   string `json:"kind"`             // "not null", "default", "comment", "unique", "primary key", "unique index", "check", "domain", "index", "foreign key", "view", "materialized view", "rule", "policy", "generated column", "publication", "statistics", "trigger", "function"
	Object string `json:"object,omitempty"` // the object's (qualified) name
	Action string `json:"action"`           // ActionCarried, ActionReplaced..., ActionWarned, ActionRefused
	Detail string `json:"detail"`           // what happens to it, or what to do
	Blocks string `json:"blocks,omitempty"` // BlocksPlan, BlocksCheck, BlocksCleanup or ""
}

// String is the dependency on one line: "public.patient.mrn: unique patient_mrn_key (refused: ...)".
func (d Dependency) String() string {
	s := d.Table + "." + d.Column + ": " + d.Kind
	if d.Object != "" {
		s += " " + d.Object
	}
	return s + " (" + d.Action + ": " + d.Detail + ")"
}

// PgphiConstraintPrefix starts the names of the constraints pgphi adds to
// application tables; discovery reports them as pgphi's own.
const PgphiConstraintPrefix = "pgphi_"

// Dependencies lists, for each protected column of t whose plaintext is still
// there, every object that depends on it, from the catalog (pg_depend where
// the catalog records the dependency; column lists and function sources
// otherwise). encryptedSuffix is the ciphertext columns' suffix; the search
// kinds come from t's config.
func Dependencies(ctx context.Context, q Querier, t *Table, encryptedSuffix string) ([]Dependency, error) {
	var out []Dependency
	rules, err := UniqueRules(ctx, q, t)
	if err != nil {
		return nil, err
	}
	uniqs := map[string]uniqueOf{}
	for i, col := range UniqColumns(rules) {
		uniqs[rules[i].Object] = uniqueOf{rules[i], col}
		uniqs[rules[i].Index] = uniqueOf{rules[i], col}
	}
	for i, c := range t.Protected {
		if c.Cleaned != nil {
			continue
		}
		var kinds []string
		if t.Config != nil && i < len(t.Config.Columns) {
			kinds = t.Config.Columns[i].Search
		}
		deps, err := columnDependencies(ctx, q, t, c.Name, c.Name+encryptedSuffix, kinds, uniqs)
		if err != nil {
			return nil, fmt.Errorf("reading what depends on %s.%s: %w", t.QualifiedName(), c.Name, err)
		}
		out = append(out, deps...)
	}
	return out, nil
}

// uniqueOf is a unique rule and its digest column ("" when refused).
type uniqueOf struct {
	rule   UniqueRule
	column string
}

// uniqueAction is what pgphi does with a unique rule.
func (u uniqueOf) action() (action, detail, blocks string) {
	if u.column == "" {
		return ActionRefused, "cleanup refuses while it exists: pgphi cannot enforce it on ciphertext (" + u.rule.Refusal + "); drop it before cleanup, or keep the plaintext", BlocksCleanup
	}
	d := "enforced from expand on by " + u.column + " (a keyed digest of the value under the type's own equality, with a unique index"
	if u.rule.Predicate != "" {
		d += " and the same predicate"
	}
	if u.rule.NullsNotDistinct {
		d += ", NULLS NOT DISTINCT"
	}
	return ActionCarried, d + "): a duplicate is refused before and after cleanup; rollback restores the constraint", ""
}

func columnDependencies(ctx context.Context, q Querier, t *Table, col, enc string, kinds []string, uniqs map[string]uniqueOf) ([]Dependency, error) {
	var out []Dependency
	add := func(kind, object, action, detail, blocks string) {
		out = append(out, Dependency{Table: t.QualifiedName(), Column: col, Kind: kind, Object: object, Action: action, Detail: detail, Blocks: blocks})
	}
	var relid uint32
	var attnum int16
	var notNull, hasDefault, generated, hasComment bool
	var domain string
	err := q.QueryRow(ctx, `
		SELECT a.attrelid, a.attnum, a.attnotnull,
		       CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.contypid OPERATOR(pg_catalog.=) a.atttypid)
		            THEN a.atttypid::pg_catalog.regtype::pg_catalog.text ELSE '' END,
		       EXISTS (SELECT 1 FROM pg_catalog.pg_attrdef d WHERE d.adrelid OPERATOR(pg_catalog.=) a.attrelid AND d.adnum OPERATOR(pg_catalog.=) a.attnum),
		       a.attgenerated OPERATOR(pg_catalog.<>) '',
		       pg_catalog.col_description(a.attrelid, a.attnum) IS NOT NULL
		FROM pg_catalog.pg_attribute a
		WHERE a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND a.attname OPERATOR(pg_catalog.=) $2 AND NOT a.attisdropped`,
		t.Ident(), col).Scan(&relid, &attnum, &notNull, &domain, &hasDefault, &generated, &hasComment)
	if err != nil {
		return nil, err
	}
	replaced := ""
	if len(kinds) > 0 {
		replaced = ActionReplaced + " " + strings.Join(kinds, ", ") + " search"
	}

	// NOT NULL, default, comment: pg_attribute, pg_attrdef, pg_description.
	if notNull {
		add("not null", "", ActionCarried, fmt.Sprintf("from expand on, CHECK (%s IS NOT NULL OR %s IS NOT NULL) instead (validated without blocking writes); after cleanup %s is NOT NULL; rollback restores NOT NULL", col, enc, enc), "")
	}
	if hasDefault && !generated {
		add("default", "", ActionWarned, "the default writes plaintext: under require_encryption the trigger refuses it (drop the default at cutover); dropped with the plaintext at cleanup, restored by rollback", "")
	}
	if hasComment {
		add("comment", "", ActionCarried, "copied to "+enc+" at cleanup, and back to the plaintext by a rollback after cleanup", "")
	}
	if domain != "" {
		add("domain", domain, ActionCarried, "its constraints become a pgphi validation rule: checked when a value is sealed (application API) and by verify", "")
	}

	// Constraints on the column, and foreign keys from other tables to it.
	rows, err := q.Query(ctx, `
		SELECT c.contype::pg_catalog.text, c.conname::pg_catalog.text, c.conrelid::pg_catalog.regclass::pg_catalog.text,
		       c.conrelid OPERATOR(pg_catalog.=) $1 AND $2 OPERATOR(pg_catalog.=) ANY (c.conkey),
		       COALESCE(pg_catalog.array_length(c.conkey, 1), 0)
		FROM pg_catalog.pg_constraint c
		WHERE (c.conrelid OPERATOR(pg_catalog.=) $1 AND $2 OPERATOR(pg_catalog.=) ANY (c.conkey))
		   OR (c.confrelid OPERATOR(pg_catalog.=) $1 AND $2 OPERATOR(pg_catalog.=) ANY (c.confkey))
		ORDER BY c.conname`, relid, attnum)
	if err != nil {
		return nil, err
	}
	type con struct {
		typ, name, rel string
		local          bool
		ncols          int
	}
	var cons []con
	for rows.Next() {
		var c con
		if err := rows.Scan(&c.typ, &c.name, &c.rel, &c.local, &c.ncols); err != nil {
			rows.Close()
			return nil, err
		}
		cons = append(cons, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	uniqueDetail := "cleanup refuses while it exists: pgphi cannot enforce it on ciphertext; drop it before cleanup, or keep the plaintext"
	uniqueDep := func(kind, name, obj string) {
		if u, ok := uniqs[name]; ok {
			a, d, b := u.action()
			add(kind, obj, a, d, b)
			return
		}
		add(kind, obj, ActionRefused, uniqueDetail, BlocksCleanup)
	}
	for _, c := range cons {
		cols := ""
		if c.ncols > 1 {
			cols = fmt.Sprintf(" (%d columns)", c.ncols)
		}
		switch {
		case c.typ == "f":
			dir := "references another table's key"
			if !c.local {
				dir = "on " + c.rel + " references this column"
			}
			add("foreign key", c.name, ActionRefused, dir+": randomized encryption cannot be referenced; drop the constraint or leave the column unprotected", BlocksPlan)
		case c.typ == "c" && strings.HasPrefix(c.name, PgphiConstraintPrefix):
			add("not null", c.name, ActionCarried, fmt.Sprintf("pgphi's CHECK (%s IS NOT NULL OR %s IS NOT NULL) stands for the original NOT NULL; after cleanup %s is NOT NULL", col, enc, enc), "")
		case c.typ == "c" && c.ncols == 1:
			add("check", c.name, ActionCarried, "becomes a pgphi validation rule: checked when a value is sealed (application API) and by verify; dropped with the plaintext at cleanup, restored by rollback", "")
		case c.typ == "c":
			add("check", c.name+cols, ActionWarned, "uses other columns too, so pgphi cannot check it on one sealed value: enforced on the plaintext until cleanup, dropped with it (listed in its output), restored by rollback", "")
		case c.typ == "u":
			uniqueDep("unique", c.name, c.name+cols)
		case c.typ == "p":
			uniqueDep("primary key", c.name, c.name+cols)
		case c.typ == "x":
			add("exclusion constraint", c.name+cols, ActionRefused, uniqueDetail, BlocksCleanup)
		default:
			add("constraint", c.name+cols, ActionWarned, "dropped with the plaintext at cleanup", "")
		}
	}

	// Indexes that no constraint owns: plain, expression, partial, unique.
	rows, err = q.Query(ctx, `
		SELECT i.indexrelid::pg_catalog.regclass::pg_catalog.text, i.indisunique, i.indexprs IS NOT NULL, i.indpred IS NOT NULL, i.indnatts
		FROM pg_catalog.pg_index i
		WHERE i.indrelid OPERATOR(pg_catalog.=) $1
		  AND ($2 OPERATOR(pg_catalog.=) ANY (i.indkey::pg_catalog.int2[])
		       OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
		                  WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
		                    AND d.objid OPERATOR(pg_catalog.=) i.indexrelid
		                    AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
		                    AND d.refobjid OPERATOR(pg_catalog.=) $1 AND d.refobjsubid OPERATOR(pg_catalog.=) $2))
		  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c
		                  WHERE c.conindid OPERATOR(pg_catalog.=) i.indexrelid AND c.conrelid OPERATOR(pg_catalog.=) $1
		                    AND c.contype OPERATOR(pg_catalog.=) ANY ('{p,u,x}'::pg_catalog."char"[]))
		ORDER BY 1`, relid, attnum)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var name string
		var unique, expr, partial bool
		var natts int
		if err := rows.Scan(&name, &unique, &expr, &partial, &natts); err != nil {
			rows.Close()
			return nil, err
		}
		var what []string
		if expr {
			what = append(what, "expression")
		}
		if partial {
			what = append(what, "partial")
		}
		if natts > 1 {
			what = append(what, fmt.Sprintf("%d columns", natts))
		}
		obj := name
		if len(what) > 0 {
			obj += " (" + strings.Join(what, ", ") + ")"
		}
		switch {
		case unique:
			uniqueDep("unique index", name, obj)
		case replaced != "":
			add("index", obj, replaced, "dropped with the plaintext at cleanup (listed in its output; rollback re-creates it concurrently); queries search through the blind index instead", "")
		default:
			add("index", obj, ActionWarned, "dropped with the plaintext at cleanup (listed in its output; rollback re-creates it concurrently): queries through it lose their index; configure search: for the column if they must stay fast", "")
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	// Everything else the catalog records in pg_depend against the column.
	rows, err = q.Query(ctx, `
		WITH d AS (
		  SELECT d.classid, d.objid, d.objsubid FROM pg_catalog.pg_depend d
		  WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
		    AND d.refobjid OPERATOR(pg_catalog.=) $1 AND d.refobjsubid OPERATOR(pg_catalog.=) $2)
		SELECT DISTINCT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'rule' END,
		       CASE WHEN r.rulename OPERATOR(pg_catalog.=) '_RETURN' THEN r.ev_class::pg_catalog.regclass::pg_catalog.text
		            ELSE r.rulename::pg_catalog.text OPERATOR(pg_catalog.||) ' on ' OPERATOR(pg_catalog.||) r.ev_class::pg_catalog.regclass::pg_catalog.text END
		FROM d JOIN pg_catalog.pg_rewrite r ON r.oid OPERATOR(pg_catalog.=) d.objid
		JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.ev_class
		WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass
		UNION
		SELECT 'policy', p.polname::pg_catalog.text
		FROM d JOIN pg_catalog.pg_policy p ON p.oid OPERATOR(pg_catalog.=) d.objid
		WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_policy'::pg_catalog.regclass
		UNION
		SELECT 'generated column', a.attname::pg_catalog.text
		FROM d JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) d.objid AND a.attnum OPERATOR(pg_catalog.=) d.objsubid
		WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) $1
		  AND d.objsubid OPERATOR(pg_catalog.<>) $2 AND a.attgenerated OPERATOR(pg_catalog.<>) ''
		UNION
		SELECT 'generated column', a.attname::pg_catalog.text
		FROM d JOIN pg_catalog.pg_attrdef ad ON ad.oid OPERATOR(pg_catalog.=) d.objid
		JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) ad.adrelid AND a.attnum OPERATOR(pg_catalog.=) ad.adnum
		WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND a.attgenerated OPERATOR(pg_catalog.<>) ''
		UNION
		SELECT 'publication', p.pubname::pg_catalog.text
		FROM d JOIN pg_catalog.pg_publication_rel pr ON pr.oid OPERATOR(pg_catalog.=) d.objid
		JOIN pg_catalog.pg_publication p ON p.oid OPERATOR(pg_catalog.=) pr.prpubid
		WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_publication_rel'::pg_catalog.regclass
		UNION
		SELECT 'statistics', s.stxnamespace::pg_catalog.regnamespace::pg_catalog.text OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) s.stxname::pg_catalog.text
		FROM pg_catalog.pg_statistic_ext s
		WHERE s.stxrelid OPERATOR(pg_catalog.=) $1
		  AND ($2 OPERATOR(pg_catalog.=) ANY (s.stxkeys::pg_catalog.int2[])
		       OR s.oid IN (SELECT d.objid FROM d WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass))
		ORDER BY 1, 2`, relid, attnum)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var kind, name string
		if err := rows.Scan(&kind, &name); err != nil {
			rows.Close()
			return nil, err
		}
		switch kind {
		case "view", "materialized view":
			add(kind, name, ActionRefused, fmt.Sprintf("it reads the plaintext, which cleanup drops: recreate it over %s (decrypt in the application, or select the ciphertext) before cleanup (README, \"What depends on a protected column\")", enc), BlocksCheck)
		case "rule":
			add(kind, name, ActionRefused, "it uses the plaintext, which cleanup drops: rewrite or drop it before cleanup", BlocksCheck)
		case "policy":
			add(kind, name, ActionRefused, "row-level security on the plaintext cannot hold after cleanup: rewrite it over other columns before cleanup", BlocksCheck)
		case "generated column":
			add(kind, name, ActionRefused, "it is computed from the plaintext (and is plaintext-derived itself): drop it, or protect what it needs otherwise, before cleanup", BlocksCheck)
		case "publication":
			add(kind, name, ActionRefused, "its column list or row filter names the plaintext: remove the column from the publication before cleanup", BlocksCheck)
		case "statistics":
			add(kind, name, ActionWarned, "dropped (or reduced) with the plaintext at cleanup (listed in its output)", "")
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	// Whole-table publications send the plaintext to subscribers until cleanup.
	rows, err = q.Query(ctx, `
		SELECT p.pubname::pg_catalog.text FROM pg_catalog.pg_publication p
		WHERE p.puballtables
		   OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr
		              WHERE pr.prpubid OPERATOR(pg_catalog.=) p.oid AND pr.prrelid OPERATOR(pg_catalog.=) $1
		                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
		                                WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_publication_rel'::pg_catalog.regclass
		                                  AND d.objid OPERATOR(pg_catalog.=) pr.oid AND d.refobjsubid OPERATOR(pg_catalog.=) $2))
		ORDER BY 1`, relid, attnum)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return nil, err
		}
		add("publication", name, ActionWarned, "publishes the whole table: subscribers receive the plaintext until cleanup and keep their copies", "")
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	// Application triggers on the table that name the column (column list,
	// WHEN clause through pg_depend, or function source), and other
	// functions whose source names both the table and the column: best
	// effort, they may read the plaintext.
	rows, err = q.Query(ctx, `
		SELECT 'trigger', t.tgname::pg_catalog.text OPERATOR(pg_catalog.||) ' (' OPERATOR(pg_catalog.||) t.tgfoid::pg_catalog.regprocedure::pg_catalog.text OPERATOR(pg_catalog.||) ')',
		       $2 OPERATOR(pg_catalog.=) ANY (t.tgattr::pg_catalog.int2[])
		       OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
		                  WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_trigger'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) t.oid
		                    AND d.refobjid OPERATOR(pg_catalog.=) $1 AND d.refobjsubid OPERATOR(pg_catalog.=) $2)
		FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.tgfoid
		WHERE t.tgrelid OPERATOR(pg_catalog.=) $1 AND NOT t.tgisinternal
		  AND t.tgname::pg_catalog.text NOT LIKE 'zz\_pgphi\_%'
		  AND ($2 OPERATOR(pg_catalog.=) ANY (t.tgattr::pg_catalog.int2[])
		       OR pg_catalog.strpos(pg_catalog.lower(p.prosrc), pg_catalog.lower($3)) OPERATOR(pg_catalog.>) 0
		       OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
		                  WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_trigger'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) t.oid
		                    AND d.refobjid OPERATOR(pg_catalog.=) $1 AND d.refobjsubid OPERATOR(pg_catalog.=) $2))
		UNION ALL
		(SELECT 'function', p.oid::pg_catalog.regprocedure::pg_catalog.text, false
		FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
		JOIN pg_catalog.pg_language l ON l.oid OPERATOR(pg_catalog.=) p.prolang
		WHERE n.nspname OPERATOR(pg_catalog.<>) ALL ('{pg_catalog,information_schema,pgphi,pg_toast}'::pg_catalog.name[])
		  AND l.lanname OPERATOR(pg_catalog.<>) ALL ('{c,internal}'::pg_catalog.name[])
		  AND pg_catalog.strpos(pg_catalog.lower(p.prosrc), pg_catalog.lower($3)) OPERATOR(pg_catalog.>) 0
		  AND pg_catalog.strpos(pg_catalog.lower(p.prosrc), pg_catalog.lower($4)) OPERATOR(pg_catalog.>) 0
		  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid OPERATOR(pg_catalog.=) $1 AND t.tgfoid OPERATOR(pg_catalog.=) p.oid)
		  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
		                    AND d.objid OPERATOR(pg_catalog.=) p.oid AND d.deptype OPERATOR(pg_catalog.=) 'e')
		ORDER BY 2 LIMIT 20)`, relid, attnum, col, t.Name)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var kind, name string
		var bound bool
		if err := rows.Scan(&kind, &name, &bound); err != nil {
			rows.Close()
			return nil, err
		}
		if bound {
			add(kind, name, ActionRefused, "its column list or WHEN clause names the plaintext, which cleanup drops: rewrite it over "+enc+" (e.g. UPDATE OF "+enc+") before cleanup", BlocksCheck)
			continue
		}
		detail := "may read the plaintext (best effort: its source names the column): after cutover it sees NULL; read " + enc + " instead"
		if kind == "trigger" {
			detail += "; pgphi's triggers fire after it, so it sees the row the application wrote"
		}
		add(kind, name, ActionWarned, detail, "")
	}
	rows.Close()
	return out, rows.Err()
}
