package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// removedObject is one object cleanup drops with the plaintext, as the DDL
// that recreates it (pgphi.removed_objects).
type removedObject struct {
	Kind, Name, Column, Definition string
}

// recordRemoved stores, in cleanup's transaction and before the drop, what
// dropping t's plaintext columns takes with it: their defaults, the
// constraints (CHECK, UNIQUE, primary key, exclusion) and indexes that use
// them, extended statistics, and the comments on those. (An application
// trigger whose column list or WHEN names a plaintext column stops cleanup
// before it starts: DROP COLUMN would refuse.) Every definition
// comes from PostgreSQL's own deparser (pg_get_expr, pg_get_constraintdef,
// pg_get_indexdef, pg_get_statisticsobjdef) under pgphi's session
// search_path (pg_catalog), so names outside it are schema-qualified.
// pgphi's own constraints (prefix pgphi_) are not recorded: rollback makes
// its own.
func (t *Target) recordRemoved(ctx context.Context, tx pgx.Tx) error {
	var cols []string
	for _, c := range t.Columns {
		cols = append(cols, c.Name)
	}
	rows, err := tx.Query(ctx, `
		WITH a AS (
		  SELECT attnum, attname FROM pg_catalog.pg_attribute
		  WHERE attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND attname OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[]) AND NOT attisdropped),
		cons AS (
		  SELECT c.oid, c.conname, c.contype, c.conindid FROM pg_catalog.pg_constraint c
		  WHERE c.conrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND c.conkey OPERATOR(pg_catalog.&&) (SELECT pg_catalog.array_agg(attnum) FROM a)
		    AND c.contype OPERATOR(pg_catalog.=) ANY ('{c,u,p,x}'::pg_catalog."char"[])
		    AND c.conname::pg_catalog.text NOT LIKE 'pgphi\_%'),
		idx AS (
		  SELECT DISTINCT i.indexrelid FROM pg_catalog.pg_index i
		  WHERE i.indrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
		    AND (i.indkey::pg_catalog.int2[] OPERATOR(pg_catalog.&&) (SELECT pg_catalog.array_agg(attnum) FROM a)
		         OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
		                      AND d.objid OPERATOR(pg_catalog.=) i.indexrelid AND d.refobjid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
		                      AND d.refobjsubid OPERATOR(pg_catalog.=) ANY (SELECT attnum FROM a))))
		SELECT 1 AS o, 'default', a.attname::pg_catalog.text, a.attname::pg_catalog.text,
		       pg_catalog.format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', $1, a.attname, pg_catalog.pg_get_expr(d.adbin, d.adrelid))
		FROM a JOIN pg_catalog.pg_attrdef d ON d.adrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND d.adnum OPERATOR(pg_catalog.=) a.attnum
		UNION ALL
		-- indexes, those of UNIQUE and primary keys included: built first, concurrently
		SELECT 2, 'index', c.relname::pg_catalog.text, NULL, pg_catalog.pg_get_indexdef(i.indexrelid)
		FROM idx i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
		WHERE NOT EXISTS (SELECT 1 FROM cons WHERE cons.conindid OPERATOR(pg_catalog.=) i.indexrelid AND cons.contype OPERATOR(pg_catalog.=) 'x')
		  AND c.relname::pg_catalog.text NOT LIKE 'pgphi\_%'
		UNION ALL
		SELECT 3, CASE cons.contype WHEN 'c' THEN 'check' WHEN 'u' THEN 'unique' WHEN 'p' THEN 'primary key' ELSE 'exclusion' END,
		       cons.conname::pg_catalog.text, NULL,
		       CASE WHEN cons.contype OPERATOR(pg_catalog.=) ANY ('{u,p}'::pg_catalog."char"[])
		            THEN pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s USING INDEX %I', $1, cons.conname,
		                   CASE cons.contype WHEN 'u' THEN 'UNIQUE' ELSE 'PRIMARY KEY' END,
		                   (SELECT relname FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) cons.conindid))
		            ELSE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', $1, cons.conname, pg_catalog.pg_get_constraintdef(cons.oid)) END
		FROM cons
		UNION ALL
		SELECT 4, 'statistics', s.stxname::pg_catalog.text, NULL, pg_catalog.pg_get_statisticsobjdef(s.oid)
		FROM pg_catalog.pg_statistic_ext s
		WHERE s.stxrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND s.stxkeys::pg_catalog.int2[] OPERATOR(pg_catalog.&&) (SELECT pg_catalog.array_agg(attnum) FROM a)
		UNION ALL
		SELECT 5, 'constraint comment', cons.conname::pg_catalog.text, NULL,
		       pg_catalog.format('COMMENT ON CONSTRAINT %I ON %s IS %L', cons.conname, $1, pg_catalog.obj_description(cons.oid, 'pg_constraint'))
		FROM cons WHERE pg_catalog.obj_description(cons.oid, 'pg_constraint') IS NOT NULL
		UNION ALL
		SELECT 6, 'index comment', c.relname::pg_catalog.text, NULL,
		       pg_catalog.format('COMMENT ON INDEX %I.%I IS %L', n.nspname, c.relname, pg_catalog.obj_description(c.oid, 'pg_class'))
		FROM idx i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
		WHERE pg_catalog.obj_description(c.oid, 'pg_class') IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM cons WHERE cons.conindid OPERATOR(pg_catalog.=) i.indexrelid)
		ORDER BY 1, 3`, t.Ident(), cols)
	if err != nil {
		return fmt.Errorf("recording what cleanup removes from %s: %w", t.QualifiedName(), err)
	}
	var objs []removedObject
	for rows.Next() {
		var o removedObject
		var order int
		var col *string
		if err := rows.Scan(&order, &o.Kind, &o.Name, &col, &o.Definition); err != nil {
			rows.Close()
			return fmt.Errorf("recording what cleanup removes from %s: %w", t.QualifiedName(), err)
		}
		if col != nil {
			o.Column = *col
		}
		objs = append(objs, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("recording what cleanup removes from %s: %w", t.QualifiedName(), err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM pgphi.removed_objects WHERE table_name = $1", t.QualifiedName()); err != nil {
		return err
	}
	for i, o := range objs {
		var col *string
		if o.Column != "" {
			col = &o.Column
		}
		if _, err := tx.Exec(ctx, `INSERT INTO pgphi.removed_objects (table_name, ordinal, kind, object_name, column_name, definition) VALUES ($1, $2, $3, $4, $5, $6)`,
			t.QualifiedName(), i+1, o.Kind, o.Name, col, o.Definition); err != nil {
			return fmt.Errorf("recording what cleanup removes from %s: %w", t.QualifiedName(), err)
		}
	}
	return nil
}

// restoreRemoved re-creates, in a rollback after cleanup once the plaintext
// is back and NOT NULL proven, what cleanup removed: defaults; indexes
// concurrently (those of UNIQUE and primary keys too, which then become
// the constraint through ADD CONSTRAINT ... USING INDEX without another
// scan); CHECKs added NOT VALID and validated under SHARE UPDATE EXCLUSIVE
// (writes go on); statistics and comments. Each object that exists already
// is skipped, so an interrupted rollback resumes. The definitions are
// pgphi's state, written only by pgphi's roles from PostgreSQL's deparser.
func (r *Runner) restoreRemoved(ctx context.Context, t *Target) error {
	rows, err := r.Pool.Query(ctx, `SELECT kind, object_name, definition FROM pgphi.removed_objects WHERE table_name = $1 ORDER BY ordinal`, t.QualifiedName())
	if err != nil {
		return fmt.Errorf("reading what cleanup removed from %s: %w", t.QualifiedName(), err)
	}
	objs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (removedObject, error) {
		var o removedObject
		err := r.Scan(&o.Kind, &o.Name, &o.Definition)
		return o, err
	})
	if err != nil {
		return fmt.Errorf("reading what cleanup removed from %s: %w", t.QualifiedName(), err)
	}
	exists := func(q string, args ...any) (bool, error) {
		var ok bool
		err := r.Pool.QueryRow(ctx, q, args...).Scan(&ok)
		return ok, err
	}
	conExists := func(name string) (bool, error) {
		return exists(`SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND conname OPERATOR(pg_catalog.=) $2)`, t.Ident(), name)
	}
	for _, o := range objs {
		what := fmt.Sprintf("rollback %s: restore %s %s", t.QualifiedName(), o.Kind, o.Name)
		switch o.Kind {
		case "index":
			var valid *bool
			if err := r.Pool.QueryRow(ctx, `SELECT i.indisvalid FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
				WHERE c.relnamespace OPERATOR(pg_catalog.=) $1::pg_catalog.regnamespace AND c.relname OPERATOR(pg_catalog.=) $2`, ident(t.Schema), o.Name).Scan(&valid); err != nil && err != pgx.ErrNoRows {
				return fmt.Errorf("%s: %w", what, err)
			}
			if valid != nil && *valid {
				continue
			}
			if valid != nil {
				if _, err := r.Pool.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+pgx.Identifier{t.Schema, o.Name}.Sanitize()); err != nil {
					return fmt.Errorf("%s: dropping an invalid leftover: %w", what, err)
				}
			}
			def, ok := concurrently(o.Definition)
			if !ok {
				return fmt.Errorf("%s: unexpected index definition", what)
			}
			if _, err := r.Pool.Exec(ctx, def); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
		case "check":
			validate := !strings.HasSuffix(o.Definition, " NOT VALID")
			var exists, valid bool
			if err := r.Pool.QueryRow(ctx, `SELECT count(*) > 0, COALESCE(bool_and(convalidated), false) FROM pg_catalog.pg_constraint
				WHERE conrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND conname OPERATOR(pg_catalog.=) $2`, t.Ident(), o.Name).Scan(&exists, &valid); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if exists && (valid || !validate) {
				continue
			}
			def := o.Definition
			if validate {
				def += " NOT VALID"
			}
			// An interrupted rollback may have added it without validating.
			if !exists {
				if err := r.ddl(ctx, what, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, def); return err }); err != nil {
					return err
				}
			}
			if validate {
				if err := r.ddl(ctx, what, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s", t.Ident(), ident(o.Name)))
					return err
				}); err != nil {
					return err
				}
			}
		case "unique", "primary key", "exclusion":
			if ok, err := conExists(o.Name); err != nil || ok {
				if err != nil {
					return fmt.Errorf("%s: %w", what, err)
				}
				continue
			}
			if err := r.ddl(ctx, what, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, o.Definition); return err }); err != nil {
				return err
			}
		case "statistics":
			var ok bool
			if err := r.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_statistic_ext WHERE stxrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND stxname OPERATOR(pg_catalog.=) $2)`,
				t.Ident(), o.Name).Scan(&ok); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if ok {
				continue
			}
			fallthrough
		default: // default, comments: idempotent
			if err := r.ddl(ctx, what, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, o.Definition); return err }); err != nil {
				return err
			}
		}
	}
	if len(objs) > 0 {
		r.logf("    %s: %d objects cleanup removed are back (defaults, constraints, indexes, statistics, comments)", t.QualifiedName(), len(objs))
	}
	return nil
}

// concurrently turns "CREATE [UNIQUE] INDEX name ON ..." into its
// CONCURRENTLY form.
func concurrently(def string) (string, bool) {
	for _, p := range []string{"CREATE UNIQUE INDEX ", "CREATE INDEX "} {
		if strings.HasPrefix(def, p) {
			return p + "CONCURRENTLY " + strings.TrimPrefix(def, p), true
		}
	}
	return "", false
}
