package keys

import (
	"bytes"
	"context"
	"fmt"
	"slices"
)

// RewrapResult says what Rewrap did (no secrets).
type RewrapResult struct {
	From, To string // KEK kinds
	Keys     int    // data keys rewrapped
	// Mechanism is the PKCS#11 mechanism of the new KEK ("" otherwise).
	Mechanism string
}

// Rewrap moves every data key from the KEK of from to the KEK of to, in one
// transaction that holds the key tables exclusively: it unwraps each data
// key with from, wraps it with to (a new salt for a passphrase; the token's
// mechanism for PKCS#11), checks that to unwraps what it wrapped, and
// replaces the KEK parameters and the wrapped keys together. No ciphertext
// changes: the data keys stay the same. Afterwards from no longer unwraps
// them (a wrong-KEK error). It needs the rights of pgphi's dba group.
func Rewrap(ctx context.Context, db DB, from, to KEKProvider) (RewrapResult, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return RewrapResult{}, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE pgphi.kek, pgphi.data_keys IN EXCLUSIVE MODE"); err != nil {
		return RewrapResult{}, fmt.Errorf("keys: locking key tables: %w", err)
	}
	ring, err := Load(ctx, tx, from)
	if err != nil {
		return RewrapResult{}, fmt.Errorf("keys: the current KEK: %w", err)
	}
	defer ring.forget()
	var params KEKParams
	if w, ok := to.(KeyWrapper); ok {
		params, err = w.NewParams()
	} else {
		params, err = NewKEKParams(kindOf(to))
	}
	if err != nil {
		return RewrapResult{}, fmt.Errorf("keys: the new KEK: %w", err)
	}
	wrap, unwrap, err := kekOps(to, params)
	if err != nil {
		return RewrapResult{}, fmt.Errorf("keys: the new KEK: %w", err)
	}
	defer releaseProvider(to)
	ids := make([]uint32, 0, len(ring.roots))
	for id := range ring.roots {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var oldKind string
	if err := tx.QueryRow(ctx, "SELECT kind FROM pgphi.kek WHERE id = 1").Scan(&oldKind); err != nil {
		return RewrapResult{}, err
	}
	if _, err := tx.Exec(ctx, `UPDATE pgphi.kek SET kind = $1, salt = $2, iterations = NULLIF($3::int, 0), mechanism = NULLIF($4, ''),
			token_label = NULLIF($5, ''), token_serial = NULLIF($6, ''), key_label = NULLIF($7, ''), key_id = $8 WHERE id = 1`,
		params.Kind, nilIfEmpty(params.Salt), params.Iterations, params.Mechanism, params.TokenLabel, params.TokenSerial, params.KeyLabel, nilIfEmpty(params.KeyID)); err != nil {
		return RewrapResult{}, fmt.Errorf("keys: recording the new KEK: %w", err)
	}
	for _, id := range ids {
		wrapped, err := wrap(id, ring.roots[id])
		if err != nil {
			return RewrapResult{}, fmt.Errorf("keys: wrapping data key %d under the new KEK: %w", id, err)
		}
		back, err := unwrap(id, wrapped)
		if err != nil || !bytes.Equal(back, ring.roots[id]) {
			return RewrapResult{}, fmt.Errorf("keys: the new KEK does not unwrap data key %d as wrapped: %v", id, err)
		}
		clear(back)
		if _, err := tx.Exec(ctx, "UPDATE pgphi.data_keys SET wrapped = $2 WHERE key_id = $1", int64(id), wrapped); err != nil {
			return RewrapResult{}, fmt.Errorf("keys: storing data key %d: %w", id, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return RewrapResult{}, err
	}
	// The old wrapped copies stay in the table files until vacuumed.
	_, _ = db.Exec(ctx, "VACUUM pgphi.kek, pgphi.data_keys")
	return RewrapResult{From: oldKind, To: params.Kind, Keys: len(ids), Mechanism: params.Mechanism}, nil
}

// forget clears the unwrapped data keys.
func (r *Keyring) forget() {
	for _, k := range r.roots {
		clear(k)
	}
}
