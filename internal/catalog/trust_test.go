package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/pgtest"
)

// ownerSchema is created by the application owner, a login role that is not
// a superuser: every type, cast and function below is its code.
const ownerSchema = `
CREATE FUNCTION public.evil_text(m public.mood) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_catalog.set_config('pgphi_test.ran', 'yes', false); RETURN m::text; END $$;
CREATE FUNCTION public.evil_check(v text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RETURN v IS NOT NULL; END $$;
CREATE FUNCTION public.evil_mood(t text) RETURNS public.mood2 LANGUAGE plpgsql AS $$
BEGIN RETURN t::public.mood2; END $$;
CREATE CAST (public.mood AS text) WITH FUNCTION public.evil_text(public.mood);
CREATE CAST (text AS public.mood2) WITH FUNCTION public.evil_mood(text);
CREATE DOMAIN public.checked_text AS text CHECK (public.evil_check(VALUE));
CREATE DOMAIN public.plain_code AS text CHECK (length(VALUE) < 40 AND VALUE ~ '^[A-Z]');
CREATE DOMAIN public.checked_code AS public.plain_code CHECK (public.evil_check(VALUE));
CREATE TABLE public.t (id int PRIMARY KEY, cast_enum public.mood, in_cast_enum public.mood2, plain_enum public.calm,
	bad_domain public.checked_text, good_domain public.plain_code, nested_domain public.checked_code, note text);
CREATE TABLE public.k (m public.mood PRIMARY KEY, note text);
CREATE TABLE public.kd (d public.checked_text PRIMARY KEY, note text);
`

// resolveAsOwner builds ownerSchema as a non-superuser application owner and
// resolves yaml as the dba would.
func resolveAsOwner(t *testing.T, yaml string) ([]*Table, error) {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	a := pgtest.NewActors(t, url)
	owner := a.Connect(t, a.AppOwner)
	if _, err := owner.Exec(ctx, "CREATE TYPE public.mood AS ENUM ('sad', 'ok'); CREATE TYPE public.mood2 AS ENUM ('a', 'b'); CREATE TYPE public.calm AS ENUM ('x', 'y')"); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, ownerSchema); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("pgphi.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	// pgphi's own session (dbconn): search_path pg_catalog, pg_temp.
	conn, err := dbconn.Conn(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return Resolve(ctx, conn, cfg)
}

// TestUntrustedTypeCodeRefused: a protected or key column whose text
// conversion reaches code the application owner wrote is a configuration
// error naming table, column, type and owner.
func TestUntrustedTypeCodeRefused(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"enum with a cast to text", "version: 1\ntables:\n  t:\n    columns: { cast_enum: { class: pii } }\n",
			"public.evil_text(public.mood)"},
		{"enum with a cast from text", "version: 1\ntables:\n  t:\n    columns: { in_cast_enum: { class: pii } }\n",
			"public.evil_mood(text)"},
		{"domain CHECK calling a user function", "version: 1\ntables:\n  t:\n    columns: { bad_domain: { class: pii } }\n",
			"public.evil_check(text)"},
		{"domain over a domain with a user CHECK", "version: 1\ntables:\n  t:\n    columns: { nested_domain: { class: pii } }\n",
			"public.evil_check(text)"},
		{"key column with a cast to text", "version: 1\ntables:\n  k:\n    columns: { note: { class: pii } }\n",
			"key column public.k.m"},
		{"key domain with a user CHECK", "version: 1\ntables:\n  kd:\n    columns: { note: { class: pii } }\n",
			"key column public.kd.d"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := resolveAsOwner(t, c.yaml)
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("want a config error, got %v", err)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "owned by role app_owner_") || ce.Line == 0 {
				t.Fatalf("got %q at line %d, want it to name %q and the owner", err, ce.Line, c.want)
			}
		})
	}
}

// TestTrustedTypesAllowed: a plain enum the owner created (enum_out is
// PostgreSQL's) and a domain over text with a built-in CHECK are fine.
func TestTrustedTypesAllowed(t *testing.T) {
	tables, err := resolveAsOwner(t, "version: 1\ntables:\n  t:\n    columns: { plain_enum: { class: pii }, good_domain: { class: pii }, note: { class: pii } }\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := tables[0].Protected[0].Type; got != "public.calm" {
		t.Fatalf("type %q", got)
	}
}

// TestDottedNamesRefused: "a.b".c and a."b.c" would be bound to the same
// "schema.table" text; names with "." are refused so they never meet.
func TestDottedNamesRefused(t *testing.T) {
	ctx := context.Background()
	conn := pgtest.Connect(t, pgtest.NewDatabase(t))
	if _, err := conn.Exec(ctx, `CREATE SCHEMA "a.b"; CREATE TABLE "a.b".c (id int PRIMARY KEY, note text);
		CREATE SCHEMA a; CREATE TABLE a."b.c" (id int PRIMARY KEY, note text);
		CREATE TABLE a.d (id int PRIMARY KEY, "no.te" text)`); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ schema, table, column, want string }{
		{"a.b", "c", "note", `schema name "a.b"`},
		{"a", "b.c", "note", `table name "b.c"`},
		{"a", "d", "no.te", `column name "no.te"`},
	}
	for _, c := range cases {
		cfg, err := config.Parse("pgphi.yaml", []byte("version: 1\ntables:\n  a.x:\n    columns: { note: { class: pii } }\n"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Tables[0].Schema, cfg.Tables[0].Name, cfg.Tables[0].Columns[0].Name = c.schema, c.table, c.column
		_, err = Resolve(ctx, conn, cfg)
		var ce *config.Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s.%s.%s: want a config error naming %s, got %v", c.schema, c.table, c.column, c.want, err)
		}
	}
}
