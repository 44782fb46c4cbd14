package keys

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ColumnUse is how many ciphertexts of one protected column a data key
// sealed. Column is the protected column's name (its ciphertexts are in
// its encrypted column until cleanup renames that).
type ColumnUse struct {
	Table       string `json:"table"` // schema-qualified
	Column      string `json:"column"`
	Ciphertexts int64  `json:"ciphertexts"`
}

// KeyStatus is one data key and everything that still needs it. It holds
// no key material.
type KeyStatus struct {
	ID        uint32    `json:"id"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	// Ciphertexts is the number of stored values sealed under this key, read
	// from the key id in each envelope header; Columns breaks it down.
	Ciphertexts int64       `json:"ciphertexts"`
	Columns     []ColumnUse `json:"columns"`
	// Encryptions is the usage counter: how many encryptions writers
	// reserved under this key (never fewer than they made).
	Encryptions int64 `json:"encryptions"`
	// BlindIndexes are the term families whose HMAC key derives from this
	// key ("schema.table.column/sub_kind").
	BlindIndexes []string `json:"blind_indexes"`
	// UniqueColumns are the `_uniq` digest columns whose key derives from
	// this key ("schema.table.column").
	UniqueColumns []string `json:"unique_columns"`
	// Backups are the ids of backups recorded in this database that hold
	// values sealed under this key.
	Backups []string `json:"backups"`
}

// InUse says whether anything still needs the key, and what, one phrase each.
func (k KeyStatus) InUse() []string {
	var out []string
	for _, c := range k.Columns {
		out = append(out, fmt.Sprintf("%d ciphertexts in %s.%s", c.Ciphertexts, c.Table, c.Column))
	}
	for _, b := range k.BlindIndexes {
		out = append(out, "blind index terms "+b)
	}
	for _, u := range k.UniqueColumns {
		out = append(out, "uniqueness digests "+u)
	}
	for _, b := range k.Backups {
		out = append(out, "backup "+b)
	}
	return out
}

// StatusReport is the usage of every data key.
type StatusReport struct {
	Keys []KeyStatus `json:"keys"`
	// Unknown are ciphertexts whose header names a key id this database
	// does not hold (a retired key's leftovers, or corruption).
	Unknown []UnknownUse `json:"unknown_key_ids"`
}

// UnknownUse counts ciphertexts under a key id with no stored data key.
type UnknownUse struct {
	KeyID uint32 `json:"key_id"`
	ColumnUse
}

// Key returns the status of key id, or false.
func (r *StatusReport) Key(id uint32) (KeyStatus, bool) {
	for _, k := range r.Keys {
		if k.ID == id {
			return k, true
		}
	}
	return KeyStatus{}, false
}

// Status counts, for every data key, the ciphertexts sealed under it in
// every protected column (expanded or cleaned), by reading the key id of
// each envelope header in SQL; and lists the blind-index families, the
// uniqueness digest columns (pgphi.unique_columns, where it exists) and the
// recorded backups that need it. It needs SELECT on the protected tables and
// no key material. Run it inside a transaction that locks the tables to get
// counts that no writer changes meanwhile.
func Status(ctx context.Context, db DB) (*StatusReport, error) {
	rep := &StatusReport{}
	byID := map[uint32]*KeyStatus{}
	rows, err := db.Query(ctx, `SELECT d.key_id, d.state, d.created_at, COALESCE(u.encryptions, 0)
		FROM pgphi.data_keys d LEFT JOIN pgphi.key_usage u USING (key_id) ORDER BY d.key_id`)
	if err != nil {
		return nil, fmt.Errorf("keys: reading data keys: %w", err)
	}
	for rows.Next() {
		var k KeyStatus
		var id int32
		if err := rows.Scan(&id, &k.State, &k.CreatedAt, &k.Encryptions); err != nil {
			rows.Close()
			return nil, err
		}
		k.ID = uint32(id)
		k.Columns, k.BlindIndexes, k.UniqueColumns, k.Backups = []ColumnUse{}, []string{}, []string{}, []string{}
		rep.Keys = append(rep.Keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keys: reading data keys: %w", err)
	}
	if len(rep.Keys) == 0 {
		return nil, ErrNotInitialized
	}
	for i := range rep.Keys {
		byID[rep.Keys[i].ID] = &rep.Keys[i]
	}
	rep.Unknown = []UnknownUse{}

	type column struct{ table, column, encrypted string }
	rows, err = db.Query(ctx, `SELECT table_name, column_name, encrypted_column FROM pgphi.protected_columns
		WHERE phase <> 'restoring' ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("keys: reading protected columns: %w", err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (column, error) {
		var c column
		return c, r.Scan(&c.table, &c.column, &c.encrypted)
	})
	if err != nil {
		return nil, fmt.Errorf("keys: reading protected columns: %w", err)
	}
	for _, c := range cols {
		schema, table, ok := strings.Cut(c.table, ".")
		if !ok {
			return nil, fmt.Errorf("keys: protected table %q is not schema-qualified", c.table)
		}
		// Byte 0 of an envelope is its version, bytes 1..4 the key id
		// (docs/FORMAT.md): grouping on them reads no value.
		q := fmt.Sprintf(`SELECT substring(%[1]s FROM 2 FOR 4), count(*) FROM %[2]s WHERE %[1]s IS NOT NULL GROUP BY 1`,
			pgx.Identifier{c.encrypted}.Sanitize(), pgx.Identifier{schema, table}.Sanitize())
		rows, err := db.Query(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("keys: counting ciphertexts of %s.%s by key: %w", c.table, c.column, err)
		}
		for rows.Next() {
			var hdr []byte
			var n int64
			if err := rows.Scan(&hdr, &n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("keys: counting ciphertexts of %s.%s by key: %w", c.table, c.column, err)
			}
			if len(hdr) != 4 {
				rep.Unknown = append(rep.Unknown, UnknownUse{ColumnUse: ColumnUse{Table: c.table, Column: c.column, Ciphertexts: n}})
				continue
			}
			id := binary.BigEndian.Uint32(hdr)
			use := ColumnUse{Table: c.table, Column: c.column, Ciphertexts: n}
			if k, ok := byID[id]; ok {
				k.Columns = append(k.Columns, use)
				k.Ciphertexts += n
			} else {
				rep.Unknown = append(rep.Unknown, UnknownUse{KeyID: id, ColumnUse: use})
			}
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("keys: counting ciphertexts of %s.%s by key: %w", c.table, c.column, err)
		}
	}

	// Blind-index families and uniqueness digest columns derive their keys
	// from a data key.
	if err := namesByKey(ctx, db, byID, "blind indexes",
		`SELECT key_id, table_name || '.' || column_name || '/' || sub_kind FROM pgphi.blind_indexes ORDER BY 2`,
		func(k *KeyStatus, name string) { k.BlindIndexes = append(k.BlindIndexes, name) }); err != nil {
		return nil, err
	}
	if err := namesByKey(ctx, db, byID, "uniqueness columns",
		`SELECT key_id, table_name || '.' || uniq_column FROM pgphi.unique_columns ORDER BY 2`,
		func(k *KeyStatus, name string) { k.UniqueColumns = append(k.UniqueColumns, name) }); err != nil {
		return nil, err
	}

	rows, err = db.Query(ctx, `SELECT backup_id, key_ids FROM pgphi.backups ORDER BY taken_at`)
	if err != nil {
		return nil, fmt.Errorf("keys: reading backups: %w", err)
	}
	for rows.Next() {
		var id string
		var kids []int32
		if err := rows.Scan(&id, &kids); err != nil {
			rows.Close()
			return nil, err
		}
		for _, kid := range kids {
			if k, ok := byID[uint32(kid)]; ok && !slices.Contains(k.Backups, id) {
				k.Backups = append(k.Backups, id)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keys: reading backups: %w", err)
	}
	return rep, nil
}

// namesByKey reads (key id, name) rows of query and gives each name to the
// status of its key (ids without a key are not counted here).
func namesByKey(ctx context.Context, db DB, byID map[uint32]*KeyStatus, what, query string, add func(*KeyStatus, string)) error {
	rows, err := db.Query(ctx, query)
	if err != nil {
		return fmt.Errorf("keys: reading %s: %w", what, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int32
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			return fmt.Errorf("keys: reading %s: %w", what, err)
		}
		if k, ok := byID[uint32(id)]; ok {
			add(k, name)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("keys: reading %s: %w", what, err)
	}
	return nil
}
