package engine

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

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
			q, args := t.chunkQuery(t.ciphertexts(), "", from, upper, r.BatchSize)
			n, sealed, last, err := r.reencryptBatch(ctx, tx, t, active, q, args)
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
				q, args := t.lockQuery(t.ciphertexts(), staleKeyPredicate(t, "$1::pg_catalog.bytea"), []any{keyIDBytes(active)}, r.BatchSize, true)
				_, sealed, _, err = r.reencryptBatch(ctx, tx, t, active, q, args)
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

// ciphertexts reads every protected column's ciphertext.
func (t *Target) ciphertexts() []string {
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = ident(c.Encrypted)
	}
	return out
}

// reencryptBatch seals again, under active, every ciphertext of the rows
// query selects (and locks: ctid, the key's texts, the ciphertexts) that
// another key sealed, and writes them with the batch writer
// (batchwrite.go), as the table's owner; rows with none are left alone. It
// returns rows read, ciphertexts sealed again and the last row's key.
func (r *Runner) reencryptBatch(ctx context.Context, tx pgx.Tx, t *Target, active uint32, query string, args []any) (int, int, []string, error) {
	w := &batchWrite{what: "the re-encrypted ciphertexts of " + t.QualifiedName(), query: query, args: args}
	for _, c := range t.Columns {
		w.cols = append(w.cols, batchColumn{name: c.Encrypted, typ: "pg_catalog.bytea", set: func(v string) string {
			return fmt.Sprintf("COALESCE(%s, t.%s)", v, ident(c.Encrypted))
		}})
	}
	sealers := make([]*envelope.Sealer, len(t.Columns))
	sealed := 0
	w.compute = func(key []string, in [][]byte, out []any) (bool, error) {
		changed := false
		for i, c := range t.Columns {
			var next []byte // NULL: the row keeps its ciphertext
			if ct := in[i]; ct != nil {
				fail := func(reason string, err error) error {
					return &RowError{Table: t.QualifiedName(), Column: c.Name, Key: key, KeyColumns: t.keyNames(), Reason: reason + err.Error(), Action: "re-encrypt"}
				}
				_, id, err := envelope.ParseHeader(ct)
				if err != nil {
					return false, fail("the ciphertext header: ", err)
				}
				if uint32(id) != active {
					b := envelope.Binding{Table: t.QualifiedName(), Column: c.Name, PrimaryKey: key}
					v, err := r.Keys.Opener(t.QualifiedName(), c.Name).Open(ct, b)
					if err != nil {
						return false, fail("the ciphertext does not decrypt: ", err)
					}
					if sealers[i] == nil {
						if sealers[i], err = r.Keys.Sealer(t.QualifiedName(), c.Name); err != nil {
							return false, err
						}
					}
					if next, err = sealers[i].Seal(nil, v, b); err != nil {
						return false, fail("encryption failed: ", err)
					}
					changed = true
					sealed++
				}
			}
			out[i] = next
		}
		return changed, nil
	}
	res, err := r.writeBatch(ctx, tx, t, w)
	if err != nil {
		return 0, 0, nil, err
	}
	return res.read, sealed, res.last, nil
}
