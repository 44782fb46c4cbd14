package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/internal/catalog"
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

// The plaintext is the one operation with work outside the locks of
// expand, cleanup and rollback.
var _ unlocked = plaintextOp{}

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

// AfterExpand validates the CHECKs that stand for NOT NULL
// (validateNotNull) and records the columns' CHECKs and domain as
// validation rules (rules.go): read again at every apply while the
// plaintext is there.
func (s plaintextOp) AfterExpand(ctx context.Context, o *opTx) error {
	r, t := o.r, s.t
	if err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error { return t.recordRules(ctx, tx) }); err != nil {
		return err
	}
	return r.validateNotNull(ctx, t)
}

// PrepareCleanup proves the ciphertext NOT NULL where the plaintext was,
// before cleanup's lock (prepareCiphertextNotNull).
func (s plaintextOp) PrepareCleanup(ctx context.Context, o *opTx) error {
	return o.r.prepareCiphertextNotNull(ctx, s.t)
}

// PrepareRollback brings the plaintext back before rollback's lock: after
// cleanup, the columns re-created and filled by decryption
// (restorePlaintext); before, the values the application wrote only as
// ciphertext decrypted into them (restoreCiphertextOnly). Then it proves
// the NOT NULL the plaintext had (prepareNotNull) and, after cleanup, puts
// back what cleanup removed with it (restoreRemoved).
func (s plaintextOp) PrepareRollback(ctx context.Context, o *opTx) error {
	r, t := o.r, s.t
	cleaned := t.Cleaned()
	if cleaned {
		if err := r.restorePlaintext(ctx, t); err != nil {
			return err
		}
	} else if err := r.restoreCiphertextOnly(ctx, t); err != nil {
		return err
	}
	if err := r.prepareNotNull(ctx, t); err != nil {
		return err
	}
	if cleaned {
		return r.restoreRemoved(ctx, t)
	}
	return nil
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

// NOT NULL of a protected column, across the lifecycle: expand turns it
// into pgphi's CHECK (plaintext or ciphertext) and validates that after its
// transaction; cleanup proves the ciphertext NOT NULL before its lock and
// sets it under it; rollback proves the plaintext NOT NULL before its lock
// and sets it under it.

// notNullCheck names the CHECK that stands for a protected column's NOT NULL
// from expand until cleanup: the plaintext or the ciphertext is there.
func (c *TargetColumn) notNullCheck() string {
	return objectName(catalog.PgphiConstraintPrefix+"not_null_", c.Name)
}

// notNullCheckSQL adds that CHECK without reading the table (NOT VALID;
// validateNotNull validates it later under a lock that lets writes through)
// and drops the column's NOT NULL, in the expand transaction. Built-in
// syntax only: the check runs as the writer.
func (t *Target) notNullCheckSQL(c *TargetColumn) []string {
	return []string{
		fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s IS NOT NULL OR %s IS NOT NULL) NOT VALID",
			t.Ident(), ident(c.notNullCheck()), ident(c.Name), ident(c.Encrypted)),
	}
}

// validateNotNull validates the CHECKs that stand for NOT NULL (added NOT
// VALID by expand): VALIDATE CONSTRAINT takes SHARE UPDATE EXCLUSIVE, so
// the application keeps writing while the table is read.
func (r *Runner) validateNotNull(ctx context.Context, t *Target) error {
	// A rollback that stopped after prepareNotNull left CHECK (col IS NOT
	// NULL): it would refuse the NULL plaintext of ciphertext-only writes;
	// a cleanup that stopped after prepareCiphertextNotNull left CHECK
	// (col_encrypted IS NOT NULL): it would refuse plaintext-only writes.
	var stale, names []string
	for i := range t.Columns {
		stale = append(stale, t.Columns[i].restoreNotNullCheck(), t.Columns[i].cleanupNotNullCheck())
		names = append(names, t.Columns[i].notNullCheck())
	}
	if err := r.alterChecks(ctx, t, stale, false, "drop", "DROP CONSTRAINT IF EXISTS"); err != nil {
		return err
	}
	return r.alterChecks(ctx, t, names, true, "validate", "VALIDATE CONSTRAINT")
}

// alterChecks runs ALTER TABLE t <action> name, each through r.ddl's lock
// timeout and retries, for each of names that t has (only those not
// validated yet, with notValidated).
func (r *Runner) alterChecks(ctx context.Context, t *Target, names []string, notValidated bool, verb, action string) error {
	rows, err := r.Pool.Query(ctx, `SELECT conname::pg_catalog.text FROM pg_catalog.pg_constraint
		WHERE conrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND conname OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[]) AND NOT (convalidated AND $3)`, t.Ident(), names, notValidated)
	if err != nil {
		return fmt.Errorf("reading NOT NULL checks of %s: %w", t.QualifiedName(), err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("reading NOT NULL checks of %s: %w", t.QualifiedName(), err)
	}
	for _, name := range found {
		err := r.ddl(ctx, verb+" "+name+" on "+t.QualifiedName(), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s %s %s", t.Ident(), action, ident(name)))
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// originalNotNull reads which protected columns of t were NOT NULL before
// expand (pgphi.protected_columns.original_not_null).
func originalNotNull(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, t *Target) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT column_name, COALESCE(original_not_null, false) FROM pgphi.protected_columns WHERE table_name OPERATOR(pg_catalog.=) $1`, t.QualifiedName())
	if err != nil {
		return nil, fmt.Errorf("reading the NOT NULL columns of %s: %w", t.QualifiedName(), err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var name string
		var nn bool
		if err := rows.Scan(&name, &nn); err != nil {
			return nil, err
		}
		out[name] = nn
	}
	return out, rows.Err()
}

// cleanupNotNullCheck names the CHECK (col_encrypted IS NOT NULL) cleanup
// validates before its lock, so that SET NOT NULL under the lock skips its
// scan of the table.
func (c *TargetColumn) cleanupNotNullCheck() string {
	return objectName(catalog.PgphiConstraintPrefix+"cleanup_not_null_", c.Name)
}

// prepareCiphertextNotNull adds, for each column that was NOT NULL,
// CHECK (col_encrypted IS NOT NULL) NOT VALID and validates it under SHARE
// UPDATE EXCLUSIVE (writes go on): applications have cut over, so every
// write brings a ciphertext. A row still waiting for its ciphertext fails
// the validation; the check is then dropped and SET NOT NULL reads the table
// under cleanup's lock instead, after the catch-up.
func (r *Runner) prepareCiphertextNotNull(ctx context.Context, t *Target) error {
	return r.proveNotNull(ctx, t, "cleanup", func(c *TargetColumn) (string, string) { return c.cleanupNotNullCheck(), c.Encrypted },
		func(c *TargetColumn, _ error) error {
			r.logf("    %s: rows still wait for their %s: NOT NULL is checked under the lock instead", t.QualifiedName(), c.Encrypted)
			r.dropCiphertextNotNullChecks(ctx, t)
			return nil
		})
}

// proveNotNull validates, for each protected column that was NOT NULL
// before expand, the CHECK (column IS NOT NULL) that which names on the
// column it picks (validatedNotNullCheck). A row that violates one ends
// the loop with what violated returns for that column.
func (r *Runner) proveNotNull(ctx context.Context, t *Target, what string, which func(*TargetColumn) (check, column string), violated func(*TargetColumn, error) error) error {
	notNull, err := originalNotNull(ctx, r.Pool, t)
	if err != nil {
		return err
	}
	for i := range t.Columns {
		c := &t.Columns[i]
		if !notNull[c.Name] {
			continue
		}
		check, column := which(c)
		err := r.validatedNotNullCheck(ctx, t, what, check, column)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23514" {
			return violated(c, err)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// dropCiphertextNotNullChecks removes prepareCiphertextNotNull's checks
// after a cleanup that did not go through (best effort: expand and rollback
// remove them too).
func (r *Runner) dropCiphertextNotNullChecks(ctx context.Context, t *Target) {
	var drops []string
	for _, c := range t.Columns {
		drops = append(drops, "DROP CONSTRAINT IF EXISTS "+ident(c.cleanupNotNullCheck()))
	}
	_ = r.ddl(ctx, "cleanup "+t.QualifiedName()+": drop NOT NULL checks", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", t.Ident(), strings.Join(drops, ", ")))
		return err
	})
}

// restoreNotNullCheck names the CHECK (col IS NOT NULL) that rollback
// validates before it sets the plaintext NOT NULL again.
func (c *TargetColumn) restoreNotNullCheck() string {
	return objectName(catalog.PgphiConstraintPrefix+"restore_not_null_", c.Name)
}

// prepareNotNull lets removeExpansion put NOT NULL back on the plaintext
// without reading the table under its ACCESS EXCLUSIVE lock: a CHECK (col IS
// NOT NULL), added NOT VALID and validated under SHARE UPDATE EXCLUSIVE
// (writes go on), proves it to SET NOT NULL, which then skips the scan.
func (r *Runner) prepareNotNull(ctx context.Context, t *Target) error {
	return r.proveNotNull(ctx, t, "rollback", func(c *TargetColumn) (string, string) { return c.restoreNotNullCheck(), c.Name },
		func(c *TargetColumn, err error) error {
			return fmt.Errorf("rollback of %s: column %s was NOT NULL and some rows have no plaintext for it: %w", t.QualifiedName(), c.Name, err)
		})
}

// validatedNotNullCheck makes sure t has a validated CHECK (column IS NOT
// NULL) named name: it adds it NOT VALID where missing and validates it
// under SHARE UPDATE EXCLUSIVE (writes go on), each step through r.ddl's
// lock timeout and retries. With it in place, SET NOT NULL skips its scan
// of the table. what ("cleanup", "rollback") names the step in messages; a
// row that violates the check fails the validation with SQLSTATE 23514.
func (r *Runner) validatedNotNullCheck(ctx context.Context, t *Target, what, name, column string) error {
	var exists, valid bool
	if err := r.Pool.QueryRow(ctx, `SELECT count(*) > 0, COALESCE(bool_and(convalidated), false) FROM pg_catalog.pg_constraint
		WHERE conrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND conname OPERATOR(pg_catalog.=) $2`, t.Ident(), name).Scan(&exists, &valid); err != nil {
		return fmt.Errorf("%s of %s: %w", what, t.QualifiedName(), err)
	}
	if valid {
		return nil
	}
	step := what + " " + t.QualifiedName() + ": NOT NULL of " + column
	if !exists {
		if err := r.ddl(ctx, step, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s IS NOT NULL) NOT VALID", t.Ident(), ident(name), ident(column)))
			return err
		}); err != nil {
			return err
		}
	}
	return r.ddl(ctx, step, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s", t.Ident(), ident(name)))
		return err
	})
}
