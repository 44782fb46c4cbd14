// Package config owns pgphi.yaml: where it is found, what it may contain, and
// the errors a user sees when it is wrong. Every error names the file, the line
// and the fix. The config names tables and columns; their types come from the
// database catalog (package catalog), never from the file.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Version is the only config file version this build understands.
const Version = 1

// DefaultFile is the config file used when neither --config nor $PGPHI_CONFIG is set.
const DefaultFile = "pgphi.yaml"

// Config is a parsed and syntactically valid pgphi.yaml.
type Config struct {
	Path        string // file it was read from
	Version     int
	Environment string
	Actor       string // configured actor name recorded in the audit trail
	Database    Database
	Audit       Audit
	Approvals   Approvals
	Access      Access
	Hooks       Hooks
	Validation  Validation
	Encryption  Encryption
	Keys        Keys // where the key-encryption key is; the PGPHI_* variables override it
	Backup      Backup
	Apply       Apply
	Search      SearchOptions // defaults for every column's search_options
	Tables      []Table       // in file order
}

// Database says where the database is. Empty URL means: $DATABASE_URL, else libpq PG* variables.
type Database struct {
	URL string
	TLS TLS
}

// TLS says how to secure the database connection.
type TLS struct {
	Mode      string   // disable, require, verify-ca, verify-full; "" keeps the connection string's sslmode
	CA        string   // CA certificates (PEM), path relative to the config file
	Cert, Key string   // client certificate and key (PEM)
	PinSHA256 []string // SHA-256 of the server's public key (SubjectPublicKeyInfo), base64 or hex
}

// Audit says where the audit trail is mirrored and how checkpoints are signed.
type Audit struct {
	File       string // JSON-lines mirror of pgphi.audit_log
	SigningKey string // Ed25519 private key file for checkpoints (optional)
	PublicKey  string // "ssh-ed25519 AAAA..." the auditor verifies checkpoints with
}

// Approvals lists who may approve plans and how many approvals each environment needs.
type Approvals struct {
	Signers string                    // allowed signers file: NAME ROLE ssh-ed25519 KEY
	Require map[string]map[string]int // environment -> role -> count
	Line    int
}

// Access maps pgphi's roles to PostgreSQL group roles.
type Access struct {
	Roles          map[string]string // dba, healthcare_admin, audit_officer -> group role
	AllowSuperuser *bool             // default: true except in production
}

// Hooks are operator executables run at lifecycle phases.
type Hooks struct {
	Timeout time.Duration
	Phases  map[string][]string
}

// Validation says what a pre-migration validation failure does.
type Validation struct {
	OnViolation string // fail or warn; default fail in production, warn elsewhere
}

// Backup proposes the backup gates (`backup:`): they take effect only once
// pinned in the database, like the other security decisions.
type Backup struct {
	// MaxAge is how recent a verified backup production requires (0: the
	// default, 24h).
	MaxAge time.Duration
	// AgeRecipients are the X25519 age recipients ("age1...") of backups
	// taken with --format age, where FIPS 140 is not required.
	AgeRecipients []string
}

// DefaultBackupMaxAge is how recent a verified backup production requires
// when the configuration says nothing.
const DefaultBackupMaxAge = 24 * time.Hour

// Keys says where the key-encryption key comes from (`keys:` in the file):
// for a PKCS#11 token, the module, the token and the key. It never holds a
// secret: the PIN comes from PinFile or PGPHI_PKCS11_PIN[_FILE], a passphrase
// from PGPHI_PASSPHRASE[_FILE|_FD].
type Keys struct {
	KEK       string // passphrase, keyfile or pkcs11; "" leaves the choice to the environment
	Module    string // PKCS#11 module path
	Token     string // token label
	Serial    string // token serial number
	Slot      int    // slot id, -1 when not set
	KeyLabel  string // CKA_LABEL of the KEK
	KeyID     string // CKA_ID of the KEK, hexadecimal
	Mechanism string // auto, kwp, pad or gcm
	PinFile   string // file holding the PIN (mode 0600), relative to the config file
}

// Encryption holds the knobs of the encrypted columns pgphi adds.
type Encryption struct {
	// ColumnSuffix is appended to a column name to name its ciphertext column.
	ColumnSuffix string
	// MaxValueBytes bounds the canonical size of one plaintext value; a larger
	// value stops the run with an error naming table, column and primary key.
	MaxValueBytes int
}

// Apply holds the defaults of pgphi apply; flags override them.
type Apply struct {
	BatchSize   int           // rows per backfill transaction
	ChunkRows   int           // rows per leased chunk (unit of sharing between processes)
	Workers     int           // concurrent workers in one process
	LockTimeout time.Duration // lock_timeout for DDL; DDL retries with backoff after it
	DDLRetries  int

	MaxRate           float64       // rows per second cap; 0: none
	Adaptive          bool          // slow down while the canary query is slow
	CanaryQuery       string        // "" : a keyed read of the first protected table
	MaxReplicationLag time.Duration // pause while replicas lag more; 0: ignore
}

// Table is one protected table.
type Table struct {
	Schema     string   // "public" unless written as schema.table
	Name       string   // table name
	PrimaryKey []string // empty: taken from the catalog
	Columns    []Column // in file order
	Line       int
}

// QualifiedName is schema.table, the name used in plans, state and associated data.
func (t Table) QualifiedName() string { return t.Schema + "." + t.Name }

// Column is one protected column.
type Column struct {
	Name   string
	Class  string   // "pii" or "phi"
	Search []string // blind index kinds (see SearchKinds)
	// SearchOptions tune this column's blind indexes; unset fields take the
	// config-wide defaults in Config.Search.
	SearchOptions SearchOptions
	Validate      Validate
	Line          int
}

// SearchOptions tune blind indexes. Zero values mean "inherit".
type SearchOptions struct {
	PrefixMin   int            // shortest indexed prefix (runes), default 3
	PrefixMax   int            // longest indexed prefix, default 5
	TokenSize   int            // n-gram length of contains, default 3
	FoldAccents *bool          // fold accents (é -> e) before indexing, default true
	PhoneRegion string         // region for numbers without a country code, default US
	Bits        map[string]int // truncation per sub-kind, overriding the planner (e.g. exact: 20)
	// AcceptLeakage proposes, with a reason, that this column may stay
	// below 2 distinct values per term or term array. It is a proposal:
	// only the pinned acceptance (policy.Pins.AcceptLeakage) counts.
	AcceptLeakage string
}

// Validate holds pre-migration validation rules of one column.
type Validate struct {
	NotNull   bool
	Pattern   string
	MaxLength int
}

// Classes are the data classes a column may have.
var Classes = []string{"pii", "phi"}

// SearchKinds are the blind index kinds a column may ask for.
var SearchKinds = []string{"exact", "prefix", "contains", "phonetic", "phone", "date"}

// Defaults are applied to every field the file leaves out.
func Defaults() Config {
	return Config{
		Version:     Version,
		Environment: "development",
		Encryption: Encryption{
			ColumnSuffix:  "_encrypted",
			MaxValueBytes: 16 << 20,
		},
		Audit:  Audit{File: "pgphi-audit.jsonl"},
		Hooks:  Hooks{Timeout: 30 * time.Second},
		Search: SearchOptions{PrefixMin: 3, PrefixMax: 5, TokenSize: 3, FoldAccents: ptr(true), PhoneRegion: "US"},
		Apply: Apply{
			BatchSize:         2000,
			ChunkRows:         50000,
			Workers:           2,
			LockTimeout:       2 * time.Second,
			DDLRetries:        30,
			Adaptive:          true,
			MaxReplicationLag: 30 * time.Second,
		},
	}
}

// Locate returns the config path: flag, else $PGPHI_CONFIG, else ./pgphi.yaml.
func Locate(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("PGPHI_CONFIG"); env != "" {
		return env
	}
	return DefaultFile
}

// ErrNotFound is wrapped by Load when the config file does not exist.
var ErrNotFound = errors.New("config file not found")

// Load reads and checks the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &Error{File: path, Msg: "config file not found", Fix: "run `pgphi init` to write one, or pass --config FILE / set PGPHI_CONFIG", err: ErrNotFound}
		}
		return nil, &Error{File: path, Msg: "cannot read config file: " + err.Error()}
	}
	return Parse(path, data)
}

// Error is a configuration error. It prints as file:line: message (fix: ...).
type Error struct {
	File string
	Line int
	Msg  string
	Fix  string
	err  error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(filepath.Clean(e.File))
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	if e.Fix != "" {
		b.WriteString("\n  fix: ")
		b.WriteString(e.Fix)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.err }

// Errorf builds a config error at a line of the file; used by the catalog checks.
func (c *Config) Errorf(line int, fix, format string, args ...any) error {
	return &Error{File: c.Path, Line: line, Msg: fmt.Sprintf(format, args...), Fix: fix}
}

// Table returns the configured table with this qualified or bare name.
func (c *Config) Table(name string) (*Table, bool) {
	for i := range c.Tables {
		t := &c.Tables[i]
		if t.QualifiedName() == name || (t.Schema == "public" && t.Name == name) {
			return t, true
		}
	}
	return nil, false
}

func ptr[T any](v T) *T { return &v }

// EffectiveSearch merges a column's search options over the config-wide ones.
func (c *Config) EffectiveSearch(col Column) SearchOptions {
	o := c.Search
	s := col.SearchOptions
	if s.PrefixMin > 0 {
		o.PrefixMin = s.PrefixMin
	}
	if s.PrefixMax > 0 {
		o.PrefixMax = s.PrefixMax
	}
	if s.TokenSize > 0 {
		o.TokenSize = s.TokenSize
	}
	if s.FoldAccents != nil {
		o.FoldAccents = s.FoldAccents
	}
	if s.PhoneRegion != "" {
		o.PhoneRegion = s.PhoneRegion
	}
	o.Bits = s.Bits
	o.AcceptLeakage = s.AcceptLeakage
	return o
}

// Resolve makes a path from the config relative to the config file's folder.
func (c *Config) Resolve(path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(filepath.Dir(c.Path), path)
}

// Environments are the environment names a config may use. Any other name is
// a configuration error: a name that only looks like production (e.g.
// "prod") must not slip past the production policy.
var Environments = []string{"development", "test", "staging", "production"}

// Production is the one environment under the production policy (TLS,
// approvals, superuser, validation).
const Production = "production"

// IsProductionEnvironment reports whether the environment named name gets
// the production policy. It is the only definition of "production": TLS
// (package dbconn), approvals and the defaults below all use it.
func IsProductionEnvironment(name string) bool { return name == Production }

// IsProduction reports whether the stricter production policy applies.
func (c *Config) IsProduction() bool { return IsProductionEnvironment(c.Environment) }

// SuperuserAllowed reports whether a superuser connection passes the role check.
func (c *Config) SuperuserAllowed() bool {
	if c.Access.AllowSuperuser != nil {
		return *c.Access.AllowSuperuser
	}
	return !c.IsProduction()
}

// ValidationFails reports whether a validation violation stops the run.
func (c *Config) ValidationFails() bool {
	switch c.Validation.OnViolation {
	case "fail":
		return true
	case "warn":
		return false
	}
	return c.IsProduction()
}

// HookPhases are the phases hooks may be configured for.
var HookPhases = []string{"pre_validate", "pre_execute", "post_execute", "on_error", "pre_cleanup", "post_cleanup", "pre_rollback", "post_rollback", "on_alert"}

// Roles are pgphi's roles.
var Roles = []string{"dba", "healthcare_admin", "audit_officer"}
