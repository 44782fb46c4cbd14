package keys

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrKeyInUse is wrapped by Retire's refusal of a key that something still
// needs; the error lists what.
var ErrKeyInUse = errors.New("keys: the data key is still in use")

// ErrActiveKey is wrapped by Retire's refusal of the active key.
var ErrActiveKey = errors.New("keys: the active data key cannot be retired")

// ErrNoSuchKey is wrapped when a key id names no stored data key.
var ErrNoSuchKey = errors.New("keys: no such data key")

// RetireOptions qualify what counts as a use of the key.
type RetireOptions struct {
	// BackupsDestroyedBefore, when set, declares that every backup taken
	// before it has been destroyed: those no longer keep the key in use.
	BackupsDestroyedBefore time.Time
}

// Retire destroys the wrapped copy of data key id once nothing needs it: no
// ciphertext in any protected column (expanded or cleaned) names it, no
// blind-index family or uniqueness digest column derives from it, and no
// recorded backup (taken after
// opts.BackupsDestroyedBefore) holds values under it. Otherwise it returns
// an error wrapping ErrKeyInUse that lists each use. The active key is
// refused. It runs in one transaction that holds the protected tables in
// SHARE mode (no write can add a ciphertext between the count and the
// delete) and needs the rights of pgphi's dba group (DELETE on
// pgphi.data_keys). It returns the key's status as it was retired.
func Retire(ctx context.Context, db DB, id uint32, opts RetireOptions) (KeyStatus, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return KeyStatus{}, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE pgphi.data_keys IN EXCLUSIVE MODE"); err != nil {
		return KeyStatus{}, fmt.Errorf("keys: locking the data keys: %w", err)
	}
	var state string
	err = tx.QueryRow(ctx, "SELECT state FROM pgphi.data_keys WHERE key_id = $1", int64(id)).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return KeyStatus{}, fmt.Errorf("%w: %d (retired already, or never created)", ErrNoSuchKey, id)
	}
	if err != nil {
		return KeyStatus{}, err
	}
	if state == "active" {
		return KeyStatus{}, fmt.Errorf("%w: key %d is the one new values are sealed with; rotate first", ErrActiveKey, id)
	}
	rows, err := tx.Query(ctx, "SELECT DISTINCT table_name FROM pgphi.protected_columns ORDER BY 1")
	if err != nil {
		return KeyStatus{}, err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return KeyStatus{}, err
	}
	for _, t := range tables {
		schema, name, _ := strings.Cut(t, ".")
		if _, err := tx.Exec(ctx, "LOCK TABLE "+pgx.Identifier{schema, name}.Sanitize()+" IN SHARE MODE"); err != nil {
			return KeyStatus{}, fmt.Errorf("keys: locking %s against writes: %w", t, err)
		}
	}
	rep, err := Status(ctx, tx)
	if err != nil {
		return KeyStatus{}, err
	}
	k, _ := rep.Key(id)
	if !opts.BackupsDestroyedBefore.IsZero() {
		rows, err := tx.Query(ctx, "SELECT backup_id FROM pgphi.backups WHERE taken_at >= $1 AND $2 = ANY (key_ids)", opts.BackupsDestroyedBefore, int64(id))
		if err != nil {
			return KeyStatus{}, err
		}
		if k.Backups, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return KeyStatus{}, err
		}
	}
	if uses := k.InUse(); len(uses) > 0 {
		return k, fmt.Errorf("%w: key %d is needed by %s", ErrKeyInUse, id, strings.Join(uses, "; "))
	}
	if _, err := tx.Exec(ctx, "DELETE FROM pgphi.data_keys WHERE key_id = $1", int64(id)); err != nil {
		return k, fmt.Errorf("keys: destroying the wrapped copy of key %d: %w", id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return k, err
	}
	// The deleted row version stays in the table file until vacuumed.
	_, _ = db.Exec(ctx, "VACUUM pgphi.data_keys")
	return k, nil
}
