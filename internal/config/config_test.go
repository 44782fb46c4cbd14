package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBriefExampleLoads(t *testing.T) {
	cfg, err := Load("testdata/felicity.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Environment != "production" || len(cfg.Tables) != 5 {
		t.Fatalf("got env %q, %d tables", cfg.Environment, len(cfg.Tables))
	}
	p := cfg.Tables[0]
	if p.QualifiedName() != "public.patient" || len(p.Columns) != 7 || p.PrimaryKey[0] != "uid" {
		t.Fatalf("patient parsed wrong: %+v", p)
	}
	if p.Columns[2].Name != "last_name" || strings.Join(p.Columns[2].Search, ",") != "exact,prefix,contains,phonetic" {
		t.Fatalf("file order or search kinds lost: %+v", p.Columns[2])
	}
	if !cfg.Tables[1].Columns[0].Validate.NotNull {
		t.Fatal("validate.not_null lost")
	}
	if cfg.Tables[3].Columns[1].Name != "after" {
		t.Fatal("flow mapping order lost")
	}
}

func TestErrorsNameFileLineAndFix(t *testing.T) {
	cases := []struct {
		name, yaml, want string
		line             int
	}{
		{"unknown top key", "version: 1\ntabels: {}\n", `unknown key "tabels" in top level (did you mean "tables"?)`, 2},
		{"unknown column key", "version: 1\ntables:\n  patient:\n    columns:\n      first_name: { class: pii, serach: [exact] }\n", `unknown key "serach"`, 5},
		{"unknown class", "version: 1\ntables:\n  p:\n    columns:\n      a: { class: secret }\n", `unknown class "secret"`, 5},
		{"missing class", "version: 1\ntables:\n  p:\n    columns:\n      a: { search: [exact] }\n", `has no class`, 5},
		{"unknown search kind", "version: 1\ntables:\n  p:\n    columns:\n      a: { class: pii, search: [exakt] }\n", `did you mean "exact"`, 5},
		{"bad version", "version: 7\ntables: {}\n", "unsupported config version 7", 1},
		{"no version", "tables:\n  p:\n    columns:\n      a: { class: pii }\n", "missing `version`", 1},
		{"no tables", "version: 1\n", "no tables configured", 1},
		{"bad yaml", "version: 1\ntables:\n  p: [\n", "not valid YAML", 0},
		{"pk encrypted", "version: 1\ntables:\n  p:\n    primary_key: [a, b]\n    columns:\n      a: { class: pii }\n", "part of its primary key", 3},
		{"dup table", "version: 1\ntables:\n  p:\n    columns: {a: {class: pii}}\n  public.p:\n    columns: {a: {class: pii}}\n", "configured twice", 5},
		{"bad batch", "version: 1\napply: { batch_size: -3 }\ntables:\n  p:\n    columns: {a: {class: pii}}\n", "batch_size must be positive", 2},
		{"bad duration", "version: 1\napply: { lock_timeout: soon }\ntables:\n  p:\n    columns: {a: {class: pii}}\n", "invalid duration", 2},
		// "prod" got production TLS but no approvals; unknown
		// environment names are configuration errors now.
		{"environment prod", "version: 1\nenvironment: prod\ntables:\n  p:\n    columns: {a: {class: pii}}\n", `unknown environment "prod" (did you mean "production"?)`, 2},
		{"environment Production", "version: 1\nenvironment: Production\ntables:\n  p:\n    columns: {a: {class: pii}}\n", `unknown environment "Production" (did you mean "production"?)`, 2},
		{"environment stagign", "version: 1\nenvironment: stagign\ntables:\n  p:\n    columns: {a: {class: pii}}\n", `(did you mean "staging"?)`, 2},
		{"environment live", "version: 1\nenvironment: live\ntables:\n  p:\n    columns: {a: {class: pii}}\n", `unknown environment "live"`, 2},
		{"accept_leakage without reason", "version: 1\ntables:\n  p:\n    columns:\n      a: { class: pii, search: [exact], search_options: { accept_leakage: \"  \" } }\n", "accept_leakage needs a reason", 5},
		{"accept_leakage config-wide", "version: 1\nsearch: { accept_leakage: fast }\ntables:\n  p:\n    columns: {a: {class: pii}}\n", `unknown key "accept_leakage"`, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("conf/pgphi.yaml", []byte(c.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *Error, got %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "conf/pgphi.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			if c.line > 0 && ce.Line != c.line {
				t.Fatalf("error %q at line %d, want %d", err, ce.Line, c.line)
			}
			if ce.Fix == "" {
				t.Fatalf("error %q has no fix", err)
			}
		})
	}
}

func TestLocate(t *testing.T) {
	t.Setenv("PGPHI_CONFIG", "")
	if Locate("") != "pgphi.yaml" {
		t.Fatal("default")
	}
	t.Setenv("PGPHI_CONFIG", "/etc/x.yaml")
	if Locate("") != "/etc/x.yaml" || Locate("a.yaml") != "a.yaml" {
		t.Fatal("env or flag precedence wrong")
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "pgphi init") {
		t.Fatalf("got %v", err)
	}
	_ = os.Remove("x")
}

func TestCompositeKeyAndSchema(t *testing.T) {
	cfg, err := Parse("p.yaml", []byte("version: 1\ntables:\n  lab.orders:\n    primary_key: [site, id]\n    columns:\n      note: { class: phi }\n"))
	if err != nil {
		t.Fatal(err)
	}
	tb := cfg.Tables[0]
	if tb.Schema != "lab" || tb.Name != "orders" || len(tb.PrimaryKey) != 2 {
		t.Fatalf("%+v", tb)
	}
	if _, ok := cfg.Table("lab.orders"); !ok {
		t.Fatal("lookup")
	}
}

func TestOneNotionOfProduction(t *testing.T) {
	for _, env := range Environments {
		cfg, err := Parse("p.yaml", []byte("version: 1\nenvironment: "+env+"\ntables:\n  p:\n    columns: {a: {class: pii}}\n"))
		if err != nil {
			t.Fatalf("%s: %v", env, err)
		}
		if cfg.IsProduction() != (env == "production") || IsProductionEnvironment(env) != (env == "production") {
			t.Errorf("%s: IsProduction %v", env, cfg.IsProduction())
		}
		if cfg.SuperuserAllowed() == (env == "production") {
			t.Errorf("%s: superuser allowed by default = %v", env, cfg.SuperuserAllowed())
		}
	}
}
