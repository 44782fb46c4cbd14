// Package pgphi is the application side of pgphi: a Go application writes,
// reads and searches the columns `pgphi apply` encrypted, with this one
// import and the keys of the same KEK providers as the pgphi command.
//
//	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile("/etc/app/pgphi.key"))
//	row, err := client.Row(ctx, "patient", pgphi.Key{"uid": "P1"}, map[string]any{"last_name": "Smith"})
//	_, err = pool.Exec(ctx, "INSERT INTO patient (uid, "+strings.Join(row.Columns(), ", ")+") VALUES ...", ...)
//
// Open reads what it needs from schema pgphi as apply recorded it
// (pgphi.protected_columns, pgphi.plans for the row key, pgphi.blind_indexes
// for term families, sizes, keys and options, pgphi.kek and pgphi.data_keys
// for the wrapped keys, pgphi.flag for the cutover flags): no configuration
// file and no catalog walk. README.md ("From a Go application") lists the
// grants an application role needs.
//
// Guarantees:
//   - Every ciphertext is docs/FORMAT.md version 1, bound to its table
//     (schema.table), column and the row's key (the canonical text of each
//     key column, in key order): copied to another row, column or table it
//     does not decrypt. New ciphertexts use the active data key.
//   - Values are turned into canonical text in Go, exactly as docs/FORMAT.md
//     §2.4 says, from Go values or from the canonical text itself; a value
//     that does not fit the column is refused (ErrValue) naming table and
//     column, never the value. No error of this package contains a value
//     or key material; database errors are rebuilt from their fields
//     without values (as pgphi's command does). A search error may name the
//     key of a row whose ciphertext does not decrypt, as `pgphi search` does.
//   - Blind index terms are computed from the families, sizes, data keys
//     and options recorded in pgphi.blind_indexes (docs/SEARCH.md), so they
//     equal the terms pgphi itself writes.
//   - Find returns exactly the rows `pgphi search` returns: candidates from
//     the blind index, decrypted, kept only when the exact predicate holds.
//   - Find, Decrypt, DecryptAll and Read (when it decrypts) each write one
//     audit record (command api.search, api.decrypt or api.read; table,
//     column, kind, reason, row count; never values or keys) through
//     pgphi.audit_append, which only members of a pgphi group may execute.
//     A role that may not is refused (ErrNotAudited) unless the client was
//     opened with Unaudited, which the application then answers for.
package pgphi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/redact"
	"github.com/pgphi/pgphi/internal/search"
	"github.com/pgphi/pgphi/keys"
)

// KEK supplies the key-encryption key that unwraps the data keys stored in
// schema pgphi: the same providers as the pgphi command.
type KEK = keys.KEKProvider

// KeyFile reads the KEK from a key file (32 raw bytes, 64 hex digits or
// base64; mode 0600), as PGPHI_KEY_FILE does for the command.
func KeyFile(path string) KEK { return keys.KeyFileProvider(path) }

// Passphrase derives the KEK from a passphrase (PBKDF2 with the stored salt).
func Passphrase(passphrase string) KEK { return keys.PassphraseProvider(passphrase) }

// KEKFromEnv is the provider the command uses: PGPHI_KEY_FILE, else
// PGPHI_PASSPHRASE, PGPHI_PASSPHRASE_FILE or PGPHI_PASSPHRASE_FD (read once
// and removed from the environment).
func KEKFromEnv() (KEK, error) { return keys.ProviderFromEnv() }

// Key identifies a row: the canonical text (value::text, docs/FORMAT.md
// §2.4) of each column of the table's key, by column name.
type Key map[string]string

// Errors of the client; test with errors.Is.
var (
	// ErrNotProtected: the table or column is not protected by pgphi.
	ErrNotProtected = errors.New("pgphi: not a protected column")
	// ErrAccess: the application role may not read what the client needs
	// from schema pgphi (README.md lists the grants).
	ErrAccess = errors.New("pgphi: the database role may not read pgphi's metadata")
	// ErrNotAudited: decrypting needs an audit record, and the role may not
	// write one (it is not a member of a pgphi group); see Unaudited.
	ErrNotAudited = errors.New("pgphi: this role cannot write audit records (not a member of a pgphi group)")
	// ErrReason: Find, Decrypt and Read need a reason, which is audited.
	ErrReason = errors.New("pgphi: a reason is required (it is audited)")
	// ErrNoRow: Read found no row with the key.
	ErrNoRow = errors.New("pgphi: no row with that key")
	// ErrKey: the key does not name exactly the table's key columns.
	ErrKey = errors.New("pgphi: wrong key columns")
	// ErrRestoring: a rollback after cleanup is putting the plaintext back;
	// the client does not write the table meanwhile.
	ErrRestoring = errors.New("pgphi: a rollback is under way on this table")
	// ErrInvalid: a value breaks a validation rule carried over from the
	// plaintext column (its CHECK constraint or domain); the error names
	// the table, column and rule, never the value.
	ErrInvalid = errors.New("pgphi: value breaks a validation rule of its column")
	// ErrUniqueMembers: a column of a multi-column unique rule was sealed
	// without the rule's other columns (Row seals them together).
	ErrUniqueMembers = errors.New("pgphi: seal every column of a unique rule together")
)

// Option changes how Open sets up the client.
type Option func(*options)

type options struct {
	unaudited bool
	actor     string
}

// Unaudited lets a role that may not write pgphi's audit records decrypt and
// search anyway; the application must then keep its own record of who read
// what and why. Without it such a role gets ErrNotAudited.
func Unaudited() Option { return func(o *options) { o.unaudited = true } }

// Actor names the person or service recorded in audit records (actor.name).
func Actor(name string) Option { return func(o *options) { o.actor = name } }

// Client seals, decrypts and searches protected columns of one database.
// It is safe for concurrent use. It holds unwrapped keys in memory.
type Client struct {
	pool *pgxpool.Pool
	ring *keys.Keyring
	opt  options
	log  *audit.Log // nil when the role may not append
	// usage counts this client's encryptions against the data key's limit,
	// reserved in blocks of usageBlock.
	usage *keys.Reserver

	mu   sync.Mutex
	meta *metadata
}

// metadata is what apply recorded, as one plan of targets.
type metadata struct {
	version  string // hash of protected_columns, to notice cleanup and rollback
	plan     *engine.Plan
	types    map[string]columnType // "schema.table\x00column"
	searcher *search.Searcher
	rules    map[string]map[string][]engine.ColumnRule // table -> column -> rules
}

// canonicalSettings are set (SET LOCAL) in every transaction the client
// reads key or value texts in: an application's sessions have their own.
var canonicalSettings = map[string]string{
	"search_path":        "pg_catalog, pg_temp",
	"TimeZone":           "UTC",
	"DateStyle":          "ISO, YMD",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
}

// Open loads the keys with kek and the metadata of every protected column.
// It fails with ErrAccess, naming the table, when the role may not read one
// of pgphi's tables it needs.
func Open(ctx context.Context, pool *pgxpool.Pool, kek KEK, opts ...Option) (*Client, error) {
	c := &Client{pool: pool}
	for _, o := range opts {
		o(&c.opt)
	}
	for _, tbl := range []string{"protected_columns", "plans", "blind_indexes", "kek", "data_keys", "unique_columns", "column_rules"} {
		var ok bool
		if err := pool.QueryRow(ctx, "SELECT pg_catalog.has_table_privilege('pgphi.'||$1, 'SELECT')", tbl).Scan(&ok); err != nil {
			return nil, fmt.Errorf("pgphi: open: %w", err)
		}
		if !ok {
			return nil, fmt.Errorf("%w: SELECT on pgphi.%s is missing (see README.md, From a Go application)", ErrAccess, tbl)
		}
	}
	ring, err := keys.Load(ctx, pool, kek)
	if err != nil {
		return nil, fmt.Errorf("pgphi: open: %w", redact.Error(err))
	}
	c.ring = ring
	c.usage = keys.NewReserver(pool, usageBlock)
	var canAudit bool
	if err := pool.QueryRow(ctx, "SELECT pg_catalog.has_function_privilege('pgphi.audit_append(jsonb)', 'EXECUTE')").Scan(&canAudit); err != nil {
		return nil, fmt.Errorf("pgphi: open: %w", err)
	}
	if canAudit {
		if c.log, err = audit.Open(ctx, pool, ""); err != nil {
			return nil, fmt.Errorf("pgphi: open: %w", err)
		}
	}
	if _, err := c.load(ctx, ""); err != nil {
		return nil, err
	}
	return c, nil
}

// usageBlock is how many encryptions a client counts ahead in the database
// at a time: one round trip per block; a client that stops leaves the count
// too high by at most this much.
const usageBlock = 1024

// Close drops the client's references to its keys.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ring, c.meta = nil, nil
}

// Audited reports whether Find, Decrypt and Read write audit records.
func (c *Client) Audited() bool { return c.log != nil }

const versionSQL = `SELECT pg_catalog.md5(COALESCE(pg_catalog.string_agg(table_name||'/'||column_name||'/'||encrypted_column||'/'||phase||'/'||COALESCE(index_column, '')||'/'||plan_id, ',' ORDER BY table_name, column_name), '')
	||'/'||(SELECT pg_catalog.count(*) FROM pgphi.unique_columns)||'/'||(SELECT COALESCE(pg_catalog.string_agg(table_name||'/'||column_name||'/'||generation||'/'||state, ',' ORDER BY table_name, column_name, generation), '') FROM (SELECT DISTINCT table_name, column_name, generation, state FROM pgphi.blind_indexes) g)||'/'||(SELECT pg_catalog.md5(COALESCE(pg_catalog.string_agg(expression, ',' ORDER BY table_name, column_name, rule_name), '')) FROM pgphi.column_rules))
	FROM pgphi.protected_columns`

// state reads the flags and the metadata version in one round trip, and
// reloads the metadata when cleanup or rollback changed it.
func (c *Client) state(ctx context.Context) (m *metadata, useEncrypted, requireEncryption bool, err error) {
	var version string
	err = c.querier(ctx).QueryRow(ctx, `SELECT pgphi.flag('use_encrypted_search'), pgphi.flag('require_encryption'), (`+versionSQL+`)`).
		Scan(&useEncrypted, &requireEncryption, &version)
	if err != nil {
		return nil, false, false, fmt.Errorf("pgphi: reading flags: %w", redact.Error(err))
	}
	m, err = c.load(ctx, version)
	return m, useEncrypted, requireEncryption, err
}

func (c *Client) load(ctx context.Context, version string) (*metadata, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ring == nil {
		return nil, errors.New("pgphi: client is closed")
	}
	if c.meta != nil && c.meta.version == version {
		return c.meta, nil
	}
	m, err := readMetadata(ctx, c.pool, c.ring)
	if err != nil {
		return nil, redact.Error(err)
	}
	c.meta = m
	return m, nil
}

func readMetadata(ctx context.Context, pool *pgxpool.Pool, ring *keys.Keyring) (*metadata, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return nil, fmt.Errorf("pgphi: reading metadata: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	m := &metadata{types: map[string]columnType{}, plan: &engine.Plan{}}
	if err := tx.QueryRow(ctx, versionSQL).Scan(&m.version); err != nil {
		return nil, fmt.Errorf("pgphi: reading pgphi.protected_columns: %w", err)
	}
	type row struct {
		table, column, encrypted, original, phase, plan string
		index                                           *string
		spec                                            []byte
	}
	rows, err := tx.Query(ctx, `SELECT p.table_name, p.column_name, p.encrypted_column, p.original_type, p.phase, p.index_column, p.plan_id, pl.spec::text
		FROM pgphi.protected_columns p LEFT JOIN pgphi.plans pl ON pl.plan_id = p.plan_id ORDER BY p.table_name, p.column_name`)
	if err != nil {
		return nil, fmt.Errorf("pgphi: reading pgphi.protected_columns: %w", err)
	}
	var cols []row
	for rows.Next() {
		var r row
		var spec *string
		if err := rows.Scan(&r.table, &r.column, &r.encrypted, &r.original, &r.phase, &r.index, &r.plan, &spec); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pgphi: reading pgphi.protected_columns: %w", err)
		}
		if spec != nil {
			r.spec = []byte(*spec)
		}
		cols = append(cols, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgphi: reading pgphi.protected_columns: %w", err)
	}
	// Term families of each column: kinds, from the recorded sub-kinds, and
	// the recorded options.
	type fam struct {
		kinds []blindindex.Kind
		opts  *blindindex.StoredOptions
	}
	fams := map[string]*fam{}
	brows, err := tx.Query(ctx, `SELECT table_name, column_name, sub_kind, options::text FROM pgphi.blind_indexes WHERE state = 'active' ORDER BY 1, 2, 3`)
	if err != nil {
		return nil, fmt.Errorf("pgphi: reading pgphi.blind_indexes: %w", err)
	}
	for brows.Next() {
		var t, col, sub string
		var o *string
		if err := brows.Scan(&t, &col, &sub, &o); err != nil {
			brows.Close()
			return nil, fmt.Errorf("pgphi: reading pgphi.blind_indexes: %w", err)
		}
		f := fams[t+"\x00"+col]
		if f == nil {
			f = &fam{}
			fams[t+"\x00"+col] = f
		}
		k := blindindex.Kind(sub)
		if i := strings.IndexByte(sub, '/'); i >= 0 {
			k = blindindex.Kind(sub[:i])
		}
		if !slices.Contains(f.kinds, k) {
			f.kinds = append(f.kinds, k)
		}
		if o != nil {
			so, err := blindindex.ParseStoredOptions([]byte(*o))
			if err != nil {
				brows.Close()
				return nil, fmt.Errorf("pgphi: pgphi.blind_indexes options of %s.%s: %w", t, col, err)
			}
			f.opts = &so
		}
	}
	brows.Close()
	if err := brows.Err(); err != nil {
		return nil, fmt.Errorf("pgphi: reading pgphi.blind_indexes: %w", err)
	}
	targets := map[string]*engine.Target{}
	for _, r := range cols {
		t := targets[r.table]
		if t == nil {
			schema, name, ok := strings.Cut(r.table, ".")
			if !ok {
				return nil, fmt.Errorf("pgphi: pgphi.protected_columns names table %s without its schema", r.table)
			}
			key, err := keyColumns(r.spec, r.table)
			if err != nil {
				return nil, err
			}
			t = &engine.Target{Table: &catalog.Table{Schema: schema, Name: name, PrimaryKey: key}}
			targets[r.table] = t
			m.plan.Tables = append(m.plan.Tables, t)
		}
		// A domain's values were encrypted as its base type.
		base, err := catalog.DomainBase(ctx, tx, r.original)
		if err != nil {
			return nil, fmt.Errorf("pgphi: %w", err)
		}
		ct := parseColumnType(base)
		tc := engine.TargetColumn{
			Column:    catalog.Column{Name: r.column, Type: r.original},
			Encrypted: r.encrypted, ValueType: ct.vt,
			Cleaned: r.phase != "expanded", Restoring: r.phase == "restoring",
		}
		if f := fams[r.table+"\x00"+r.column]; f != nil && r.index != nil {
			if f.opts == nil {
				return nil, fmt.Errorf("pgphi: the term options of %s.%s are not recorded yet in pgphi.blind_indexes.options (the next apply of this version records them)", r.table, r.column)
			}
			tc.Search, tc.SearchOptions, tc.Index = f.kinds, f.opts.Options(), *r.index
		}
		t.Columns = append(t.Columns, tc)
		m.types[r.table+"\x00"+r.column] = ct
	}
	m.rules = map[string]map[string][]engine.ColumnRule{}
	for _, t := range m.plan.Tables {
		if err := engine.LoadUniques(ctx, tx, &engine.Plan{Tables: []*engine.Target{t}}); err != nil {
			return nil, fmt.Errorf("pgphi: %w", err)
		}
		if m.rules[t.QualifiedName()], err = engine.LoadRules(ctx, tx, t.QualifiedName()); err != nil {
			return nil, fmt.Errorf("pgphi: %w", err)
		}
	}
	_ = tx.Commit(ctx)
	if m.searcher, err = search.New(ctx, pool, ring, m.plan); err != nil {
		return nil, fmt.Errorf("pgphi: %w", err)
	}
	m.searcher.Settings = canonicalSettings
	return m, nil
}

// keyColumns reads a table's key columns from the plan spec apply recorded.
func keyColumns(spec []byte, table string) ([]catalog.Column, error) {
	var s engine.Spec
	if spec == nil || json.Unmarshal(spec, &s) != nil {
		return nil, fmt.Errorf("pgphi: the plan that protected %s is not recorded in pgphi.plans", table)
	}
	for _, t := range s.Tables {
		if t.Table != table {
			continue
		}
		var out []catalog.Column
		for _, k := range t.Key {
			out = append(out, catalog.Column{Name: k.Name, Type: k.Type})
		}
		return out, nil
	}
	return nil, fmt.Errorf("pgphi: the plan that protected %s does not list it", table)
}

// target finds a protected table and column; table is "schema.table", or
// "table" for schema public.
func (m *metadata) target(table, column string) (*engine.Target, *engine.TargetColumn, error) {
	for _, t := range m.plan.Tables {
		if t.QualifiedName() != table && !(t.Schema == "public" && t.Name == table) {
			continue
		}
		if column == "" {
			return t, nil, nil
		}
		for i := range t.Columns {
			if t.Columns[i].Name == column {
				return t, &t.Columns[i], nil
			}
		}
		return nil, nil, fmt.Errorf("%w: %s has no protected column %s", ErrNotProtected, t.QualifiedName(), column)
	}
	return nil, nil, fmt.Errorf("%w: table %s has no protected column", ErrNotProtected, table)
}

// binding checks key against the table's key columns and returns the
// ciphertext binding of column.
func binding(t *engine.Target, column string, key Key) (envelope.Binding, error) {
	b := envelope.Binding{Table: t.QualifiedName(), Column: column}
	if len(key) != len(t.PrimaryKey) {
		return b, fmt.Errorf("%w: %s is keyed by %s", ErrKey, t.QualifiedName(), keyNames(t))
	}
	for _, k := range t.PrimaryKey {
		v, ok := key[k.Name]
		if !ok {
			return b, fmt.Errorf("%w: %s is keyed by %s", ErrKey, t.QualifiedName(), keyNames(t))
		}
		b.PrimaryKey = append(b.PrimaryKey, v)
	}
	return b, nil
}

func keyNames(t *engine.Target) string {
	var n []string
	for _, k := range t.PrimaryKey {
		n = append(n, k.Name)
	}
	return strings.Join(n, ", ")
}

// inTx runs fn in a transaction with the canonical session settings: the
// caller's under Within (the settings stay until it ends), else its own.
func (c *Client) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	settings := func(tx pgx.Tx) error {
		for _, name := range slices.Sorted(mapsKeys(canonicalSettings)) {
			if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config($1, $2, true)", name, canonicalSettings[name]); err != nil {
				return err
			}
		}
		return fn(tx)
	}
	if w, ok := withinOf(ctx); ok {
		return settings(w.tx)
	}
	return pgx.BeginTxFunc(ctx, c.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, settings)
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// record writes one audit record of a decrypting call, or refuses it.
func (c *Client) record(ctx context.Context, command, table string, columns []string, reason string, rows int64, details map[string]string) error {
	if strings.TrimSpace(reason) == "" {
		return ErrReason
	}
	if c.log == nil {
		if c.opt.unaudited {
			return nil
		}
		return ErrNotAudited
	}
	rec := audit.Record{
		Event: audit.EventSuccess, Command: command, RunID: audit.NewRunID(),
		Actor: audit.LocalActor(c.opt.actor), Reason: reason,
		Tables: []string{table}, Columns: columns, Rows: rows, Details: details,
	}
	var err error
	if w, ok := withinOf(ctx); ok {
		if w.actor != "" {
			rec.Actor.Name = w.actor
		}
		_, err = c.log.AppendIn(ctx, w.tx, rec)
	} else {
		_, err = c.log.Append(context.WithoutCancel(ctx), rec)
	}
	if err != nil {
		return fmt.Errorf("pgphi: audit: %w", err)
	}
	return nil
}

// isUndefinedColumn reports a missing column, e.g. a plaintext cleanup dropped.
func isUndefinedColumn(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42703"
}
