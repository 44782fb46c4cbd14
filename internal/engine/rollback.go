package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

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
// have a ciphertext but no plaintext yet.
func (r *Runner) restoreBatch(ctx context.Context, t *Target, last []string) (int, []string, error) {
	nk := len(t.PrimaryKey)
	var sel, need []string
	sel = append(sel, "ctid")
	sel = append(sel, t.KeyTexts()...)
	for _, c := range t.Columns {
		sel = append(sel, ident(c.Encrypted))
		need = append(need, fmt.Sprintf("(%s IS NULL AND %s IS NOT NULL)", ident(c.Name), ident(c.Encrypted)))
	}
	where := "(" + strings.Join(need, " OR ") + ")"
	var args []any
	if last != nil {
		where = t.keyCompare(">", 1) + " AND " + where
		for _, v := range last {
			args = append(args, v)
		}
	}
	args = append(args, r.BatchSize)
	query := fmt.Sprintf("SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT $%d FOR NO KEY UPDATE",
		strings.Join(sel, ", "), t.Ident(), where, t.keyList(""), len(args))

	var n int
	var lastKey []string
	err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		// The whole batch touches only the application table: it runs with
		// the owner's rights (owner.go).
		if _, err := r.asOwner(ctx, tx, t); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		type restored struct {
			ctid  any
			texts []*string
		}
		var batch []restored
		for rows.Next() {
			raw := rows.RawValues()
			var rr restored
			var tid pgtype.TID
			if err := decodeTID(rows.FieldDescriptions()[0].Format, raw[0], &tid); err != nil {
				rows.Close()
				return err
			}
			rr.ctid = tid
			key := make([]string, nk)
			for i := range nk {
				key[i] = string(raw[1+i])
			}
			lastKey = key
			for i, c := range t.Columns {
				ct := raw[1+nk+i]
				if ct == nil {
					rr.texts = append(rr.texts, nil)
					continue
				}
				v, err := r.Keys.Opener(t.QualifiedName(), c.Name).Open(ct, envelope.Binding{Table: t.QualifiedName(), Column: c.Name, PrimaryKey: key})
				if err != nil {
					rows.Close()
					return fmt.Errorf("rollback of %s.%s: ciphertext does not decrypt: %w (at key (%s))", t.QualifiedName(), c.Name, err, strings.Join(key, ", "))
				}
				text := v.Text
				rr.texts = append(rr.texts, &text)
			}
			batch = append(batch, rr)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		n = len(batch)
		if n == 0 {
			return nil
		}
		tmp := t.batchTable() + "_restore"
		cols := []string{"row_ctid tid"}
		names := []string{"row_ctid"}
		var sets []string
		for i, c := range t.Columns {
			cols = append(cols, fmt.Sprintf("v%d text", i))
			names = append(names, fmt.Sprintf("v%d", i))
			sets = append(sets, fmt.Sprintf("%[1]s = COALESCE(t.%[1]s, b.v%[2]d::%[3]s)", ident(c.Name), i, c.Type))
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TEMP TABLE IF NOT EXISTS %s (%s) ON COMMIT DELETE ROWS; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off",
			ident(tmp), strings.Join(cols, ", "))); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{tmp}, names, pgx.CopyFromSlice(len(batch), func(i int) ([]any, error) {
			vals := []any{batch[i].ctid}
			for _, s := range batch[i].texts {
				vals = append(vals, s)
			}
			return vals, nil
		})); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, fmt.Sprintf("UPDATE %s AS t SET %s FROM %s AS b WHERE t.ctid = b.row_ctid", t.Ident(), strings.Join(sets, ", "), ident(tmp)))
		return err
	})
	return n, lastKey, err
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
