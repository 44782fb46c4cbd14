package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/catalog"
)

// Rollback returns every table of the plan to plaintext and removes what pgphi
// added. Before cleanup that is a catalog change only (the plaintext is still
// there); after cleanup the plaintext columns are recreated with their
// original names and types and filled by decryption, in resumable batches.
func (r *Runner) Rollback(ctx context.Context) error {
	r.defaults()
	for _, t := range r.Plan.Tables {
		if err := t.loadUniques(ctx, r.Pool); err != nil {
			return err
		}
		cleaned := t.Cleaned()
		if cleaned {
			r.logf("==> rollback %s: restore plaintext columns from the ciphertext, then what cleanup removed", t.QualifiedName())
			if err := r.restorePlaintext(ctx, t); err != nil {
				return err
			}
		} else {
			r.logf("==> rollback %s: remove ciphertext, blind index, unique digests, marker and trigger", t.QualifiedName())
			if err := r.restoreCiphertextOnly(ctx, t); err != nil {
				return err
			}
		}
		if err := r.prepareNotNull(ctx, t); err != nil {
			return err
		}
		if cleaned {
			if err := r.restoreRemoved(ctx, t); err != nil {
				return err
			}
		}
		if err := r.removeExpansion(ctx, t); err != nil {
			return err
		}
	}
	for _, f := range FlagNames {
		if err := SetFlag(ctx, r.Pool, f, false); err != nil {
			return err
		}
	}
	// Recorded verifications stay: they are evidence of what happened, and
	// no role may delete them (cleanup verifies for itself anyway).
	return nil
}

// removeExpansion drops everything expand added, and the plan's state for the
// table, in one transaction: a crash leaves all or nothing to redo.
func (r *Runner) removeExpansion(ctx context.Context, t *Target) error {
	return r.ddl(ctx, "rollback "+t.QualifiedName(), func(tx pgx.Tx) error {
		notNull, err := originalNotNull(ctx, tx, t)
		if err != nil {
			return err
		}
		if !t.Cleaned() {
			// Under the lock the drop needs anyway: a value the application
			// wrote only as ciphertext since restoreCiphertextOnly would be
			// lost with the ciphertext column.
			if _, err := tx.Exec(ctx, "LOCK TABLE "+t.Ident()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
				return err
			}
			if n, err := r.ciphertextOnlyRows(ctx, tx, t); err != nil {
				return err
			} else if n > 0 {
				return withNextStep(fmt.Errorf("rollback of %s: %d rows were written only as ciphertext meanwhile; nothing was dropped, and a rollback again restores them", t.QualifiedName(), n), OpRollback)
			}
		}
		var drops []string
		for i := range t.Columns {
			drops = append(drops, "DROP CONSTRAINT IF EXISTS "+ident(t.Columns[i].notNullCheck()))
		}
		for _, c := range t.Columns {
			drops = append(drops, "DROP COLUMN IF EXISTS "+ident(c.Encrypted))
			if c.Index != "" {
				// A reindex's next generation and its trigger go too.
				drops = append(drops, "DROP COLUMN IF EXISTS "+ident(c.Index), "DROP COLUMN IF EXISTS "+ident(c.NextIndex()))
			}
		}
		for _, u := range t.Uniques {
			// Its index and CHECK go with it.
			drops = append(drops, "DROP COLUMN IF EXISTS "+ident(u.Column))
		}
		drops = append(drops, "DROP COLUMN IF EXISTS "+ident(MarkerColumn))
		stmts := t.dropTriggersSQL()
		for i := range t.Columns {
			if c := &t.Columns[i]; c.HasIndex() {
				stmts = append(stmts, fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", ident(t.reindexTrigger(c)), t.Ident()),
					fmt.Sprintf("DROP FUNCTION IF EXISTS %s()", pgx.Identifier{"pgphi", t.reindexFunction(c)}.Sanitize()))
			}
		}
		stmts = append(stmts,
			fmt.Sprintf("ALTER TABLE %s %s", t.Ident(), strings.Join(drops, ", ")),
			fmt.Sprintf("DROP FUNCTION IF EXISTS %s()", t.markFunctionIdent()),
		)
		// The plaintext gets its NOT NULL back (a row the application wrote
		// only as ciphertext refuses the rollback, naming the column).
		for _, c := range t.Columns {
			if notNull[c.Name] {
				stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", t.Ident(), ident(c.Name)))
			}
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", t.Ident(), ident(c.restoreNotNullCheck())))
		}
		for _, st := range stmts {
			if _, err := tx.Exec(ctx, st); err != nil {
				return err
			}
		}
		for _, q := range []string{
			"DELETE FROM pgphi.protected_columns WHERE table_name = $1",
			"DELETE FROM pgphi.blind_indexes WHERE table_name = $1",
			"DELETE FROM pgphi.chunks WHERE table_name = $1 OR starts_with(table_name, $1 || '#reindex:')",
			"DELETE FROM pgphi.plan_tables WHERE table_name = $1 OR starts_with(table_name, $1 || '#reindex:')",
			"DELETE FROM pgphi.failures WHERE table_name = $1",
			"DELETE FROM pgphi.unique_columns WHERE table_name = $1",
			"DELETE FROM pgphi.column_rules WHERE table_name = $1",
			"DELETE FROM pgphi.removed_objects WHERE table_name = $1",
		} {
			if _, err := tx.Exec(ctx, q, t.QualifiedName()); err != nil {
				return err
			}
		}
		return nil
	})
}

// restorePlaintext recreates the plaintext columns and decrypts into them.
// Rows already restored are skipped, so an interrupted restore resumes.
func (r *Runner) restorePlaintext(ctx context.Context, t *Target) error {
	// A rename at cleanup gave the ciphertext the plaintext's name; give it
	// back its own first.
	err := r.ddl(ctx, "restore columns of "+t.QualifiedName(), func(tx pgx.Tx) error {
		for _, c := range t.Columns {
			if c.Encrypted == c.Name {
				own := c.Name + r.Config.Encryption.ColumnSuffix
				if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s RENAME COLUMN %s TO %s", t.Ident(), ident(c.Name), ident(own))); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, "UPDATE pgphi.protected_columns SET encrypted_column = $3 WHERE table_name = $1 AND column_name = $2",
					t.QualifiedName(), c.Name, own); err != nil {
					return err
				}
			}
		}
		var adds []string
		for i := range t.Columns {
			c := &t.Columns[i]
			// The type comes from pgphi's state: it is pasted into SQL only
			// as the catalog spells it (originalType).
			typ, err := originalType(ctx, tx, t, c)
			if err != nil {
				return err
			}
			c.Type = typ
			adds = append(adds, fmt.Sprintf("ADD COLUMN IF NOT EXISTS %s %s", ident(c.Name), c.Type))
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", t.Ident(), strings.Join(adds, ", "))); err != nil {
			return err
		}
		// Cleanup gave the plaintext's comment to the ciphertext: back it goes.
		for _, c := range t.Columns {
			enc := c.Encrypted
			if enc == c.Name {
				enc = c.Name + r.Config.Encryption.ColumnSuffix
			}
			if err := copyColumnComment(ctx, tx, t, enc, c.Name); err != nil {
				return err
			}
		}
		// From here until the rollback ends, the table is neither cleaned nor
		// expanded: cleanup and apply refuse, rollback resumes.
		_, err := tx.Exec(ctx, "UPDATE pgphi.protected_columns SET phase = 'restoring' WHERE table_name = $1", t.QualifiedName())
		return err
	})
	if err != nil {
		return err
	}
	for i := range t.Columns {
		c := &t.Columns[i]
		if c.Encrypted == c.Name {
			c.Encrypted = c.Name + r.Config.Encryption.ColumnSuffix
		}
	}
	var done int64
	var last []string
	for {
		n, lastKey, err := r.restoreBatch(ctx, t, last)
		r.batchDone("restore", t, n, err)
		if err != nil {
			return err
		}
		done += int64(n)
		if n == 0 {
			break
		}
		last = lastKey
	}
	r.logf("    %s: %d rows restored", t.QualifiedName(), done)
	var missing int64
	var preds []string
	for _, c := range t.Columns {
		preds = append(preds, fmt.Sprintf("(%s IS NULL) <> (%s IS NULL)", ident(c.Name), ident(c.Encrypted)))
	}
	if err := r.ownerQueryRow(ctx, t, fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", t.Ident(), strings.Join(preds, " OR ")), &missing); err != nil {
		return err
	}
	if missing > 0 {
		return withNextStep(fmt.Errorf("rollback of %s: %d rows still lack their plaintext; ciphertexts are kept", t.QualifiedName(), missing), OpRollback)
	}
	return nil
}

// restoreBatch decrypts the next batch of rows (in key order after last) that
// have a ciphertext but no plaintext yet, and writes the plaintexts with the
// batch writer (batchwrite.go), as the table's owner, in a transaction of
// its own. It returns the row count and the last row's key.
func (r *Runner) restoreBatch(ctx context.Context, t *Target, last []string) (int, []string, error) {
	var need []string
	w := &batchWrite{what: "the plaintext of " + t.QualifiedName()}
	for _, c := range t.Columns {
		need = append(need, fmt.Sprintf("(%s IS NULL AND %s IS NOT NULL)", ident(c.Name), ident(c.Encrypted)))
		// A plaintext the row has already (written meanwhile) stays.
		w.cols = append(w.cols, batchColumn{name: c.Name, typ: "pg_catalog.text", set: func(v string) string {
			return fmt.Sprintf("COALESCE(t.%s, %s::%s)", ident(c.Name), v, c.Type)
		}})
	}
	w.query, w.args = t.chunkQuery(t.ciphertexts(), strings.Join(need, " OR "), last, nil, r.BatchSize)
	w.compute = func(key []string, in [][]byte, out []any) (bool, error) {
		for i, c := range t.Columns {
			if in[i] == nil {
				continue
			}
			v, err := r.Keys.Opener(t.QualifiedName(), c.Name).Open(in[i], envelope.Binding{Table: t.QualifiedName(), Column: c.Name, PrimaryKey: key})
			if err != nil {
				return false, &RowError{Table: t.QualifiedName(), Column: c.Name, Key: key, KeyColumns: t.keyNames(), Action: "decrypt",
					Reason: "the ciphertext does not decrypt: " + err.Error()}
			}
			out[i] = v.Text
		}
		return true, nil
	}
	var res batchResult
	err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		var err error
		res, err = r.writeBatch(ctx, tx, t, w)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	return res.read, res.last, nil
}

// ciphertextOnlyPredicate is true for a row holding a value only as
// ciphertext: the application wrote it after cutover, with NULL plaintext.
func (t *Target) ciphertextOnlyPredicate(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (string, error) {
	var names []string
	for _, c := range t.Columns {
		names = append(names, c.Name, c.Encrypted)
	}
	var n int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
		AND attname OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[]) AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped`, t.Ident(), names).Scan(&n); err != nil {
		return "", fmt.Errorf("inspecting %s: %w", t.QualifiedName(), err)
	}
	if n != len(names) {
		return "", nil // not expanded (any more): nothing only as ciphertext
	}
	var preds []string
	for _, c := range t.Columns {
		preds = append(preds, fmt.Sprintf("(%s IS NULL AND %s IS NOT NULL)", ident(c.Name), ident(c.Encrypted)))
	}
	return strings.Join(preds, " OR "), nil
}

func (r *Runner) ciphertextOnlyRows(ctx context.Context, tx pgx.Tx, t *Target) (n int64, err error) {
	// Read as the owner: row-level security would fail the read otherwise.
	restore, err := r.asOwner(ctx, tx, t)
	if err != nil {
		return 0, err
	}
	defer func() {
		if rerr := restore(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	pred, err := t.ciphertextOnlyPredicate(ctx, tx)
	if err != nil || pred == "" {
		return 0, err
	}
	if err := tx.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", t.Ident(), pred)).Scan(&n); err != nil {
		return 0, fmt.Errorf("rollback of %s: counting rows written only as ciphertext: %w", t.QualifiedName(), err)
	}
	return n, nil
}

// restoreCiphertextOnly decrypts, before cleanup, the values the application
// wrote only as ciphertext after cutover into their plaintext columns, so
// that dropping the ciphertext loses nothing (and NOT NULL can come back).
// require_encryption goes off first: the plaintext is what the application
// writes again once rolled back, and the trigger would refuse it.
func (r *Runner) restoreCiphertextOnly(ctx context.Context, t *Target) error {
	pred, err := t.ciphertextOnlyPredicate(ctx, r.Pool)
	if err != nil || pred == "" {
		return err
	}
	var n int64
	if err := r.ownerQueryRow(ctx, t, fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", t.Ident(), pred), &n); err != nil {
		return fmt.Errorf("rollback of %s: counting rows written only as ciphertext: %w", t.QualifiedName(), err)
	}
	if n == 0 {
		return nil
	}
	if err := SetFlag(ctx, r.Pool, FlagRequireEncryption, false); err != nil {
		return err
	}
	var done int64
	var last []string
	for {
		k, lastKey, err := r.restoreBatch(ctx, t, last)
		if err != nil {
			return err
		}
		if k == 0 {
			break
		}
		done += int64(k)
		last = lastKey
	}
	r.logf("    %s: %d rows written only as ciphertext decrypted into their plaintext columns", t.QualifiedName(), done)
	return nil
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
	notNull, err := originalNotNull(ctx, r.Pool, t)
	if err != nil {
		return err
	}
	for i := range t.Columns {
		c := &t.Columns[i]
		if !notNull[c.Name] {
			continue
		}
		err := r.validatedNotNullCheck(ctx, t, "rollback", c.restoreNotNullCheck(), c.Name)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23514" {
			return fmt.Errorf("rollback of %s: column %s was NOT NULL and some rows have no plaintext for it: %w", t.QualifiedName(), c.Name, err)
		}
		if err != nil {
			return err
		}
	}
	return nil
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
