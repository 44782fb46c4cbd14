package pgphi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/redact"
)

// Assignments are the values to write, by column name, for an INSERT or an
// UPDATE: every pgphi-owned column of the values sealed — the ciphertext
// `<col>_encrypted` ([]byte), the blind index terms `<col>_bidx` ([]int64,
// when the column is searchable) and, until cleanup, the plaintext `<col>`:
// its canonical text before require_encryption is on, nil (NULL) after —
// and, for a column under a UNIQUE constraint, primary key or unique index,
// its digest `<col>_uniq` ([]byte; docs/FORMAT.md §5). A SQL NULL value
// gives nil everywhere. It is a map so that later versions can add columns
// (a second generation during a reindex) without changing callers: write
// every entry.
type Assignments map[string]any

// Columns returns the column names, sorted.
func (a Assignments) Columns() []string { return slices.Sorted(maps.Keys(a)) }

// Values returns the values in the order of Columns.
func (a Assignments) Values() []any {
	var out []any
	for _, c := range a.Columns() {
		out = append(out, a[c])
	}
	return out
}

// Seal encrypts one value of table.column for the row key and returns its
// assignments. value is a Go value of a type the column takes (string,
// integers, float64, bool, time.Time, []byte, json.RawMessage), its
// canonical text as a string, or nil for SQL NULL. The ciphertext is bound
// to the table, the column and key.
func (c *Client) Seal(ctx context.Context, table, column string, key Key, value any) (Assignments, error) {
	return c.Row(ctx, table, key, map[string]any{column: value})
}

// Row seals several protected columns of one row (values by column name; a
// column that is not protected is refused) and returns the assignments of
// all of them. The columns of a multi-column unique rule are sealed
// together (ErrUniqueMembers otherwise). A value that breaks a CHECK or
// domain of its column is refused with ErrInvalid (one read-only round
// trip, only for columns that have such rules). It reads the cutover flags in one round trip, so the
// assignments follow require_encryption as it is now; a write racing the
// flag being switched on is refused by pgphi's trigger and can be retried.
func (c *Client) Row(ctx context.Context, table string, key Key, values map[string]any) (Assignments, error) {
	m, _, require, err := c.state(ctx)
	if err != nil {
		return nil, err
	}
	out, given, t, err := c.row(ctx, m, require, table, key, values)
	if err != nil {
		return nil, err
	}
	if err := c.validate(ctx, m, t, []map[string]*string{given}); err != nil {
		return nil, err
	}
	return out, nil
}

// Unsealed is one value to seal and the key of its row.
type Unsealed struct {
	Key   Key
	Value any // as Seal takes it; nil: SQL NULL
}

// SealAll is Seal for many rows of one column, reading the cutover flags
// once: the assignments of each value, in order. A value that cannot be
// sealed fails the whole call, naming its position, never the value.
func (c *Client) SealAll(ctx context.Context, table, column string, rows []Unsealed) ([]Assignments, error) {
	m, _, require, err := c.state(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Assignments, len(rows))
	given := make([]map[string]*string, len(rows))
	var t *engine.Target
	for i, r := range rows {
		if out[i], given[i], t, err = c.row(ctx, m, require, table, r.Key, map[string]any{column: r.Value}); err != nil {
			return nil, valueAt(i, len(rows), err)
		}
	}
	if len(rows) > 0 {
		if err := c.validate(ctx, m, t, given); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// valueAt names the position of the value an error is about, when there
// are several.
func valueAt(i, n int, err error) error {
	if n > 1 {
		return fmt.Errorf("value %d of %d: %w", i+1, n, err)
	}
	return err
}

// row seals the values of one row and returns their assignments and the
// canonical text of each column sealed (nil for NULL), which the caller
// validates.
func (c *Client) row(ctx context.Context, m *metadata, require bool, table string, key Key, values map[string]any) (Assignments, map[string]*string, *engine.Target, error) {
	t, _, err := m.target(table, "")
	if err != nil {
		return nil, nil, nil, err
	}
	out := Assignments{}
	given := map[string]*string{} // canonical text of each column sealed; nil for NULL
	for _, name := range slices.Sorted(maps.Keys(values)) {
		_, col, err := m.target(t.QualifiedName(), name)
		if err != nil {
			return nil, nil, nil, err
		}
		if col.Restoring {
			return nil, nil, nil, fmt.Errorf("%w: %s", ErrRestoring, t.QualifiedName())
		}
		b, err := binding(t, col.Name, key)
		if err != nil {
			return nil, nil, nil, err
		}
		v := values[name]
		given[col.Name] = nil
		if v == nil {
			out[col.Encrypted] = nil
			if col.HasIndex() {
				out[col.Index] = nil
				if m.searcher.NextIndexer(t.QualifiedName(), col.Name) != nil {
					out[col.NextIndex()] = nil
				}
			}
			if !col.Cleaned {
				out[col.Name] = nil
			}
			continue
		}
		where := t.QualifiedName() + "." + col.Name
		text, err := canonical(m.types[t.QualifiedName()+"\x00"+col.Name], where, v)
		if err != nil {
			return nil, nil, nil, err
		}
		given[col.Name] = &text
		sealer, err := c.ring.Sealer(t.QualifiedName(), col.Name)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("pgphi: %s: %w", where, err)
		}
		if err := c.usage.Take(ctx, c.ring.ActiveKeyID()); err != nil {
			return nil, nil, nil, fmt.Errorf("pgphi: %s: %w", where, err)
		}
		ct, err := sealer.Seal(nil, envelope.Value{Type: col.ValueType, Text: text}, b)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("pgphi: %s: %w", where, err)
		}
		out[col.Encrypted] = ct
		if col.HasIndex() {
			out[col.Index] = m.searcher.Indexer(t.QualifiedName(), col.Name).Terms(make([]int64, 0, 16), text)
			// While a reindex builds the next generation, both are written.
			if next := m.searcher.NextIndexer(t.QualifiedName(), col.Name); next != nil {
				out[col.NextIndex()] = next.Terms(make([]int64, 0, 16), text)
			}
		}
		if !col.Cleaned {
			if require {
				out[col.Name] = nil
			} else {
				out[col.Name] = text
			}
		}
	}
	if err := c.uniqueDigests(t, given, out); err != nil {
		return nil, nil, nil, err
	}
	return out, given, t, nil
}

// uniqueDigests adds the digest column of every unique rule whose columns
// were sealed (docs/FORMAT.md §5): the database's unique index on it
// refuses a duplicate, before and after cleanup. A rule's columns are
// sealed together or not at all.
func (c *Client) uniqueDigests(t *engine.Target, given map[string]*string, out Assignments) error {
	for i := range t.Uniques {
		u := &t.Uniques[i]
		n := 0
		for _, m := range u.Members {
			if _, ok := given[m]; ok {
				n++
			}
		}
		if n == 0 {
			continue
		}
		if n < len(u.Members) {
			return fmt.Errorf("%w: %s %s of %s covers %s", ErrUniqueMembers, u.Kind, u.Object, t.QualifiedName(), strings.Join(u.Members, ", "))
		}
		texts := make([][]byte, len(t.Columns))
		for j, col := range t.Columns {
			if p := given[col.Name]; p != nil {
				texts[j] = []byte(*p)
			}
		}
		key, err := engine.UniqueKey(c.ring, t, u)
		if err != nil {
			return fmt.Errorf("pgphi: %s.%s: %w", t.QualifiedName(), u.Column, err)
		}
		if d := u.Digest(key, texts); d != nil {
			out[u.Column] = d
		} else {
			out[u.Column] = nil
		}
	}
	return nil
}

// validate applies the validation rules carried from the plaintext columns
// (their CHECKs and domains) to the values sealed (one map per row), in one
// read-only round trip however many rows: PostgreSQL evaluates each rule on
// the value cast to the column's type, in this application's own session
// and rights, as the CHECK would have run on its INSERT. Columns without
// rules cost nothing.
func (c *Client) validate(ctx context.Context, m *metadata, t *engine.Target, rows []map[string]*string) error {
	rules := m.rules[t.QualifiedName()]
	if len(rules) == 0 {
		return nil
	}
	type check struct {
		row   int
		in    []engine.RuleInput
		names []string
		res   []bool
	}
	var checks []*check
	batch := &pgx.Batch{}
	for i, given := range rows {
		ch := &check{row: i}
		var args []any
		for _, col := range t.Columns {
			p, ok := given[col.Name]
			if !ok || p == nil || len(rules[col.Name]) == 0 {
				continue
			}
			ch.in = append(ch.in, engine.RuleInput{Column: col.Name, Type: col.Type, Rules: rules[col.Name]})
			args = append(args, *p)
		}
		if len(ch.in) == 0 {
			continue
		}
		ch.names = engine.RuleNames(ch.in)
		ch.res = make([]bool, len(ch.names))
		dest := make([]any, len(ch.names))
		for j := range ch.res {
			dest[j] = &ch.res[j]
		}
		checks = append(checks, ch)
		batch.Queue(engine.RuleQuery(ch.in), args...).QueryRow(func(r pgx.Row) error {
			if err := r.Scan(dest...); err != nil {
				return &ruleError{row: ch.row, in: ch.in, err: err}
			}
			return nil
		})
	}
	if len(checks) == 0 {
		return nil
	}
	err := c.inTx(ctx, func(tx pgx.Tx) error { return tx.SendBatch(ctx, batch).Close() })
	var re *ruleError
	if errors.As(err, &re) {
		var pgErr *pgconn.PgError
		if errors.As(re.err, &pgErr) && (pgErr.Code == "23514" || pgErr.Code == "23502" || strings.HasPrefix(pgErr.Code, "22")) {
			// A domain's constraint (or the type itself) refused the cast;
			// the message names the domain and constraint, never the value.
			return valueAt(re.row, len(rows), fmt.Errorf("%w: %s (%s): %s", ErrInvalid, t.QualifiedName(), ruleColumns(re.in), pgErr.Code))
		}
		err = re.err
	}
	if err != nil {
		return fmt.Errorf("pgphi: validating %s: %w", t.QualifiedName(), redact.Error(err))
	}
	for _, ch := range checks {
		for j, ok := range ch.res {
			if !ok {
				return valueAt(ch.row, len(rows), fmt.Errorf("%w: %s: %s", ErrInvalid, t.QualifiedName(), ch.names[j]))
			}
		}
	}
	return nil
}

// ruleError is a validation query's failure and the row it was about.
type ruleError struct {
	row int
	in  []engine.RuleInput
	err error
}

func (e *ruleError) Error() string { return e.err.Error() }
func (e *ruleError) Unwrap() error { return e.err }

func ruleColumns(in []engine.RuleInput) string {
	var out []string
	for _, x := range in {
		out = append(out, x.Column)
	}
	return strings.Join(out, ", ")
}

// Sealed is one stored ciphertext and the key of its row.
type Sealed struct {
	Key        Key
	Ciphertext []byte // nil: SQL NULL
}

// Plain is a decrypted value: its canonical text (docs/FORMAT.md §2.4;
// text::column_type restores it), or Null.
type Plain struct {
	Text string
	Null bool
}

// Decrypt opens one ciphertext of table.column read from the row key (nil
// is SQL NULL). It writes one audit record (command api.decrypt) with the
// reason; see DecryptAll for many values and one record.
func (c *Client) Decrypt(ctx context.Context, table, column string, key Key, ciphertext []byte, reason string) (text string, null bool, err error) {
	out, err := c.DecryptAll(ctx, table, column, reason, []Sealed{{Key: key, Ciphertext: ciphertext}})
	if err != nil {
		return "", false, err
	}
	return out[0].Text, out[0].Null, nil
}

// DecryptAll opens the ciphertexts of many rows of table.column and writes
// one audit record (command api.decrypt: table, column, reason, number of
// values; never values or keys) before returning them. A ciphertext that
// does not open (another row, column or table; tampered; unknown key)
// fails the whole call.
func (c *Client) DecryptAll(ctx context.Context, table, column, reason string, rows []Sealed) ([]Plain, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, ErrReason
	}
	m, err := c.load(ctx, c.currentVersion())
	if err != nil {
		return nil, err
	}
	t, col, err := m.target(table, column)
	if err != nil {
		return nil, err
	}
	out := make([]Plain, len(rows))
	opener := c.ring.Opener(t.QualifiedName(), col.Name)
	for i, r := range rows {
		if r.Ciphertext == nil {
			out[i].Null = true
			continue
		}
		b, err := binding(t, col.Name, r.Key)
		if err != nil {
			return nil, err
		}
		v, err := opener.Open(r.Ciphertext, b)
		if err == nil && v.Type != col.ValueType {
			err = fmt.Errorf("%w: value type %s, the column's is %s", envelope.ErrFormat, v.Type, col.ValueType)
		}
		if err != nil {
			return nil, fmt.Errorf("pgphi: %s.%s: value %d of %d: %w", t.QualifiedName(), col.Name, i+1, len(rows), err)
		}
		out[i].Text = v.Text
	}
	if err := c.record(ctx, "api.decrypt", t.QualifiedName(), []string{col.Name}, reason, int64(len(rows)), nil); err != nil {
		return nil, err
	}
	return out, nil
}

// currentVersion is the metadata version the client has (no round trip):
// DecryptAll needs no flag.
func (c *Client) currentVersion() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.meta == nil {
		return ""
	}
	return c.meta.version
}

// Query is a search: a kind and its value (or ages for AgeBetween).
type Query = blindindex.Query

// Search kinds (docs/SEARCH.md §3).
const (
	Exact      = blindindex.QExact
	Prefix     = blindindex.QPrefix
	Contains   = blindindex.QContains
	Phonetic   = blindindex.QPhonetic
	Phone      = blindindex.QPhone
	Last4      = blindindex.QLast4
	AreaCode   = blindindex.QAreaCode
	Date       = blindindex.QDate
	Year       = blindindex.QYear
	YearMonth  = blindindex.QYearMonth
	AgeBetween = blindindex.QAgeBetween
)

// Find returns the keys of the rows of table whose column matches q, in key
// order: exactly what `pgphi search` returns (candidates through the blind
// index, decrypted, kept only when docs/SEARCH.md's predicate holds; rows
// changed since indexing are matched on their plaintext). It writes one
// audit record (command api.search: table, column, kind, reason, number of
// keys; never the query value or the keys).
func (c *Client) Find(ctx context.Context, table, column string, q Query, reason string) ([]Key, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, ErrReason
	}
	m, _, _, err := c.state(ctx)
	if err != nil {
		return nil, err
	}
	res, err := c.find(ctx, m, table, column, q)
	if err != nil {
		return nil, fmt.Errorf("pgphi: %w", redact.Error(err))
	}
	out := make([]Key, len(res.Keys))
	for i, k := range res.Keys {
		out[i] = Key{}
		for j, name := range res.KeyColumns {
			out[i][name] = k[j]
		}
	}
	if err := c.record(ctx, "api.search", res.Table, []string{res.Column}, reason, int64(len(out)), map[string]string{"kind": string(q.Kind)}); err != nil {
		return nil, err
	}
	return out, nil
}

// Read is the compatibility read of one value during cutover (seed 000's
// compatibility layer): the plaintext column while use_encrypted_search is
// off and the row has a plaintext value, else the decrypted ciphertext
// (after cleanup always; a value written encrypted only under
// require_encryption; after use_encrypted_search, unless the application
// changed the plaintext since it was encrypted and pgphi's catch-up has not
// run yet). The value is canonical text. Reading the ciphertext writes one
// audit record (command api.read); reading the plaintext writes none (it is
// what the application read before pgphi). A row that does not exist gives
// ErrNoRow.
func (c *Client) Read(ctx context.Context, table, column string, key Key, reason string) (text string, null bool, err error) {
	if strings.TrimSpace(reason) == "" {
		return "", false, ErrReason
	}
	m, useEncrypted, _, err := c.state(ctx)
	if err != nil {
		return "", false, err
	}
	t, col, err := m.target(table, column)
	if err != nil {
		return "", false, err
	}
	b, err := binding(t, col.Name, key)
	if err != nil {
		return "", false, err
	}
	plain := !useEncrypted && !col.Cleaned
	var where []string
	var args []any
	for i, k := range t.PrimaryKey {
		// Compared as text: the key is given as canonical text, and the
		// session has the canonical settings.
		where = append(where, fmt.Sprintf("%s = $%d", pgx.Identifier{k.Name}.Sanitize(), i+1))
		args = append(args, b.PrimaryKey[i])
	}
	sel := pgx.Identifier{col.Encrypted}.Sanitize() + ", NULL::text"
	if !col.Cleaned {
		sel = pgx.Identifier{col.Encrypted}.Sanitize() + ", " + pgx.Identifier{col.Name}.Sanitize() + "::text"
	}
	var ct []byte
	var pt *string
	err = c.inTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE %s", sel, t.Ident(), strings.Join(where, " AND ")), args...).Scan(&ct, &pt)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, fmt.Errorf("%w in %s", ErrNoRow, t.QualifiedName())
	}
	if err != nil {
		return "", false, fmt.Errorf("pgphi: reading %s.%s: %w", t.QualifiedName(), col.Name, redact.Error(err))
	}
	switch {
	case pt != nil && (plain || ct == nil):
		// Before use_encrypted_search, or a value the application changed
		// since it was encrypted (its ciphertext is cleared until pgphi's
		// catch-up): the plaintext is current.
		return *pt, false, nil
	case ct == nil:
		return "", true, nil
	}
	// After use_encrypted_search, after cleanup, or a value written
	// encrypted only (require_encryption): the ciphertext.
	v, err := c.ring.Opener(t.QualifiedName(), col.Name).Open(ct, b)
	if err == nil && v.Type != col.ValueType {
		err = fmt.Errorf("%w: value type %s, the column's is %s", envelope.ErrFormat, v.Type, col.ValueType)
	}
	if err != nil {
		return "", false, fmt.Errorf("pgphi: %s.%s: %w", t.QualifiedName(), col.Name, err)
	}
	if err := c.record(ctx, "api.read", t.QualifiedName(), []string{col.Name}, reason, 1, nil); err != nil {
		return "", false, err
	}
	return v.Text, false, nil
}
