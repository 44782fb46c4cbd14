package engine

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgphi/pgphi/envelope"
)

// Re-encryption moves every ciphertext of the plan's tables that an older
// data key sealed to the active data key, online, with the reindex's and
// the backfill's machinery: chunks leased FOR UPDATE SKIP LOCKED under the
// space <table>#reencrypt:<active key id>, a checkpoint per batch in the
// batch's transaction (resumable after a kill), the throttle and progress;
// then a sweep of ciphertexts the application wrote with an older key
// meanwhile (a client opened before the rotation), and a count that must
// find none left. Each value is decrypted with its own key and bound to its
// row exactly as before (FORMAT.md); terms and digests do not depend on the
// data key that seals the value and are left alone.

// ReencryptResult is what a re-encryption did to one table.
type ReencryptResult struct {
	Table       string
	KeyID       uint32 // the active data key every ciphertext now uses
	Rows        int64  // rows read
	Reencrypted int64  // ciphertexts sealed again
}

// Reencrypt re-encrypts, under the active data key, every ciphertext of the
// plan's tables sealed by another key. A run interrupted at any point
// resumes where it stopped when run again with the same active key.
func (r *Runner) Reencrypt(ctx context.Context) ([]ReencryptResult, error) {
	r.defaults()
	for _, t := range r.Plan.Tables {
		if t.Restoring() {
			return nil, withNextStep(fmt.Errorf("%w: a rollback of %s is under way", ErrRefused, t.QualifiedName()), OpRollback)
		}
	}
	if _, err := r.Pool.Exec(ctx, "INSERT INTO pgphi.plans (plan_id, spec) VALUES ($1, $2) ON CONFLICT (plan_id) DO NOTHING", r.Plan.ID, r.Plan.SpecJSON()); err != nil {
		return nil, fmt.Errorf("recording plan: %w", err)
	}
	if r.Throttle != nil && len(r.Plan.Tables) > 0 {
		if r.Throttle.CanaryQuery == "" {
			t := r.Plan.Tables[0]
			r.Throttle.CanaryQuery = fmt.Sprintf("SELECT %s FROM %s ORDER BY %s LIMIT 10", t.keyList(""), t.Ident(), t.keyList(""))
		}
		if err := r.Throttle.Start(ctx, r.Pool); err != nil {
			return nil, err
		}
		defer r.Throttle.Stop()
	}
	active := r.Keys.ActiveKeyID()
	var out []ReencryptResult
	for _, t := range r.Plan.Tables {
		res := ReencryptResult{Table: t.QualifiedName(), KeyID: active}
		space := t.QualifiedName() + "#reencrypt:" + strconv.FormatUint(uint64(active), 10)
		r.logf("==> re-encrypt %s under data key %d over chunks leased with FOR UPDATE SKIP LOCKED", t.QualifiedName(), active)
		err := r.runChunks(ctx, "reencrypt", space, t, func(ctx context.Context, tx pgx.Tx, from, upper []string) (int, []string, error) {
			n, sealed, last, err := r.reencryptBatch(ctx, tx, t, active, reencryptChunkQuery(t, from != nil, upper != nil), rangeArgs(from, upper, r.BatchSize))
			res.Rows += int64(n)
			res.Reencrypted += int64(sealed)
			return n, last, err
		})
		if err != nil {
			return out, err
		}
		// Ciphertexts written meanwhile under an older key.
		for {
			var sealed int
			err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
				var err error
				_, sealed, _, err = r.reencryptBatch(ctx, tx, t, active, reencryptStaleQuery(t, true), []any{keyIDBytes(active), r.BatchSize})
				return err
			})
			if err != nil {
				return out, fmt.Errorf("re-encrypting %s: %w", t.QualifiedName(), err)
			}
			res.Reencrypted += int64(sealed)
			if sealed == 0 {
				break
			}
		}
		var left int64
		lit := fmt.Sprintf(`E'\\x%08x'::pg_catalog.bytea`, active)
		if err := r.ownerQueryRow(ctx, t, fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", t.Ident(), staleKeyPredicate(t, lit)), &left); err != nil {
			return out, err
		}
		if left > 0 {
			return out, fmt.Errorf("re-encrypting %s: %d rows still hold a ciphertext of an older key (written while this ran); run it again", t.QualifiedName(), left)
		}
		if _, err := r.Pool.Exec(ctx, `DELETE FROM pgphi.chunks WHERE plan_id = $1 AND table_name = $2`, r.Plan.ID, space); err != nil {
			return out, err
		}
		if _, err := r.Pool.Exec(ctx, `DELETE FROM pgphi.plan_tables WHERE plan_id = $1 AND table_name = $2`, r.Plan.ID, space); err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}

// ReencryptInProgress reports whether a re-encryption under the active key
// was started and has not finished (its chunks are still recorded).
func ReencryptInProgress(ctx context.Context, q Querier, activeKey uint32) (bool, error) {
	rows, err := q.Query(ctx, `SELECT 1 FROM pgphi.plan_tables WHERE table_name LIKE '%#reencrypt:' || $1 LIMIT 1`, strconv.FormatUint(uint64(activeKey), 10))
	if err != nil {
		return false, err
	}
	defer rows.Close()
	found := rows.Next()
	return found, rows.Err()
}

func keyIDBytes(id uint32) []byte { return binary.BigEndian.AppendUint32(nil, id) }

// staleKeyPredicate is true for a row with a ciphertext whose header names
// a key other than active (an SQL expression of 4 bytes).
func staleKeyPredicate(t *Target, active string) string {
	var parts []string
	for _, c := range t.Columns {
		parts = append(parts, fmt.Sprintf("(%[1]s IS NOT NULL AND pg_catalog.substr(%[1]s, 2, 4) OPERATOR(pg_catalog.<>) %[2]s)", ident(c.Encrypted), active))
	}
	return strings.Join(parts, " OR ")
}

func reencryptSelect(t *Target) string {
	sel := []string{"ctid"}
	sel = append(sel, t.KeyTexts()...)
	for _, c := range t.Columns {
		sel = append(sel, ident(c.Encrypted))
	}
	return strings.Join(sel, ", ")
}

func reencryptChunkQuery(t *Target, hasLower, hasUpper bool) string {
	var where []string
	arg := 1
	if hasLower {
		where = append(where, t.keyCompare(">", arg))
		arg += len(t.PrimaryKey)
	}
	if hasUpper {
		where = append(where, t.keyCompare("<=", arg))
		arg += len(t.PrimaryKey)
	}
	w := ""
	if len(where) > 0 {
		w = " WHERE " + strings.Join(where, " AND ")
	}
	return fmt.Sprintf("SELECT %s FROM %s%s ORDER BY %s LIMIT $%d FOR NO KEY UPDATE", reencryptSelect(t), t.Ident(), w, t.keyList(""), arg)
}

func reencryptStaleQuery(t *Target, skipLocked bool) string {
	skip := ""
	if skipLocked {
		skip = " SKIP LOCKED"
	}
	return fmt.Sprintf("SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT $2 FOR NO KEY UPDATE%s",
		reencryptSelect(t), t.Ident(), staleKeyPredicate(t, "$1::pg_catalog.bytea"), t.keyList(""), skip)
}

// reencryptBatch seals again, under active, every ciphertext of the rows
// query selects (and locks) that another key sealed, and writes them in
// one UPDATE, as the table's owner. It returns rows read, ciphertexts
// sealed again and the last row's key.
func (r *Runner) reencryptBatch(ctx context.Context, tx pgx.Tx, t *Target, active uint32, query string, args []any) (int, int, []string, error) {
	restore, err := r.asOwner(ctx, tx, t)
	if err != nil {
		return 0, 0, nil, err
	}
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("reading a batch of %s: %w", t.QualifiedName(), err)
	}
	nk := len(t.PrimaryKey)
	var ctids []pgtype.TID
	cts := make([][][]byte, len(t.Columns)) // per column, per changed row; nil: keep
	var last []string
	read, sealed := 0, 0
	for rows.Next() {
		read++
		raw := rows.RawValues()
		var tid pgtype.TID
		if err := decodeTID(rows.FieldDescriptions()[0].Format, raw[0], &tid); err != nil {
			rows.Close()
			return 0, 0, nil, err
		}
		last = make([]string, nk)
		for i := range nk {
			last[i] = string(raw[1+i])
		}
		var row [][]byte
		changed := false
		for i, c := range t.Columns {
			ct := raw[1+nk+i]
			var next []byte
			if ct != nil {
				_, id, err := envelope.ParseHeader(ct)
				if err != nil {
					rows.Close()
					return 0, 0, nil, &RowError{Table: t.QualifiedName(), Column: c.Name, Key: last, KeyColumns: t.keyNames(), Reason: "the ciphertext header: " + err.Error()}
				}
				if uint32(id) != active {
					b := envelope.Binding{Table: t.QualifiedName(), Column: c.Name, PrimaryKey: last}
					v, err := r.Keys.Opener(t.QualifiedName(), c.Name).Open(ct, b)
					if err != nil {
						rows.Close()
						return 0, 0, nil, &RowError{Table: t.QualifiedName(), Column: c.Name, Key: last, KeyColumns: t.keyNames(), Reason: "the ciphertext does not decrypt: " + err.Error()}
					}
					s, err := r.Keys.Sealer(t.QualifiedName(), c.Name)
					if err != nil {
						rows.Close()
						return 0, 0, nil, err
					}
					if next, err = s.Seal(nil, v, b); err != nil {
						rows.Close()
						return 0, 0, nil, &RowError{Table: t.QualifiedName(), Column: c.Name, Key: last, KeyColumns: t.keyNames(), Reason: "encryption failed: " + err.Error()}
					}
					changed = true
					sealed++
				}
			}
			row = append(row, next)
		}
		if changed {
			ctids = append(ctids, tid)
			for i := range t.Columns {
				cts[i] = append(cts[i], row[i])
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, nil, fmt.Errorf("reading a batch of %s: %w", t.QualifiedName(), err)
	}
	if len(ctids) > 0 {
		uargs := []any{ctids}
		unnests := []string{"pg_catalog.unnest($1::pg_catalog.tid[])"}
		names := []string{"row_ctid"}
		var sets []string
		for i, c := range t.Columns {
			uargs = append(uargs, cts[i])
			unnests = append(unnests, fmt.Sprintf("pg_catalog.unnest($%d::pg_catalog.bytea[])", len(uargs)))
			names = append(names, fmt.Sprintf("c%d", i))
			sets = append(sets, fmt.Sprintf("%[1]s = COALESCE(b.c%[2]d, t.%[1]s)", ident(c.Encrypted), i))
		}
		tag, err := tx.Exec(ctx, fmt.Sprintf("UPDATE %s AS t SET %s FROM ROWS FROM (%s) AS b(%s) WHERE t.ctid OPERATOR(pg_catalog.=) b.row_ctid",
			t.Ident(), strings.Join(sets, ", "), strings.Join(unnests, ", "), strings.Join(names, ", ")), uargs...)
		if err != nil {
			return 0, 0, nil, fmt.Errorf("writing the re-encrypted ciphertexts of %s: %w", t.QualifiedName(), err)
		}
		if int(tag.RowsAffected()) != len(ctids) {
			return 0, 0, nil, fmt.Errorf("writing the re-encrypted ciphertexts of %s: updated %d rows, expected %d", t.QualifiedName(), tag.RowsAffected(), len(ctids))
		}
	}
	if err := restore(); err != nil {
		return 0, 0, nil, err
	}
	return read, sealed, last, nil
}
