package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/envelope"
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
		if t.Cleaned() {
			r.logf("==> rollback %s: restore plaintext columns from the ciphertext, then what cleanup removed", t.QualifiedName())
		} else {
			r.logf("==> rollback %s: remove ciphertext, blind index, unique digests, marker and trigger", t.QualifiedName())
		}
		if err := t.prepare(ctx, &opTx{r: r, t: t}, true); err != nil {
			return err
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

// removeExpansion drops everything apply added, and the plan's state for the
// table, in one transaction (every operation's Rollback, op.go): a crash
// leaves all or nothing to redo.
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
		// Every operation of the table, in the reverse of apply's order:
		// the triggers first, then the checks and columns they named.
		if err := t.undo(ctx, &opTx{r: r, t: t, tx: tx, notNull: notNull}, true); err != nil {
			return err
		}
		// The blind index sizing is recorded by apply's sizing step, for
		// the whole plan, not by an operation of the table.
		_, err = tx.Exec(ctx, "DELETE FROM pgphi.blind_indexes WHERE table_name = $1", t.QualifiedName())
		return err
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
