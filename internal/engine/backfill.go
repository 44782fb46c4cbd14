package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/keys"
)

// valueTexts reads every protected value's canonical text, under the
// session settings of canonicalParams.
func (t *Target) valueTexts() []string {
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = ident(c.Name) + "::text"
	}
	return out
}

// chunkWork does one batch of a leased chunk in tx: the rows after from (nil:
// from the chunk's start) up to upper (nil: to the table's end), at most
// r.BatchSize of them. It returns how many rows it did and the key of the
// last one.
type chunkWork func(ctx context.Context, tx pgx.Tx, from, upper []string) (int, []string, error)

// runChunks runs work over every chunk of a chunk space (pgphi.chunks rows
// of the plan under that name; the table's qualified name for the backfill)
// until all are done: workers lease chunks with FOR UPDATE SKIP LOCKED,
// throttled, retrying transient errors, with a progress bar; chunks another
// process holds are waited for and taken over if it dies. The space is split
// into chunks at its first run; a later run resumes at each checkpoint.
func (r *Runner) runChunks(ctx context.Context, phase, space string, t *Target, work chunkWork) error {
	total, err := r.chunkSpace(ctx, space, t)
	if err != nil {
		return err
	}
	var open int
	if err := r.Pool.QueryRow(ctx, "SELECT count(*) FROM pgphi.chunks WHERE plan_id = $1 AND table_name = $2 AND NOT done",
		r.Plan.ID, space).Scan(&open); err != nil {
		return err
	}
	if open == 0 {
		r.logf("    %s: %s already done (%d rows); later changes are caught up below", t.QualifiedName(), phase, total)
		return nil
	}
	bar := r.Progress(phase+" "+t.QualifiedName(), total, func(ctx context.Context) (int64, error) {
		var done int64
		err := r.Pool.QueryRow(ctx, "SELECT COALESCE(sum(rows_done), 0)::bigint FROM pgphi.chunks WHERE plan_id = $1 AND table_name = $2",
			r.Plan.ID, space).Scan(&done)
		return done, err
	})
	defer bar.Stop()
	for {
		err := runWorkers(ctx, r.Workers, func(ctx context.Context, _ int) error {
			for {
				if err := r.Throttle.Wait(ctx, r.BatchSize); err != nil {
					return err
				}
				more, n, err := r.leaseBatch(ctx, space, work)
				r.batchDone(phase, t, n, err)
				if err != nil && transient(err) {
					// Lock timeouts and the like: the batch rolled back whole;
					// count it, back off, and take the chunk again.
					if terr := r.Throttle.Done(-1); terr != nil {
						return terr
					}
					r.logf("    %s: batch retried after a transient error: %v", t.QualifiedName(), err)
					time.Sleep(200 * time.Millisecond)
					continue
				}
				if err != nil {
					return r.noteFailure(ctx, err)
				}
				if err := r.Throttle.Done(n); err != nil {
					return err
				}
				if !more {
					return nil
				}
			}
		})
		if err != nil {
			return err
		}
		// Chunks another process holds are skipped above; wait until they are done
		// too, and take them over if that process died.
		if err := r.Pool.QueryRow(ctx, "SELECT count(*) FROM pgphi.chunks WHERE plan_id = $1 AND table_name = $2 AND NOT done",
			r.Plan.ID, space).Scan(&open); err != nil {
			return err
		}
		if open == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	_, err = r.Pool.Exec(ctx, "UPDATE pgphi.plan_tables SET backfilled_at = COALESCE(backfilled_at, now()) WHERE plan_id = $1 AND table_name = $2",
		r.Plan.ID, space)
	return err
}

// chunkTable splits the table into key ranges once per plan; later runs and
// other processes find the chunks already there.
func (r *Runner) chunkTable(ctx context.Context, t *Target) (int64, error) {
	return r.chunkSpace(ctx, t.QualifiedName(), t)
}

// chunkSpace splits t into key ranges recorded under space.
func (r *Runner) chunkSpace(ctx context.Context, space string, t *Target) (int64, error) {
	var total int64
	err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('pgphi chunk ' || $1 || $2))", r.Plan.ID, space); err != nil {
			return err
		}
		var chunked bool
		err := tx.QueryRow(ctx, "SELECT chunked_at IS NOT NULL, COALESCE(rows_at_start, 0) FROM pgphi.plan_tables WHERE plan_id = $1 AND table_name = $2",
			r.Plan.ID, space).Scan(&chunked, &total)
		if err == nil && chunked {
			return nil
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		keyTexts := make([]string, len(t.PrimaryKey))
		for i, k := range t.PrimaryKey {
			keyTexts[i] = ident(k.Name) + "::text"
		}
		// The application table is read with its owner's rights (owner.go);
		// pgphi's state is written with the session's own.
		restore, err := r.asOwner(ctx, tx, t)
		if err != nil {
			return err
		}
		// One ordered pass over the key index yields every chunk boundary.
		// The window columns are named apart from any key column's name.
		rows, err := tx.Query(ctx, fmt.Sprintf(`
			SELECT ARRAY[%s], pgphi_n FROM (
				SELECT %s, row_number() OVER (ORDER BY %s) AS pgphi_rn, count(*) OVER () AS pgphi_n FROM %s
			) s WHERE pgphi_rn %% $1 = 0 OR pgphi_rn = pgphi_n ORDER BY pgphi_rn`,
			strings.Join(keyTexts, ", "), t.keyList(""), t.keyList(""), t.Ident()), r.Config.Apply.ChunkRows)
		if err != nil {
			return fmt.Errorf("computing chunks of %s: %w", t.QualifiedName(), err)
		}
		bounds, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) ([]string, error) {
			var b []string
			err := row.Scan(&b, &total)
			return b, err
		})
		if err != nil {
			return err
		}
		if err := restore(); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO pgphi.plan_tables (plan_id, table_name, chunked_at, rows_at_start) VALUES ($1, $2, now(), $3)
			ON CONFLICT (plan_id, table_name) DO UPDATE SET chunked_at = now(), rows_at_start = $3`, r.Plan.ID, space, total); err != nil {
			return err
		}
		// The last boundary is the last row; the final chunk is open-ended so rows
		// inserted above it during the backfill are covered too.
		if len(bounds) > 0 {
			bounds = bounds[:len(bounds)-1]
		}
		var lower []string
		for i := 0; i <= len(bounds); i++ {
			var upper []string
			if i < len(bounds) {
				upper = bounds[i]
			}
			if _, err := tx.Exec(ctx, `INSERT INTO pgphi.chunks (plan_id, table_name, chunk_no, lower_key, upper_key) VALUES ($1, $2, $3, $4, $5)`,
				r.Plan.ID, space, i, lower, upper); err != nil {
				return err
			}
			lower = upper
		}
		r.logf("    %s: %d rows in %d chunks", t.QualifiedName(), total, len(bounds)+1)
		return nil
	})
	return total, err
}

// leaseBatch leases an open chunk of space, does its next batch and moves
// the chunk's checkpoint, all in one transaction. It reports whether work
// remains that this worker could take.
func (r *Runner) leaseBatch(ctx context.Context, space string, work chunkWork) (more bool, rows int, err error) {
	err = pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		var chunkNo int
		var lower, upper, checkpoint []string
		err := tx.QueryRow(ctx, `SELECT chunk_no, lower_key, upper_key, checkpoint FROM pgphi.chunks
			WHERE plan_id = $1 AND table_name = $2 AND NOT done ORDER BY chunk_no LIMIT 1 FOR UPDATE SKIP LOCKED`,
			r.Plan.ID, space).Scan(&chunkNo, &lower, &upper, &checkpoint)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		more = true
		from := lower
		if checkpoint != nil {
			from = checkpoint
		}
		n, last, err := work(ctx, tx, from, upper)
		if err != nil {
			return err
		}
		rows = n
		if n > 0 {
			checkpoint = last
		}
		_, err = tx.Exec(ctx, `UPDATE pgphi.chunks SET checkpoint = $4, rows_done = rows_done + $5, done = $6, worker = $7, updated_at = now()
			WHERE plan_id = $1 AND table_name = $2 AND chunk_no = $3`,
			r.Plan.ID, space, chunkNo, checkpoint, n, n < r.BatchSize, r.WorkerID)
		return err
	})
	return more, rows, err
}

// encryptBatch encrypts every protected value of the rows query selects
// (and locks: ctid, the key's texts, every protected value's text, as
// lockQuery and catchUpQuery read them) and writes the ciphertexts, terms
// and digests with the batch writer (batchwrite.go), as the table's owner.
// It returns the row count and the key of the last row read.
func (r *Runner) encryptBatch(ctx context.Context, tx pgx.Tx, t *Target, query string, args []any) (int, []string, error) {
	// pgphi's state is read with the session's rights, before the switch.
	if err := t.loadUniques(ctx, tx); err != nil {
		return 0, nil, err
	}
	w, err := r.encryptWrite(t, query, args)
	if err != nil {
		return 0, nil, err
	}
	res, err := r.writeBatch(ctx, tx, t, w)
	if err != nil {
		return 0, nil, err
	}
	// The batch's encryptions are counted against the data key in its own
	// transaction, last (the counter's row is locked until commit): one per
	// row and column, NULLs included, so the count can only be too high.
	if err := keys.CountEncryptions(ctx, tx, r.Keys.ActiveKeyID(), int64(res.read)*int64(len(t.Columns))); err != nil {
		return 0, nil, fmt.Errorf("batch of %s: %w", t.QualifiedName(), err)
	}
	return res.read, res.last, nil
}

// encryptWrite is the batch of encryptBatch. Per protected column it writes
// the ciphertext and, for a searchable one, the terms; then a digest per
// unique rule, and the marker cleared. A NULL plaintext keeps whatever the
// row has: NULL when the application cleared the value (the trigger cleared
// the ciphertext), or the ciphertext an application wrote itself after
// cutover. While a reindex builds a column's next generation, the rows get
// its terms too, in the writer's second UPDATE (the first one's trigger
// cleared them: the value changed).
func (r *Runner) encryptWrite(t *Target, query string, args []any) (*batchWrite, error) {
	w := &batchWrite{what: "batch of " + t.QualifiedName(), query: query, args: args, asyncCommit: true,
		also: []string{ident(MarkerColumn) + " = false"}}
	sealers := make([]*envelope.Sealer, len(t.Columns))
	indexers := make([]*blindindex.Column, len(t.Columns))
	for i := range t.Columns {
		c := &t.Columns[i]
		var err error
		if sealers[i], err = r.Keys.Sealer(t.QualifiedName(), c.Name); err != nil {
			return nil, err
		}
		plainNull := func(col string) func(string) string {
			return func(v string) string {
				return fmt.Sprintf("CASE WHEN t.%[1]s IS NULL THEN t.%[2]s ELSE %[3]s END", ident(c.Name), ident(col), v)
			}
		}
		w.cols = append(w.cols, batchColumn{name: c.Encrypted, typ: "pg_catalog.bytea", set: plainNull(c.Encrypted)})
		if c.HasIndex() {
			if indexers[i] = r.indexers.For(t.QualifiedName(), c.Name); indexers[i] == nil {
				return nil, fmt.Errorf("blind index of %s.%s is not loaded", t.QualifiedName(), c.Name)
			}
			w.cols = append(w.cols, batchColumn{name: c.Index, typ: "pg_catalog.int8[]", set: plainNull(c.Index)})
		}
	}
	ukeys, err := uniqueKeys(r.Keys, t)
	if err != nil {
		return nil, err
	}
	firstDigest := len(w.cols)
	for i := range t.Uniques {
		u := &t.Uniques[i]
		w.cols = append(w.cols, batchColumn{name: u.Column, typ: "pg_catalog.bytea", set: func(v string) string {
			return fmt.Sprintf("CASE WHEN %s THEN t.%s ELSE %s END", t.anyMemberSealedOnly(u, "t."), ident(u.Column), v)
		}})
	}
	if len(t.Uniques) > 0 {
		w.onDuplicate = func(ctx context.Context, tx pgx.Tx, rows []batchOut) error {
			return t.duplicateError(ctx, tx, len(rows), func(i int) []string { return rows[i].key },
				func(i, rule int) []byte { b, _ := rows[i].vals[1+firstDigest+rule].([]byte); return b })
		}
	}
	next := r.nextColumns(t)
	nextIndexers := make([]*blindindex.Column, len(next))
	for k, i := range next {
		c := &t.Columns[i]
		nextIndexers[k] = r.nextIndexers.For(t.QualifiedName(), c.Name)
		w.after = append(w.after, batchColumn{name: c.NextIndex(), typ: "pg_catalog.int8[]", set: func(v string) string {
			return fmt.Sprintf("COALESCE(%s, t.%s)", v, ident(c.NextIndex()))
		}})
	}
	maxBytes := r.Config.Encryption.MaxValueBytes
	w.compute = func(key []string, in [][]byte, out []any) (bool, error) {
		o := 0
		for i := range t.Columns {
			c := &t.Columns[i]
			v := in[i]
			var ct []byte
			var terms []int64
			if v != nil {
				if len(v)+1 > maxBytes {
					return false, &RowError{Table: t.QualifiedName(), Column: c.Name, Key: key, KeyColumns: t.keyNames(),
						Reason: fmt.Sprintf("value is %d bytes, more than encryption.max_value_bytes (%d)", len(v), maxBytes)}
				}
				var err error
				ct, err = sealers[i].Seal(nil, envelope.Value{Type: c.ValueType, Text: string(v)},
					envelope.Binding{Table: t.QualifiedName(), Column: c.Name, PrimaryKey: key})
				if err != nil {
					return false, &RowError{Table: t.QualifiedName(), Column: c.Name, Key: key, KeyColumns: t.keyNames(), Reason: "encryption failed: " + err.Error()}
				}
				if indexers[i] != nil {
					// Non-nil even when empty: '{}' says "indexed, no terms", NULL says "not indexed yet".
					terms = indexers[i].Terms(make([]int64, 0, 16), string(v))
				}
			}
			out[o] = ct
			o++
			if indexers[i] != nil {
				out[o] = terms
				o++
			}
		}
		for j := range t.Uniques {
			out[o] = t.Uniques[j].digest(ukeys[j], in[:len(t.Columns)])
			o++
		}
		for k, i := range next {
			var terms []int64
			if v := in[i]; v != nil {
				terms = nextIndexers[k].Terms(make([]int64, 0, 16), string(v))
			}
			out[o] = terms
			o++
		}
		return true, nil
	}
	return w, nil
}

// nextColumns are the indexes (in t.Columns) of the columns whose next
// generation a reindex is building, as loaded at the start of the run.
func (r *Runner) nextColumns(t *Target) []int {
	var out []int
	for i := range t.Columns {
		if t.Columns[i].HasIndex() && r.nextIndexers.For(t.QualifiedName(), t.Columns[i].Name) != nil {
			out = append(out, i)
		}
	}
	return out
}
