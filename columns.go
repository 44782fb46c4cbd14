package pgphi

import (
	"context"
	"fmt"

	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/redact"
)

// Column describes one protected column as apply recorded it.
type Column struct {
	Table     string   `json:"table"`            // schema.table
	Column    string   `json:"column"`           // the plaintext column
	Type      string   `json:"type"`             // its PostgreSQL type
	Key       []string `json:"key"`              // the table's key columns, in order
	Encrypted string   `json:"encrypted_column"` // <col>_encrypted
	Index     string   `json:"index_column"`     // <col>_bidx; "" when not searchable
	Search    []string `json:"search"`           // search kinds of the column
	Phase     string   `json:"phase"`            // expanded (plaintext kept), cleaned or restoring
}

// Columns lists the protected columns, by table and column.
func (c *Client) Columns(ctx context.Context) ([]Column, error) {
	m, _, _, err := c.state(ctx)
	if err != nil {
		return nil, err
	}
	var out []Column
	for _, t := range m.plan.Tables {
		out = append(out, columnsOf(t)...)
	}
	return out, nil
}

func columnsOf(t *engine.Target) []Column {
	var out []Column
	var key []string
	for _, k := range t.PrimaryKey {
		key = append(key, k.Name)
	}
	for _, col := range t.Columns {
		phase := "expanded"
		switch {
		case col.Restoring:
			phase = "restoring"
		case col.Cleaned:
			phase = "cleaned"
		}
		search := []string{}
		for _, k := range col.Search {
			search = append(search, string(k))
		}
		out = append(out, Column{Table: t.QualifiedName(), Column: col.Name, Type: col.Column.Type, Key: key,
			Encrypted: col.Encrypted, Index: col.Index, Search: search, Phase: phase})
	}
	return out
}

// Flags are the cutover flags (pgphi flags set).
type Flags struct {
	UseEncryptedSearch bool `json:"use_encrypted_search"`
	MigrationComplete  bool `json:"migration_complete"`
	RequireEncryption  bool `json:"require_encryption"`
}

// Flags reads the cutover flags as they are now.
func (c *Client) Flags(ctx context.Context) (Flags, error) {
	var f Flags
	err := c.querier(ctx).QueryRow(ctx, `SELECT pgphi.flag('use_encrypted_search'), pgphi.flag('migration_complete'), pgphi.flag('require_encryption')`).
		Scan(&f.UseEncryptedSearch, &f.MigrationComplete, &f.RequireEncryption)
	if err != nil {
		return f, fmt.Errorf("pgphi: reading flags: %w", redact.Error(err))
	}
	return f, nil
}

// Column describes one protected column from the metadata the client has
// (no round trip; the calls that seal and search reload it when cleanup or
// rollback changed it).
func (c *Client) Column(table, column string) (Column, error) {
	m, err := c.load(context.Background(), c.currentVersion())
	if err != nil {
		return Column{}, err
	}
	t, col, err := m.target(table, column)
	if err != nil {
		return Column{}, err
	}
	for _, info := range columnsOf(t) {
		if info.Column == col.Name {
			return info, nil
		}
	}
	return Column{}, fmt.Errorf("%w: %s.%s", ErrNotProtected, t.QualifiedName(), column)
}
