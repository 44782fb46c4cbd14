package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Fuzz target of the config loader. Seeds are the example configs, the
// error cases of the tests and YAML oddities, also in testdata/fuzz/; run with
//
//	go test -run '^$' -fuzz FuzzParse -fuzztime 60s ./config/

var fuzzSeedConfigs = []string{
	"",
	"---\n",
	"~\n",
	"[]\n",
	"version: 1\n",
	"version: 1\ntables: {}\n",
	"version: 1\ntables:\n  p:\n    columns: {a: {class: pii}}\n",
	"version: 1\ntabels: {}\n",
	"version: 7\ntables: {}\n",
	"version: 1\ntables:\n  p: [\n",
	"version: 1\ntables:\n  p:\n    primary_key: [a, b]\n    columns:\n      a: { class: pii }\n",
	"version: 1\ntables:\n  p:\n    columns: {a: {class: pii}}\n  public.p:\n    columns: {a: {class: pii}}\n",
	"version: 1\napply: { batch_size: -3 }\ntables:\n  p:\n    columns: {a: {class: pii}}\n",
	"version: 1\napply: { lock_timeout: soon, adaptive: yes }\ntables:\n  p:\n    columns: {a: {class: pii}}\n",
	"version: !!int 0x1\ntables:\n  p:\n    columns: {a: {class: pii}}\n",
	"version: 1\nsearch: { prefix_min: 6, prefix_max: 4, token_size: 9, fold_accents: false, phone_region: ke }\ntables:\n  p:\n    columns: {a: {class: pii}}\n",
	"version: 1\ntables:\n  p:\n    columns:\n      a: { class: pii, search: [exact, exakt], search_options: { bits: { exact: 57 } } }\n",
	"version: 1\ntables:\n  p:\n    columns:\n      a: { class: pii, validate: { not_null: true, pattern: '(', max_length: 0 } }\n",
	"version: 1\ndatabase: { url: postgres://x, tls: { mode: verify-full, pin_sha256: [a, b] } }\ntables:\n  p:\n    columns: {a: {class: pii}}\n",
	"version: 1\nhooks: { timeout: 1s, pre_execute: [a.sh], bogus: x }\ntables:\n  p:\n    columns: {a: {class: pii}}\n",
	"version: 1\naccess: { roles: { dba: x }, allow_superuser: true }\napprovals: { signers: s, require: { production: { dba: 1 } } }\ntables:\n  p:\n    columns: {a: {class: pii}}\n",
	"version: 1\naudit: { file: a.jsonl, public_key: \"ssh-rsa AAAA\" }\ntables:\n  pgphi.x:\n    columns: {a: {class: pii}}\n",
	"version: 1\nencryption: { column_suffix: _enc, max_value_bytes: 10 }\ntables:\n  .p:\n    columns: {a: {class: pii}}\n",
	"base: &b { class: pii }\nversion: 1\ntables:\n  p:\n    columns: { a: *b, c: { <<: *b } }\n",
	"version: 1\nversion: 1\n",
	"version: 1\ntables:\n  p:\n    columns: {a: {class: pii}}\n---\nversion: 2\n",
	"\tversion: 1\n",
	"version: 1\ntables:\n  p:\n    columns:\n      a: { class: [pii] }\n",
	"version: 1\ntables:\n  ? [a, b]\n  : columns: {a: {class: pii}}\n",
	"version: 1\nvalidation: { on_violation: warn }\nenvironment: prod uction\ntables:\n  p:\n    columns: {a: {class: pii}}\n",
}

// FuzzParse: Parse never panics; every error is a *Error naming the file,
// with a fix when it points at a line; a config it accepts has version 1,
// at least one table, and every column a known class and known search kinds.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeedConfigs {
		f.Add([]byte(s))
	}
	for _, name := range []string{"testdata/felicity.yaml"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	const path = "conf/pgphi.yaml"
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		cfg, err := Parse(path, data)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error is %T, not *config.Error: %v", err, err)
			}
			if ce.File != path || !strings.HasPrefix(err.Error(), filepath.Clean(path)+":") {
				t.Fatalf("error does not name the file: %q", err)
			}
			if ce.Line < 0 {
				t.Fatalf("error has line %d: %q", ce.Line, err)
			}
			if ce.Msg == "" {
				t.Fatalf("error has no message: %q", err)
			}
			if cfg != nil {
				t.Fatal("Parse returned a config and an error")
			}
			return
		}
		if cfg == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		if cfg.Version != Version || len(cfg.Tables) == 0 || cfg.Path != path {
			t.Fatalf("accepted config with version %d, %d tables, path %q", cfg.Version, len(cfg.Tables), cfg.Path)
		}
		for _, tb := range cfg.Tables {
			if tb.Schema == "" || tb.Name == "" || len(tb.Columns) == 0 {
				t.Fatalf("accepted table %q.%q with %d columns", tb.Schema, tb.Name, len(tb.Columns))
			}
			for _, c := range tb.Columns {
				if !slices.Contains(Classes, c.Class) {
					t.Fatalf("accepted column %s with class %q", c.Name, c.Class)
				}
				for _, k := range c.Search {
					if !slices.Contains(SearchKinds, k) {
						t.Fatalf("accepted column %s with search kind %q", c.Name, k)
					}
				}
				if slices.Contains(tb.PrimaryKey, c.Name) {
					t.Fatalf("accepted encrypting key column %s", c.Name)
				}
			}
		}
		if cfg.Apply.BatchSize <= 0 || cfg.Apply.Workers <= 0 || cfg.Apply.LockTimeout <= 0 {
			t.Fatalf("accepted apply settings %+v", cfg.Apply)
		}
	})
}
