package keys

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/envelope"
)

// DB is the part of pgx the key store needs.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// ErrKEKKind is wrapped when the KEK given is of another kind than the one
// the keys are wrapped with (a passphrase for keys in a token, ...).
var ErrKEKKind = errors.New("keys: wrong kind of KEK")

// ErrNotInitialized is returned when the database holds no keys yet.
var ErrNotInitialized = errors.New("keys: no keys in this database (they are created once, by keys init)")

// Info describes a data key without its material.
type Info struct {
	ID        uint32
	State     string // active or retired
	CreatedAt time.Time
	KEKKind   string
}

// Init stores a key-encryption-key description and a first wrapped data key.
// When keys already exist it checks that the provider can unwrap them and
// returns created=false: running it twice is safe.
func Init(ctx context.Context, db DB, p KEKProvider) (created bool, err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE pgphi.kek IN EXCLUSIVE MODE"); err != nil {
		return false, fmt.Errorf("keys: locking key tables: %w", err)
	}
	var n int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM pgphi.kek").Scan(&n); err != nil {
		return false, err
	}
	if n > 0 {
		tx.Rollback(ctx)
		if _, err := Load(ctx, db, p); err != nil {
			return false, err
		}
		return false, nil
	}
	var params KEKParams
	if w, ok := p.(KeyWrapper); ok {
		params, err = w.NewParams()
	} else {
		params, err = NewKEKParams(kindOf(p))
	}
	if err != nil {
		return false, err
	}
	wrap, _, err := kekOps(p, params)
	if err != nil {
		return false, err
	}
	defer releaseProvider(p)
	dk, err := GenerateDataKey()
	if err != nil {
		return false, err
	}
	defer clear(dk)
	wrapped, err := wrap(1, dk)
	if err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO pgphi.kek (id, kind, salt, iterations, mechanism, token_label, token_serial, key_label, key_id)
		VALUES (1, $1, $2, NULLIF($3::int, 0), NULLIF($4, ''), NULLIF($5, ''), NULLIF($6, ''), NULLIF($7, ''), $8)`,
		params.Kind, params.Salt, params.Iterations, params.Mechanism, params.TokenLabel, params.TokenSerial, params.KeyLabel, nilIfEmpty(params.KeyID)); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO pgphi.data_keys (key_id, wrapped, state) VALUES (1, $1, 'active')", wrapped); err != nil {
		return false, err
	}
	return true, tx.Commit(ctx)
}

func kindOf(p KEKProvider) string {
	switch p.Name() {
	case KindKeyFile, KindPKCS11:
		return p.Name()
	}
	return KindPassphrase
}

// releaseProvider logs a provider that holds a session (a PKCS#11 token)
// out once the data keys are unwrapped; it logs in again when next used.
func releaseProvider(p KEKProvider) {
	if c, ok := p.(io.Closer); ok {
		c.Close()
	}
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// wrapFunc wraps a data key under the KEK; unwrapFunc reverses it.
type (
	wrapFunc   func(id uint32, dataKey []byte) ([]byte, error)
	unwrapFunc func(id uint32, wrapped []byte) ([]byte, error)
)

// kekOps returns how p wraps and unwraps data keys for params: in its token
// for a KeyWrapper, else with AES-256-GCM under the KEK it returns (obtained
// once).
func kekOps(p KEKProvider, params KEKParams) (wrapFunc, unwrapFunc, error) {
	if w, ok := p.(KeyWrapper); ok {
		return func(id uint32, dk []byte) ([]byte, error) { return w.WrapKey(params, id, dk) },
			func(id uint32, wrapped []byte) ([]byte, error) { return w.UnwrapKey(params, id, wrapped) }, nil
	}
	kek, err := p.KEK(params)
	if err != nil {
		return nil, nil, err
	}
	return func(id uint32, dk []byte) ([]byte, error) { return Wrap(kek, id, dk) },
		func(id uint32, wrapped []byte) ([]byte, error) { return Unwrap(kek, id, wrapped) }, nil
}

// Rotate adds a new data key and makes it the active one; older keys stay
// available for decryption. It returns the new key id.
func Rotate(ctx context.Context, db DB, p KEKProvider) (uint32, error) {
	ring, err := Load(ctx, db, p)
	if err != nil {
		return 0, err
	}
	defer releaseProvider(p)
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE pgphi.data_keys IN EXCLUSIVE MODE"); err != nil {
		return 0, err
	}
	var next uint32
	if err := tx.QueryRow(ctx, "SELECT COALESCE(max(key_id), 0) + 1 FROM pgphi.data_keys").Scan(&next); err != nil {
		return 0, err
	}
	dk, err := GenerateDataKey()
	if err != nil {
		return 0, err
	}
	wrapped, err := ring.wrap(next, dk)
	if err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, "UPDATE pgphi.data_keys SET state = 'retired' WHERE state = 'active'"); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO pgphi.data_keys (key_id, wrapped, state) VALUES ($1, $2, 'active')", next, wrapped); err != nil {
		return 0, err
	}
	return next, tx.Commit(ctx)
}

// List describes the stored data keys. It needs no key material.
func List(ctx context.Context, db DB) ([]Info, error) {
	rows, err := db.Query(ctx, `SELECT d.key_id, d.state, d.created_at, k.kind
		FROM pgphi.data_keys d CROSS JOIN pgphi.kek k ORDER BY d.key_id`)
	if err != nil {
		return nil, err
	}
	var out []Info
	for rows.Next() {
		var i Info
		var id int32
		if err := rows.Scan(&id, &i.State, &i.CreatedAt, &i.KEKKind); err != nil {
			return nil, err
		}
		i.ID = uint32(id)
		out = append(out, i)
	}
	return out, rows.Err()
}

// Keyring holds unwrapped data keys in memory for one process. It hands out
// per-column sealers and openers and never exposes key bytes.
type Keyring struct {
	wrap   wrapFunc // wraps a new data key under the KEK (Rotate)
	active uint32
	roots  map[uint32][]byte

	mu      sync.Mutex
	sealers map[string]*envelope.Sealer
	openers map[string]*envelope.Opener
}

// StoredParams reads the parameters of the KEK the data keys are wrapped
// with (never a secret).
func StoredParams(ctx context.Context, db DB) (KEKParams, error) {
	var params KEKParams
	var mech, tokLabel, tokSerial, keyLabel *string
	err := db.QueryRow(ctx, `SELECT kind, COALESCE(salt, ''::bytea), COALESCE(iterations, 0),
		mechanism, token_label, token_serial, key_label, COALESCE(key_id, ''::bytea) FROM pgphi.kek WHERE id = 1`).
		Scan(&params.Kind, &params.Salt, &params.Iterations, &mech, &tokLabel, &tokSerial, &keyLabel, &params.KeyID)
	if errors.Is(err, pgx.ErrNoRows) {
		return KEKParams{}, ErrNotInitialized
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return KEKParams{}, ErrNotInitialized
	}
	if err != nil {
		return KEKParams{}, fmt.Errorf("keys: reading key parameters: %w", err)
	}
	for _, f := range []struct {
		dst *string
		src *string
	}{{&params.Mechanism, mech}, {&params.TokenLabel, tokLabel}, {&params.TokenSerial, tokSerial}, {&params.KeyLabel, keyLabel}} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	return params, nil
}

// Load reads the wrapped keys and unwraps them with the provider's KEK.
// A wrong passphrase or key file gives ErrWrongKEK.
func Load(ctx context.Context, db DB, p KEKProvider) (*Keyring, error) {
	params, err := StoredParams(ctx, db)
	if err != nil {
		return nil, err
	}
	if params.Kind != kindOf(p) {
		return nil, fmt.Errorf("%w: this database's keys are wrapped with a %s KEK, but a %s was given (set %s)", ErrKEKKind,
			params.Kind, p.Name(), map[string]string{KindPassphrase: EnvPassphraseFile + " or " + EnvPassphrase, KindKeyFile: EnvKeyFile,
				KindPKCS11: EnvPKCS11Module + ", " + EnvPKCS11Token + ", " + EnvPKCS11KeyLabel + " and " + EnvPKCS11PIN}[params.Kind])
	}
	wrap, unwrap, err := kekOps(p, params)
	if err != nil {
		return nil, err
	}
	defer releaseProvider(p)
	rows, err := db.Query(ctx, "SELECT key_id, wrapped, state FROM pgphi.data_keys ORDER BY key_id")
	if err != nil {
		return nil, fmt.Errorf("keys: reading data keys: %w", err)
	}
	defer rows.Close()
	ring := &Keyring{wrap: wrap, roots: map[uint32][]byte{}, sealers: map[string]*envelope.Sealer{}, openers: map[string]*envelope.Opener{}}
	for rows.Next() {
		var id int32
		var wrapped []byte
		var st string
		if err := rows.Scan(&id, &wrapped, &st); err != nil {
			return nil, err
		}
		root, err := unwrap(uint32(id), wrapped)
		if err != nil {
			return nil, err
		}
		ring.roots[uint32(id)] = root
		if st == "active" {
			ring.active = uint32(id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if ring.active == 0 {
		return nil, ErrNotInitialized
	}
	return ring, nil
}

// ActiveKeyID is the id new ciphertexts are written with.
func (r *Keyring) ActiveKeyID() uint32 { return r.active }

// Sealer returns the sealer for new ciphertexts of table.column (schema-qualified table).
func (r *Keyring) Sealer(table, column string) (*envelope.Sealer, error) {
	id := table + "\x00" + column
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sealers[id]; ok {
		return s, nil
	}
	ck, err := ColumnKey(r.roots[r.active], table, column)
	if err != nil {
		return nil, err
	}
	s, err := envelope.NewSealer(envelope.KeyID(r.active), ck)
	if err != nil {
		return nil, err
	}
	r.sealers[id] = s
	return s, nil
}

// Opener returns an opener for ciphertexts of table.column under any known key id.
func (r *Keyring) Opener(table, column string) *envelope.Opener {
	id := table + "\x00" + column
	r.mu.Lock()
	defer r.mu.Unlock()
	if o, ok := r.openers[id]; ok {
		return o
	}
	o := envelope.NewOpener(func(kid envelope.KeyID) ([]byte, error) {
		root, ok := r.roots[uint32(kid)]
		if !ok {
			return nil, fmt.Errorf("keys: unknown key id %d", kid)
		}
		return ColumnKey(root, table, column)
	})
	r.openers[id] = o
	return o
}

// PurposeKey derives a key for another purpose (blind indexes, audit) from the active root.
func (r *Keyring) PurposeKey(p Purpose, context ...string) ([]byte, error) {
	return DeriveKey(r.roots[r.active], p, context...)
}

// PurposeKeyFor derives a purpose key from the data key with the given id;
// blind indexes stay on the key they were built with until re-indexed.
func (r *Keyring) PurposeKeyFor(id uint32, p Purpose, context ...string) ([]byte, error) {
	root, ok := r.roots[id]
	if !ok {
		return nil, fmt.Errorf("keys: unknown key id %d", id)
	}
	return DeriveKey(root, p, context...)
}
