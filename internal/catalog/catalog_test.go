package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const schema = `
CREATE TABLE patient (uid varchar(36) PRIMARY KEY, first_name text, dob date, vitals jsonb, tags text[],
                      full_name text GENERATED ALWAYS AS (first_name || '!') STORED);
CREATE TABLE nokey (a text, b text);
CREATE TABLE altkey (code text NOT NULL, site int NOT NULL, note text, UNIQUE (site, code));
CREATE TABLE nullable_unique (code text UNIQUE, note text);
CREATE TABLE composite (site text, id int, note text, PRIMARY KEY (site, id));
CREATE TABLE clash (uid int PRIMARY KEY, note text, note_encrypted text);
CREATE SCHEMA lab; CREATE TABLE lab.orders (id bigint PRIMARY KEY, note text);
`

func resolve(t *testing.T, yaml string) ([]*Table, error) {
	t.Helper()
	conn := pgtest.Connect(t, pgtest.NewDatabase(t))
	if _, err := conn.Exec(context.Background(), schema); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("pgphi.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return Resolve(context.Background(), conn, cfg)
}

func TestResolveTypesAndKeys(t *testing.T) {
	tables, err := resolve(t, `version: 1
tables:
  patient:
    columns:
      first_name: { class: pii }
      dob: { class: pii }
      vitals: { class: phi }
  altkey:
    columns: { note: { class: phi } }
  composite:
    columns: { note: { class: phi } }
  lab.orders:
    columns: { note: { class: phi } }
`)
	if err != nil {
		t.Fatal(err)
	}
	p := tables[0]
	if p.PrimaryKey[0].Name != "uid" || p.PrimaryKey[0].Type != "character varying(36)" || !p.KeyIsPrimary {
		t.Fatalf("patient key: %+v", p.PrimaryKey)
	}
	if p.Protected[1].Type != "date" || p.Protected[2].Type != "jsonb" {
		t.Fatalf("types: %+v", p.Protected)
	}
	if a := tables[1]; a.KeyIsPrimary || len(a.PrimaryKey) != 2 || a.PrimaryKey[0].Name != "site" {
		t.Fatalf("unique not-null key not used: %+v", a.PrimaryKey)
	}
	if c := tables[2]; len(c.PrimaryKey) != 2 || c.PrimaryKey[1].Type != "integer" {
		t.Fatalf("composite: %+v", c.PrimaryKey)
	}
	if o := tables[3]; o.QualifiedName() != "lab.orders" || o.Ident() != `"lab"."orders"` {
		t.Fatalf("schema-qualified: %s", o.QualifiedName())
	}
}

func TestResolveRefusals(t *testing.T) {
	cases := []struct {
		name, yaml, want string
		line             int
	}{
		{"unknown table", "version: 1\ntables:\n  patients:\n    columns: { a: { class: pii } }\n", "table public.patients does not exist", 3},
		{"unknown column", "version: 1\ntables:\n  patient:\n    columns:\n      first_nme: { class: pii }\n", `column "first_nme" does not exist`, 5},
		{"no key", "version: 1\ntables:\n  nokey:\n    columns: { a: { class: pii } }\n", "has no primary key or unique not-null key", 3},
		{"nullable unique is no key", "version: 1\ntables:\n  nullable_unique:\n    columns: { note: { class: pii } }\n", "has no primary key", 3},
		{"configured key not a key", "version: 1\ntables:\n  patient:\n    primary_key: first_name\n    columns: { dob: { class: pii } }\n", "is not a primary key or unique not-null key", 3},
		{"generated", "version: 1\ntables:\n  patient:\n    columns:\n      full_name: { class: pii }\n", "generated column", 5},
		{"array", "version: 1\ntables:\n  patient:\n    columns:\n      tags: { class: pii }\n", "is an array", 5},
		{"key column", "version: 1\ntables:\n  composite:\n    columns:\n      site: { class: pii }\n", "part of its key", 5},
		{"ciphertext clash", "version: 1\ntables:\n  clash:\n    columns:\n      note: { class: pii }\n", "already has a column \"note_encrypted\"", 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := resolve(t, c.yaml)
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("want config error, got %v", err)
			}
			if !strings.Contains(err.Error(), c.want) || ce.Line != c.line || ce.Fix == "" {
				t.Fatalf("got %q at line %d, want %q at line %d", err, ce.Line, c.want, c.line)
			}
		})
	}
}
