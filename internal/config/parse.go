package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Parse checks data as the content of the file at path. It refuses unknown
// keys, wrong types and impossible values, naming the line of each.
func Parse(path string, data []byte) (*Config, error) {
	cfg := Defaults()
	cfg.Path = path
	p := &parser{path: path}

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, p.yamlError(err)
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: path, Msg: "config file is empty", Fix: "run `pgphi init` to write a starting pgphi.yaml"}
	}
	root := doc.Content[0]
	sawVersion, sawTables := false, false
	err := p.mapping(root, "top level", []string{"version", "environment", "actor", "database", "encryption", "keys", "backup", "apply", "search", "audit", "approvals", "access", "hooks", "validation", "tables"}, func(key string, k, v *yaml.Node) error {
		switch key {
		case "version":
			sawVersion = true
			n, err := p.integer(v, key)
			if err != nil {
				return err
			}
			if n != Version {
				return p.errorf(v, fmt.Sprintf("set `version: %d`", Version), "unsupported config version %d", n)
			}
			cfg.Version = n
		case "environment":
			s, err := p.str(v, key)
			if err != nil {
				return err
			}
			if !slices.Contains(Environments, s) {
				return p.errorf(v, "use one of "+strings.Join(Environments, ", "), "unknown environment %q%s", s, suggestEnvironment(s))
			}
			cfg.Environment = s
		case "actor":
			var err error
			cfg.Actor, err = p.str(v, key)
			return err
		case "database":
			return p.mapping(v, "database", []string{"url", "tls"}, func(key string, k, v *yaml.Node) error {
				if key == "tls" {
					return p.tls(v, &cfg.Database.TLS)
				}
				s, err := p.str(v, "database.url")
				cfg.Database.URL = s
				return err
			})
		case "backup":
			return p.mapping(v, "backup", []string{"max_age", "age_recipients"}, func(key string, k, v *yaml.Node) error {
				switch key {
				case "max_age":
					d, err := p.duration(v, "backup.max_age") // positive
					cfg.Backup.MaxAge = d
					return err
				case "age_recipients":
					l, _, err := p.stringList(v, "backup.age_recipients")
					for _, r := range l {
						if err == nil && !strings.HasPrefix(r, "age1") {
							err = p.errorf(v, "list X25519 recipients as printed by age-keygen (age1...)", "backup.age_recipients: %q is not an age X25519 recipient", r)
						}
					}
					cfg.Backup.AgeRecipients = l
					return err
				}
				return nil
			})
		case "audit":
			return p.mapping(v, "audit", []string{"file", "signing_key", "public_key"}, func(key string, k, v *yaml.Node) error {
				s, err := p.str(v, "audit."+key)
				switch key {
				case "file":
					cfg.Audit.File = s
				case "signing_key":
					cfg.Audit.SigningKey = s
				case "public_key":
					cfg.Audit.PublicKey = s
					if err == nil && !strings.HasPrefix(s, "ssh-ed25519 ") {
						err = p.errorf(v, "paste the auditor's key as `ssh-ed25519 AAAA...`", "audit.public_key is not an ssh-ed25519 public key")
					}
				}
				return err
			})
		case "approvals":
			cfg.Approvals.Line = k.Line
			return p.mapping(v, "approvals", []string{"signers", "require"}, func(key string, k, v *yaml.Node) error {
				if key == "signers" {
					s, err := p.str(v, "approvals.signers")
					cfg.Approvals.Signers = s
					return err
				}
				cfg.Approvals.Require = map[string]map[string]int{}
				return p.mapping(v, "approvals.require", nil, func(env string, k, v *yaml.Node) error {
					cfg.Approvals.Require[env] = map[string]int{}
					return p.mapping(v, "approvals.require."+env, Roles, func(role string, k, v *yaml.Node) error {
						n, err := p.positive(v, role)
						cfg.Approvals.Require[env][role] = n
						return err
					})
				})
			})
		case "access":
			return p.mapping(v, "access", []string{"roles", "allow_superuser"}, func(key string, k, v *yaml.Node) error {
				if key == "allow_superuser" {
					b, err := p.boolean(v, key)
					cfg.Access.AllowSuperuser = &b
					return err
				}
				cfg.Access.Roles = map[string]string{}
				return p.mapping(v, "access.roles", Roles, func(role string, k, v *yaml.Node) error {
					s, err := p.str(v, role)
					cfg.Access.Roles[role] = s
					return err
				})
			})
		case "hooks":
			cfg.Hooks.Phases = map[string][]string{}
			return p.mapping(v, "hooks", append([]string{"timeout"}, HookPhases...), func(key string, k, v *yaml.Node) error {
				if key == "timeout" {
					d, err := p.duration(v, key)
					cfg.Hooks.Timeout = d
					return err
				}
				cmds, _, err := p.stringList(v, "hooks."+key)
				cfg.Hooks.Phases[key] = cmds
				return err
			})
		case "validation":
			return p.mapping(v, "validation", []string{"on_violation"}, func(key string, k, v *yaml.Node) error {
				s, err := p.str(v, key)
				if err == nil && s != "fail" && s != "warn" {
					err = p.errorf(v, "use fail or warn", "validation.on_violation must be fail or warn")
				}
				cfg.Validation.OnViolation = s
				return err
			})
		case "encryption":
			return p.mapping(v, "encryption", []string{"column_suffix", "max_value_bytes"}, func(key string, k, v *yaml.Node) error {
				switch key {
				case "column_suffix":
					s, err := p.str(v, key)
					if err != nil {
						return err
					}
					if !suffixRe.MatchString(s) {
						return p.errorf(v, "use lower-case letters, digits and '_', e.g. _encrypted", "invalid column_suffix %q", s)
					}
					cfg.Encryption.ColumnSuffix = s
				case "max_value_bytes":
					n, err := p.positive(v, key)
					cfg.Encryption.MaxValueBytes = n
					return err
				}
				return nil
			})
		case "keys":
			return p.keys(v, &cfg.Keys)
		case "apply":
			return p.mapping(v, "apply", []string{"batch_size", "chunk_rows", "workers", "lock_timeout", "ddl_retries", "max_rate", "adaptive", "canary_query", "max_replication_lag"}, func(key string, k, v *yaml.Node) error {
				var err error
				switch key {
				case "max_rate":
					var n int
					n, err = p.positive(v, key)
					cfg.Apply.MaxRate = float64(n)
				case "adaptive":
					cfg.Apply.Adaptive, err = p.boolean(v, key)
				case "canary_query":
					cfg.Apply.CanaryQuery, err = p.str(v, key)
				case "max_replication_lag":
					cfg.Apply.MaxReplicationLag, err = p.duration(v, key)
				case "batch_size":
					cfg.Apply.BatchSize, err = p.positive(v, key)
				case "chunk_rows":
					cfg.Apply.ChunkRows, err = p.positive(v, key)
				case "workers":
					cfg.Apply.Workers, err = p.positive(v, key)
				case "ddl_retries":
					cfg.Apply.DDLRetries, err = p.positive(v, key)
				case "lock_timeout":
					cfg.Apply.LockTimeout, err = p.duration(v, key)
				}
				return err
			})
		case "search":
			return p.searchOptions(v, "search", &cfg.Search, false)
		case "tables":
			sawTables = true
			return p.mapping(v, "tables", nil, func(name string, k, v *yaml.Node) error {
				t, err := p.table(name, k, v)
				if err != nil {
					return err
				}
				for _, prev := range cfg.Tables {
					if prev.QualifiedName() == t.QualifiedName() {
						return p.errorf(k, "list each table once", "table %s is configured twice (first at line %d)", t.QualifiedName(), prev.Line)
					}
				}
				cfg.Tables = append(cfg.Tables, t)
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !sawVersion {
		return nil, &Error{File: path, Line: root.Line, Msg: "missing `version`", Fix: fmt.Sprintf("add `version: %d` at the top", Version)}
	}
	if !sawTables || len(cfg.Tables) == 0 {
		return nil, &Error{File: path, Line: root.Line, Msg: "no tables configured", Fix: "list the PHI columns under `tables:` (see `pgphi init --suggest`)"}
	}
	return &cfg, nil
}

var (
	suffixRe = regexp.MustCompile(`^_[a-z0-9_]+$`)
	hexRe    = regexp.MustCompile(`^(0x)?([0-9a-fA-F]{2})+$`)
)

// keys parses the `keys:` section: where the key-encryption key is.
func (p *parser) keys(n *yaml.Node, k *Keys) error {
	k.Slot = -1
	err := p.mapping(n, "keys", []string{"kek", "module", "token", "serial", "slot", "key_label", "key_id", "mechanism", "pin_file", "pin", "passphrase"}, func(key string, kn, v *yaml.Node) error {
		var err error
		switch key {
		case "pin", "passphrase":
			return p.errorf(kn, "give it in a file of mode 0600: `pin_file: /etc/pgphi/pin`, or PGPHI_PKCS11_PIN_FILE / PGPHI_PASSPHRASE_FILE",
				"keys.%s: a secret never goes in the config file", key)
		case "kek":
			k.KEK, err = p.str(v, "keys.kek")
			if err == nil && !slices.Contains([]string{"passphrase", "keyfile", "pkcs11"}, k.KEK) {
				err = p.errorf(v, "use passphrase, keyfile or pkcs11", "unknown keys.kek %q", k.KEK)
			}
		case "module":
			k.Module, err = p.str(v, "keys.module")
		case "token":
			k.Token, err = p.str(v, "keys.token")
		case "serial":
			k.Serial, err = p.str(v, "keys.serial")
		case "slot":
			k.Slot, err = p.integer(v, "keys.slot")
			if err == nil && k.Slot < 0 {
				err = p.errorf(v, "give the slot id, 0 or more", "keys.slot is negative")
			}
		case "key_label":
			k.KeyLabel, err = p.str(v, "keys.key_label")
		case "key_id":
			k.KeyID, err = p.str(v, "keys.key_id")
			if err == nil && !hexRe.MatchString(k.KeyID) {
				err = p.errorf(v, "give CKA_ID in hexadecimal, e.g. `key_id: \"01\"`", "keys.key_id %q is not hexadecimal", k.KeyID)
			}
		case "mechanism":
			k.Mechanism, err = p.str(v, "keys.mechanism")
			if err == nil && !slices.Contains([]string{"auto", "kwp", "pad", "gcm"}, k.Mechanism) {
				err = p.errorf(v, "use auto, kwp, pad or gcm", "unknown keys.mechanism %q", k.Mechanism)
			}
		case "pin_file":
			k.PinFile, err = p.str(v, "keys.pin_file")
		}
		return err
	})
	if err != nil {
		return err
	}
	pkcs11 := k.Module != "" || k.Token != "" || k.Serial != "" || k.Slot >= 0 || k.KeyLabel != "" || k.KeyID != "" || k.Mechanism != "" || k.PinFile != ""
	switch {
	case pkcs11 && k.KEK != "pkcs11":
		return p.errorf(n, "add `kek: pkcs11`, or remove the PKCS#11 settings", "keys: module, token, key and PIN settings are for `kek: pkcs11`")
	case k.KEK == "pkcs11" && k.Module == "":
		return p.errorf(n, "add `module: /path/to/vendor-pkcs11.so` (SoftHSM: /usr/lib/softhsm/libsofthsm2.so)", "keys: `kek: pkcs11` needs the module")
	case k.KEK == "pkcs11" && k.Token == "" && k.Serial == "" && k.Slot < 0:
		return p.errorf(n, "add `token: LABEL` (or serial, or slot)", "keys: `kek: pkcs11` needs the token")
	case k.KEK == "pkcs11" && k.KeyLabel == "" && k.KeyID == "":
		return p.errorf(n, "add `key_label: LABEL` (or key_id)", "keys: `kek: pkcs11` needs the key")
	}
	return nil
}

type parser struct{ path string }

func (p *parser) errorf(n *yaml.Node, fix, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: p.path, Line: line, Msg: fmt.Sprintf(format, args...), Fix: fix}
}

var yamlLineRe = regexp.MustCompile(`line (\d+)`)

func (p *parser) yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = strings.TrimSpace(yamlLineRe.ReplaceAllString(msg, ""))
		msg = strings.TrimPrefix(msg, ": ")
	}
	return &Error{File: p.path, Line: line, Msg: "not valid YAML: " + msg, Fix: "check indentation and quoting on that line"}
}

// mapping walks a YAML mapping, refusing keys outside allowed (nil allows any).
func (p *parser) mapping(n *yaml.Node, where string, allowed []string, fn func(key string, k, v *yaml.Node) error) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errorf(n, "write it as `key: value` lines", "%s must be a mapping", where)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if allowed != nil && !slices.Contains(allowed, key) {
			return p.errorf(k, "allowed keys here: "+strings.Join(allowed, ", "), "unknown key %q in %s%s", key, where, suggest(key, allowed))
		}
		if prev, dup := seen[key]; dup {
			return p.errorf(k, "remove one of them", "key %q appears twice in %s (first at line %d)", key, where, prev)
		}
		seen[key] = k.Line
		if err := fn(key, k, v); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) str(n *yaml.Node, key string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", p.errorf(n, "give a single value", "%s must be a string", key)
	}
	return n.Value, nil
}

func (p *parser) integer(n *yaml.Node, key string) (int, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		return 0, p.errorf(n, "write a whole number", "%s must be an integer", key)
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil {
		return 0, p.errorf(n, "write a whole number", "%s must be an integer", key)
	}
	return v, nil
}

func (p *parser) positive(n *yaml.Node, key string) (int, error) {
	v, err := p.integer(n, key)
	if err == nil && v <= 0 {
		err = p.errorf(n, "use a number greater than zero", "%s must be positive, got %d", key, v)
	}
	return v, err
}

func (p *parser) boolean(n *yaml.Node, key string) (bool, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return false, p.errorf(n, "write true or false", "%s must be true or false", key)
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		return false, p.errorf(n, "write true or false", "%s must be true or false", key)
	}
	return b, nil
}

func (p *parser) duration(n *yaml.Node, key string) (time.Duration, error) {
	s, err := p.str(n, key)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, p.errorf(n, "write a duration such as 2s or 500ms", "%s: invalid duration %q", key, s)
	}
	return d, nil
}

func (p *parser) stringList(n *yaml.Node, key string) ([]string, int, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, n.Line, nil
		}
		return []string{n.Value}, n.Line, nil
	case yaml.SequenceNode:
		var out []string
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return nil, 0, p.errorf(item, "write a list of names, e.g. [a, b]", "%s must be a list of names", key)
			}
			out = append(out, item.Value)
		}
		return out, n.Line, nil
	}
	return nil, 0, p.errorf(n, "write a list of names, e.g. [a, b]", "%s must be a name or a list of names", key)
}

func (p *parser) table(name string, k, v *yaml.Node) (Table, error) {
	t := Table{Schema: "public", Name: name, Line: k.Line}
	if schema, table, ok := strings.Cut(name, "."); ok {
		t.Schema, t.Name = schema, table
	}
	if t.Schema == "" || t.Name == "" || strings.Contains(t.Name, ".") {
		return t, p.errorf(k, "write table or schema.table", "invalid table name %q", name)
	}
	if t.Schema == "pgphi" {
		return t, p.errorf(k, "the pgphi schema holds pgphi's own state; protect application tables only", "table %s is in pgphi's own schema", name)
	}
	sawColumns := false
	err := p.mapping(v, "table "+name, []string{"primary_key", "columns"}, func(key string, k, v *yaml.Node) error {
		switch key {
		case "primary_key":
			pk, _, err := p.stringList(v, "primary_key")
			if err != nil {
				return err
			}
			if len(pk) == 0 {
				return p.errorf(v, "name the key column(s) or remove the line to use the catalog's primary key", "primary_key is empty")
			}
			t.PrimaryKey = pk
		case "columns":
			sawColumns = true
			return p.mapping(v, "columns of "+name, nil, func(col string, k, v *yaml.Node) error {
				c, err := p.column(name, col, k, v)
				if err == nil {
					t.Columns = append(t.Columns, c)
				}
				return err
			})
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	if !sawColumns || len(t.Columns) == 0 {
		return t, p.errorf(k, "list the PHI columns under `columns:`", "table %s has no columns", name)
	}
	for _, c := range t.Columns {
		if slices.Contains(t.PrimaryKey, c.Name) {
			return t, p.errorf(k, "a primary key column stays in plaintext: it is what ciphertexts are bound to; use a surrogate key", "column %s of table %s is part of its primary key and cannot be encrypted", c.Name, name)
		}
	}
	return t, nil
}

func (p *parser) column(table, name string, k, v *yaml.Node) (Column, error) {
	c := Column{Name: name, Line: k.Line}
	where := "column " + table + "." + name
	err := p.mapping(v, where, []string{"class", "search", "search_options", "validate"}, func(key string, k, v *yaml.Node) error {
		switch key {
		case "class":
			s, err := p.str(v, key)
			if err != nil {
				return err
			}
			if !slices.Contains(Classes, s) {
				return p.errorf(v, "use class: pii or class: phi", "unknown class %q in %s", s, where)
			}
			c.Class = s
		case "search":
			kinds, _, err := p.stringList(v, "search")
			if err != nil {
				return err
			}
			for _, kind := range kinds {
				if !slices.Contains(SearchKinds, kind) {
					return p.errorf(v, "search kinds: "+strings.Join(SearchKinds, ", "), "unknown search kind %q in %s%s", kind, where, suggest(kind, SearchKinds))
				}
				if slices.Contains(c.Search, kind) {
					return p.errorf(v, "list each kind once", "search kind %q listed twice in %s", kind, where)
				}
				c.Search = append(c.Search, kind)
			}
		case "search_options":
			return p.searchOptions(v, "search_options of "+where, &c.SearchOptions, true)
		case "validate":
			return p.mapping(v, "validate of "+where, []string{"not_null", "pattern", "max_length"}, func(key string, k, v *yaml.Node) error {
				var err error
				switch key {
				case "not_null":
					c.Validate.NotNull, err = p.boolean(v, key)
				case "pattern":
					c.Validate.Pattern, err = p.str(v, key)
					if err == nil {
						if _, rerr := regexp.Compile(c.Validate.Pattern); rerr != nil {
							err = p.errorf(v, "write a valid RE2 regular expression", "invalid pattern in %s", where)
						}
					}
				case "max_length":
					c.Validate.MaxLength, err = p.positive(v, key)
				}
				return err
			})
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	if c.Class == "" {
		return c, p.errorf(k, "add class: pii (identifying) or class: phi (health information)", "%s has no class", where)
	}
	return c, nil
}

// suggest returns ` (did you mean "x"?)` for a near miss.
func suggest(got string, options []string) string {
	best, bestDist := "", 3
	for _, o := range options {
		if d := editDistance(got, o); d < bestDist {
			best, bestDist = o, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// suggestEnvironment is suggest for environment names, where abbreviations
// ("prod", "dev") are the usual near misses.
func suggestEnvironment(got string) string {
	g := strings.ToLower(got)
	for _, e := range Environments {
		if g != "" && (strings.HasPrefix(e, g) || strings.HasPrefix(g, e) || g == e) {
			return fmt.Sprintf(" (did you mean %q?)", e)
		}
	}
	return suggest(g, Environments)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

var regionRe = regexp.MustCompile(`^[A-Z]{2}$`)

func (p *parser) tls(n *yaml.Node, t *TLS) error {
	return p.mapping(n, "database.tls", []string{"mode", "ca", "cert", "key", "pin_sha256"}, func(key string, k, v *yaml.Node) error {
		if key == "pin_sha256" {
			pins, _, err := p.stringList(v, "pin_sha256")
			t.PinSHA256 = pins
			return err
		}
		s, err := p.str(v, "database.tls."+key)
		switch key {
		case "mode":
			if err == nil && !slices.Contains([]string{"disable", "require", "verify-ca", "verify-full"}, s) {
				err = p.errorf(v, "use disable, require, verify-ca or verify-full", "unknown TLS mode %q", s)
			}
			t.Mode = s
		case "ca":
			t.CA = s
		case "cert":
			t.Cert = s
		case "key":
			t.Key = s
		}
		return err
	})
}

func (p *parser) searchOptions(n *yaml.Node, where string, o *SearchOptions, column bool) error {
	allowed := []string{"prefix_min", "prefix_max", "token_size", "fold_accents", "phone_region"}
	if column {
		allowed = append(allowed, "bits", "accept_leakage")
	}
	err := p.mapping(n, where, allowed, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "prefix_min":
			o.PrefixMin, err = p.positive(v, key)
		case "prefix_max":
			o.PrefixMax, err = p.positive(v, key)
		case "token_size":
			o.TokenSize, err = p.positive(v, key)
			if err == nil && (o.TokenSize < 2 || o.TokenSize > 8) {
				err = p.errorf(v, "use 2 to 8 (3, trigrams, is the default)", "token_size %d out of range", o.TokenSize)
			}
		case "fold_accents":
			var b bool
			b, err = p.boolean(v, key)
			o.FoldAccents = &b
		case "phone_region":
			o.PhoneRegion, err = p.str(v, key)
			if err == nil && !regionRe.MatchString(o.PhoneRegion) {
				err = p.errorf(v, "use a two-letter region code such as US, GB, KE", "invalid phone_region %q", o.PhoneRegion)
			}
		case "accept_leakage":
			o.AcceptLeakage, err = p.str(v, key)
			if err == nil && (strings.TrimSpace(o.AcceptLeakage) == "" || len(o.AcceptLeakage) > 500) {
				err = p.errorf(v, "give the reason the column may leak more, in at most 500 characters", "accept_leakage needs a reason")
			}
		case "bits":
			o.Bits = map[string]int{}
			return p.mapping(v, "bits of "+where, nil, func(sub string, k, v *yaml.Node) error {
				b, err := p.positive(v, "bits."+sub)
				if err == nil && (b < 1 || b > 56) {
					err = p.errorf(v, "use 1 to 56 bits", "bits.%s = %d out of range", sub, b)
				}
				o.Bits[sub] = b
				return err
			})
		}
		return err
	})
	if err == nil && o.PrefixMin > 0 && o.PrefixMax > 0 && o.PrefixMin > o.PrefixMax {
		err = p.errorf(n, "make prefix_min at most prefix_max", "prefix_min %d is greater than prefix_max %d", o.PrefixMin, o.PrefixMax)
	}
	if err == nil && o.PrefixMax > 12 {
		err = p.errorf(n, "index at most 12-character prefixes; longer queries are filtered after decryption", "prefix_max %d is too long", o.PrefixMax)
	}
	return err
}
