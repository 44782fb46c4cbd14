package engine

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/catalog"
)

// originalType turns the type a cleaned column had, as recorded in
// pgphi.protected_columns.original_type, into SQL that rollback may paste
// into ALTER TABLE ... ADD COLUMN and a cast. The recorded text is never
// used itself: it must name an existing type (to_regtype parses a type name
// and nothing else), and what is returned is the catalog's own spelling,
// pg_catalog.format_type(oid, typmod), whose typmod is recomputed from the
// recorded modifiers and must give back exactly the recorded text. Anything
// else (another statement, a comment, a type that does not exist) is
// refused. The type's text conversion is checked as for a protected column
// (catalog.UntrustedTypeCode): rollback casts text back into it.
func originalType(ctx context.Context, tx pgx.Tx, t *Target, c *TargetColumn) (string, error) {
	stored := c.Type
	fail := func(why string) error {
		return fmt.Errorf("%w: rollback of %s.%s: the original type recorded in pgphi.protected_columns %s; correct original_type to the column's type as format_type() spells it, and roll back again",
			ErrRefused, t.QualifiedName(), c.Name, why)
	}
	if stored == "" || len(stored) > 200 || strings.ContainsAny(stored, ";\x00\n\r") || strings.Contains(stored, "--") || strings.Contains(stored, "/*") {
		return "", fail("is not a type name")
	}
	oid, err := regtype(ctx, tx, stored, "")
	if err != nil {
		return "", err
	}
	if oid == 0 && !strings.ContainsAny(stored, `."`) {
		// Recorded by a pgphi that ran without a pinned search_path: an
		// unqualified name of a type in the table's schema. pg_catalog comes
		// first, so no type there can stand in for a built-in one.
		if oid, err = regtype(ctx, tx, stored, t.Schema); err != nil {
			return "", err
		}
	}
	if oid == 0 {
		return "", fail("does not name an existing type")
	}
	typ, err := canonicalType(ctx, tx, oid, stored, t.Schema)
	if err != nil {
		return "", err
	}
	if typ == "" {
		return "", fail("is not the catalog's spelling of a type")
	}
	found, err := catalog.UntrustedTypeCode(ctx, tx, oid)
	if err != nil {
		return "", fmt.Errorf("rollback of %s.%s: inspecting type %s: %w", t.QualifiedName(), c.Name, typ, err)
	}
	if len(found) > 0 {
		return "", fmt.Errorf("%w: rollback of %s.%s: converting text back to type %s runs %s", ErrRefused, t.QualifiedName(), c.Name, typ, found[0])
	}
	return typ, nil
}

// regtype resolves a type name with to_regtype inside a savepoint (a
// malformed name raises an error in PostgreSQL 15 instead of returning
// NULL); schema, when set, is searched after pg_catalog. 0: no such type.
func regtype(ctx context.Context, tx pgx.Tx, name, schema string) (uint32, error) {
	var oid uint32
	err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		if schema != "" {
			if _, err := sp.Exec(ctx, "SELECT pg_catalog.set_config('search_path', 'pg_catalog, ' || pg_catalog.quote_ident($1), true)", schema); err != nil {
				return err
			}
		}
		var o *uint32
		if err := sp.QueryRow(ctx, "SELECT pg_catalog.to_regtype($1)::pg_catalog.oid", name).Scan(&o); err != nil {
			return err
		}
		if o != nil {
			oid = *o
		}
		if schema != "" {
			_, err := sp.Exec(ctx, "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)")
			return err
		}
		return nil
	})
	if err != nil {
		var pgErr interface{ SQLState() string }
		if errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.SQLState(), "42") || strings.HasPrefix(pgErr.SQLState(), "22")) {
			return 0, nil // a syntax error or the like: not a type name
		}
		return 0, err
	}
	return oid, nil
}

var typmodArgs = regexp.MustCompile(`\((\d{1,10}(?:,\d{1,10})?)\)`)

// canonicalType finds the typmod with which format_type(oid, typmod)
// spells stored exactly (as format_type spelled it when pgphi recorded it,
// with the search_path of then) and returns format_type's spelling under
// pgphi's pinned search_path. "" when there is none.
func canonicalType(ctx context.Context, tx pgx.Tx, oid uint32, stored, schema string) (string, error) {
	spell := func(sql string, args ...any) (string, error) {
		var got, now *string
		err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
			// Compare under the search_path the name was resolved with;
			// return the spelling under pgphi's own.
			if schema != "" && !strings.ContainsAny(stored, `."`) {
				if _, err := sp.Exec(ctx, "SELECT pg_catalog.set_config('search_path', 'pg_catalog, ' || pg_catalog.quote_ident($1), true)", schema); err != nil {
					return err
				}
			}
			var typmod *int32
			if err := sp.QueryRow(ctx, sql, args...).Scan(&typmod); err != nil {
				return err
			}
			if typmod == nil {
				return nil
			}
			if err := sp.QueryRow(ctx, "SELECT pg_catalog.format_type($1::pg_catalog.oid, $2)", oid, *typmod).Scan(&got); err != nil {
				return err
			}
			if _, err := sp.Exec(ctx, "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)"); err != nil {
				return err
			}
			return sp.QueryRow(ctx, "SELECT pg_catalog.format_type($1::pg_catalog.oid, $2)", oid, *typmod).Scan(&now)
		})
		if err != nil {
			var pgErr interface{ SQLState() string }
			if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.SQLState(), "22") {
				return "", nil // modifiers the type refuses
			}
			return "", err
		}
		if got == nil || *got != stored || now == nil {
			return "", nil
		}
		return *now, nil
	}
	// No modifiers.
	if typ, err := spell("SELECT (-1)::pg_catalog.int4"); err != nil || typ != "" {
		return typ, err
	}
	// Modifiers in parentheses, through the type's own modifier input
	// function when PostgreSQL defines it (varchar, numeric, timestamp, ...).
	if m := typmodArgs.FindStringSubmatch(stored); m != nil {
		var proname *string
		if err := tx.QueryRow(ctx, `SELECT p.proname::pg_catalog.text FROM pg_catalog.pg_type ty
			JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) ty.typmodin
			JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
			WHERE ty.oid OPERATOR(pg_catalog.=) $1::pg_catalog.oid AND n.nspname OPERATOR(pg_catalog.=) 'pg_catalog'`, oid).Scan(&proname); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return "", err
		}
		if proname != nil && regexp.MustCompile(`^[a-z0-9_]+$`).MatchString(*proname) {
			typ, err := spell("SELECT pg_catalog."+ident(*proname)+"($1::pg_catalog.cstring[])", "{"+m[1]+"}")
			if err != nil || typ != "" {
				return typ, err
			}
		}
	}
	// Interval fields ("interval year to month", "interval day to
	// second(3)"): typmod is (range << 16) | precision, over the field
	// ranges the grammar allows (datetime.h: MONTH 1<<1, YEAR 1<<2, DAY 1<<3,
	// HOUR 1<<10, MINUTE 1<<11, SECOND 1<<12; 0x7FFF all).
	if strings.HasPrefix(stored, "interval") {
		return spell(`SELECT m FROM (SELECT (r OPERATOR(pg_catalog.<<) 16) OPERATOR(pg_catalog.|) p AS m
			FROM (VALUES (4), (2), (8), (1024), (2048), (4096), (6), (1032), (3080), (7176), (3072), (7168), (6144), (32767)) f(r),
			     (VALUES (0), (1), (2), (3), (4), (5), (6), (65535)) v(p)) s
			WHERE pg_catalog.format_type($1::pg_catalog.oid, m) OPERATOR(pg_catalog.=) $2 LIMIT 1`, oid, stored)
	}
	return "", nil
}
