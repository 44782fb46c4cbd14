package engine

import (
	"context"
	"fmt"
	"strings"
)

// plaintextOp is the protected columns' plaintext as pgphi records and
// changes it: its row in pgphi.protected_columns (type, class, where its
// ciphertext and terms go, whether it was NOT NULL), and a NOT NULL turned
// into pgphi's CHECK (plaintext or ciphertext), which the application's
// ciphertext-only writes need. Cleanup drops the plaintext, remembering
// what goes with it (removed.go) and carrying its comment and NOT NULL to
// the ciphertext; rollback gives the plaintext its NOT NULL back and
// forgets the table's records.
type plaintextOp struct{ t *Target }

func (s plaintextOp) Describe() string {
	var cols []string
	for _, c := range s.t.Columns {
		cols = append(cols, c.Name)
	}
	return fmt.Sprintf("plaintext %s: record %s as protected; a NOT NULL becomes a CHECK on plaintext or ciphertext", s.t.QualifiedName(), strings.Join(cols, ", "))
}

func (plaintextOp) Stage() Stage { return StageExpand }

// Apply turns a NOT NULL plaintext into "plaintext or ciphertext" (under
// require_encryption the application writes NULL plaintext; the CHECK is
// added NOT VALID and validated after expand, validateNotNull) and records
// the columns, the NOT NULL they had included.
func (s plaintextOp) Apply(ctx context.Context, o *opTx) error {
	t, tx := s.t, o.tx
	for i := range t.Columns {
		c := &t.Columns[i]
		var attNotNull, hasCheck bool
		var recorded *bool
		err := tx.QueryRow(ctx, `SELECT a.attnotnull,
			EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid OPERATOR(pg_catalog.=) a.attrelid AND k.conname OPERATOR(pg_catalog.=) $3),
			(SELECT p.original_not_null FROM pgphi.protected_columns p WHERE p.table_name OPERATOR(pg_catalog.=) $4 AND p.column_name OPERATOR(pg_catalog.=) $2)
			FROM pg_catalog.pg_attribute a
			WHERE a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND a.attname OPERATOR(pg_catalog.=) $2 AND NOT a.attisdropped`,
			t.Ident(), c.Name, c.notNullCheck(), t.QualifiedName()).Scan(&attNotNull, &hasCheck, &recorded)
		if err != nil {
			return fmt.Errorf("reading NOT NULL of %s.%s: %w", t.QualifiedName(), c.Name, err)
		}
		orig := attNotNull || (recorded != nil && *recorded)
		o.notNull[c.Name] = orig
		var stmts []string
		if orig && !hasCheck {
			stmts = append(stmts, t.notNullCheckSQL(c)...)
		}
		if attNotNull {
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL", t.Ident(), ident(c.Name)))
		}
		if err := o.exec(ctx, stmts...); err != nil {
			return err
		}
	}
	for _, c := range t.Columns {
		var index *string
		if c.HasIndex() {
			index = &c.Index
		}
		if _, err := tx.Exec(ctx, `INSERT INTO pgphi.protected_columns (table_name, column_name, encrypted_column, original_type, class, plan_id, index_column, original_not_null)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (table_name, column_name) DO UPDATE SET index_column = EXCLUDED.index_column, plan_id = EXCLUDED.plan_id,
				original_not_null = COALESCE(pgphi.protected_columns.original_not_null, false) OR EXCLUDED.original_not_null
			WHERE pgphi.protected_columns.phase = 'expanded'`,
			t.QualifiedName(), c.Name, c.Encrypted, c.Type, c.Class, o.r.Plan.ID, index, o.notNull[c.Name]); err != nil {
			return err
		}
	}
	return nil
}

// Cleanup drops the plaintext. Before, it records what the drop takes
// with it (defaults, constraints, indexes, statistics, comments), for a
// rollback to put back, and gives each column's comment to its
// ciphertext. After, a column that was NOT NULL has its ciphertext NOT
// NULL (pgphi's CHECK named the plaintext and went with it), the
// ciphertext takes the plaintext's name if asked, and the columns are
// recorded as cleaned.
func (s plaintextOp) Cleanup(ctx context.Context, o *opTx) error {
	t, tx := s.t, o.tx
	if err := t.recordRemoved(ctx, tx); err != nil {
		return err
	}
	var drops []string
	for _, c := range t.Columns {
		// The column's comment goes to its ciphertext (and back at rollback).
		if err := copyColumnComment(ctx, tx, t, c.Name, c.Encrypted); err != nil {
			return err
		}
		drops = append(drops, "DROP COLUMN "+ident(c.Name))
	}
	stmts := []string{fmt.Sprintf("ALTER TABLE %s %s", t.Ident(), strings.Join(drops, ", "))}
	for _, c := range t.Columns {
		if o.notNull[c.Name] {
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", t.Ident(), ident(c.Encrypted)))
		}
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", t.Ident(), ident(c.cleanupNotNullCheck())))
	}
	for _, c := range t.Columns {
		enc := c.Encrypted
		if o.rename {
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s RENAME COLUMN %s TO %s", t.Ident(), ident(c.Encrypted), ident(c.Name)))
			enc = c.Name
		}
		stmts = append(stmts, fmt.Sprintf(`UPDATE pgphi.protected_columns SET phase = 'cleaned', cleaned_at = now(), encrypted_column = %s
			WHERE table_name = %s AND column_name = %s`, quoteLiteral(enc), quoteLiteral(t.QualifiedName()), quoteLiteral(c.Name)))
	}
	return o.exec(ctx, stmts...)
}

// Rollback puts back the plaintext's NOT NULL in place of pgphi's CHECK
// (the CHECK rollback validated beforehand, prepareNotNull, spares the
// scan; a row written only as ciphertext refused the rollback earlier) and
// forgets what pgphi recorded of the columns.
func (s plaintextOp) Rollback(ctx context.Context, o *opTx) error {
	t := s.t
	var drops []string
	for i := range t.Columns {
		drops = append(drops, "DROP CONSTRAINT IF EXISTS "+ident(t.Columns[i].notNullCheck()))
	}
	stmts := []string{fmt.Sprintf("ALTER TABLE %s %s", t.Ident(), strings.Join(drops, ", "))}
	for _, c := range t.Columns {
		if o.notNull[c.Name] {
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", t.Ident(), ident(c.Name)))
		}
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", t.Ident(), ident(c.restoreNotNullCheck())))
	}
	if err := o.exec(ctx, stmts...); err != nil {
		return err
	}
	for _, q := range []string{
		"DELETE FROM pgphi.protected_columns WHERE table_name = $1",
		"DELETE FROM pgphi.column_rules WHERE table_name = $1",
		"DELETE FROM pgphi.removed_objects WHERE table_name = $1",
	} {
		if _, err := o.tx.Exec(ctx, q, t.QualifiedName()); err != nil {
			return err
		}
	}
	return nil
}
