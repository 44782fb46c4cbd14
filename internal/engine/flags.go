package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/catalog"
)

// Flags applications read during cutover (SELECT pgphi.flag('name')).
const (
	FlagUseEncryptedSearch = "use_encrypted_search"
	FlagMigrationComplete  = "migration_complete"
	FlagRequireEncryption  = "require_encryption"
)

// FlagNames lists the flags in display order.
var FlagNames = []string{FlagUseEncryptedSearch, FlagMigrationComplete, FlagRequireEncryption}

// Flag is one cutover flag.
type Flag struct {
	Name      string     `json:"name"`
	Enabled   bool       `json:"enabled"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	UpdatedBy *string    `json:"updated_by,omitempty"`
}

// GetFlags reads every flag.
func GetFlags(ctx context.Context, q Querier) ([]Flag, error) {
	rows, err := q.Query(ctx, "SELECT name, enabled, updated_at, updated_by FROM pgphi.flags")
	if err != nil {
		return nil, fmt.Errorf("reading flags: %w", err)
	}
	defer rows.Close()
	var out []Flag
	for rows.Next() {
		var f Flag
		if err := rows.Scan(&f.Name, &f.Enabled, &f.UpdatedAt, &f.UpdatedBy); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Flag) int { return slices.Index(FlagNames, a.Name) - slices.Index(FlagNames, b.Name) })
	return out, rows.Err()
}

// SetFlag turns a flag on or off through pgphi.flag_set, which records who
// (the effective database role) and when itself: no role may write
// pgphi.flags directly.
func SetFlag(ctx context.Context, q *pgxpool.Pool, name string, on bool) error {
	if !slices.Contains(FlagNames, name) {
		return fmt.Errorf("unknown flag `%s` (flags: %v)", name, FlagNames)
	}
	if _, err := q.Exec(ctx, "SELECT pgphi.flag_set($1, $2)", name, on); err != nil {
		return fmt.Errorf("setting flag %s: %w", name, err)
	}
	return nil
}

// LoadCleaned reads which protected columns cleanup has dropped, keyed
// "schema.table.column", for catalog.Resolve. No state yet means none.
func LoadCleaned(ctx context.Context, q Querier) (map[string]catalog.Cleaned, error) {
	out := map[string]catalog.Cleaned{}
	rows, err := q.Query(ctx, `SELECT table_name, column_name, original_type, encrypted_column, COALESCE(index_column, ''), phase = 'restoring'
		FROM pgphi.protected_columns WHERE phase IN ('cleaned', 'restoring')`)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "42703" || pgErr.Code == "3F000") {
			return out, nil // no pgphi state (or an older one): nothing cleaned
		}
		return nil, fmt.Errorf("reading cleanup state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var table, column string
		var c catalog.Cleaned
		if err := rows.Scan(&table, &column, &c.OriginalType, &c.Encrypted, &c.Index, &c.Restoring); err != nil {
			return nil, err
		}
		out[table+"."+column] = c
	}
	return out, rows.Err()
}
