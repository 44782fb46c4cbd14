package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/keys"
)

// RowError says that one value could not be encrypted. It names table, column
// and primary key; it never carries the value.
type RowError struct {
	Table, Column string
	Key           []string
	KeyColumns    []string
	Reason        string
}

func (e *RowError) Error() string {
	return fmt.Sprintf("cannot encrypt %s.%s at key (%s)=(%s): %s; nothing was stored for this row; fix the value, and apply again resumes here",
		e.Table, e.Column, strings.Join(e.KeyColumns, ", "), strings.Join(e.Key, ", "), e.Reason)
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

// batchRow is one locked row of a batch.
type batchRow struct {
	ctid  pgtype.TID
	key   []string
	ct    [][]byte
	terms [][]int64 // blind index terms per column; nil for NULL or no index
	uniq  [][]byte  // digests per unique rule; nil for none
	plain []*string // per column, the plaintext (nil: NULL); kept only while a reindex builds a next generation
}

// encryptBatch reads the rows the query selects (and locks), encrypts every
// protected value, and writes the ciphertexts back with COPY into a temporary
// table and one UPDATE ... FROM joined on ctid. It returns the row count and
// the key of the last row read.
//
// Its statements run with the table owner's rights where the connected role
// may take them (owner.go): the owner's triggers, index expressions, CHECKs
// and policies fire with no more than the owner's rights. The session's role
// is back when it returns, for the caller's writes to pgphi's state. The
// temporary batch table is created by the owner then (the owner needs
// TEMPORARY on the database, which PUBLIC has by default).
func (r *Runner) encryptBatch(ctx context.Context, tx pgx.Tx, t *Target, query string, args []any) (int, []string, error) {
	// pgphi's state is read with the session's rights, before the switch.
	if err := t.loadUniques(ctx, tx); err != nil {
		return 0, nil, err
	}
	restore, err := r.asOwner(ctx, tx, t)
	if err != nil {
		return 0, nil, err
	}
	n, last, err := r.encryptBatchAsOwner(ctx, tx, t, query, args)
	if err != nil {
		return 0, nil, err
	}
	if err := restore(); err != nil {
		return 0, nil, err
	}
	// The batch's encryptions are counted against the data key in its own
	// transaction, last (the counter's row is locked until commit): one per
	// row and column, NULLs included, so the count can only be too high.
	if err := keys.CountEncryptions(ctx, tx, r.Keys.ActiveKeyID(), int64(n)*int64(len(t.Columns))); err != nil {
		return 0, nil, fmt.Errorf("batch of %s: %w", t.QualifiedName(), err)
	}
	return n, last, nil
}

func (r *Runner) encryptBatchAsOwner(ctx context.Context, tx pgx.Tx, t *Target, query string, args []any) (int, []string, error) {
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return 0, nil, fmt.Errorf("reading batch of %s: %w", t.QualifiedName(), err)
	}
	nk := len(t.PrimaryKey)
	sealers := make([]*envelope.Sealer, len(t.Columns))
	for i, c := range t.Columns {
		if sealers[i], err = r.Keys.Sealer(t.QualifiedName(), c.Name); err != nil {
			rows.Close()
			return 0, nil, err
		}
	}
	indexers := make([]*blindindex.Column, len(t.Columns))
	for i, c := range t.Columns {
		if c.HasIndex() {
			if indexers[i] = r.indexers.For(t.QualifiedName(), c.Name); indexers[i] == nil {
				rows.Close()
				return 0, nil, fmt.Errorf("blind index of %s.%s is not loaded", t.QualifiedName(), c.Name)
			}
		}
	}
	ukeys, err := uniqueKeys(r.Keys, t)
	if err != nil {
		rows.Close()
		return 0, nil, err
	}
	texts := make([][]byte, len(t.Columns))
	keepPlain := len(r.nextColumns(t)) > 0
	var batch []batchRow
	for rows.Next() {
		raw := rows.RawValues()
		var br batchRow
		if err := decodeTID(rows.FieldDescriptions()[0].Format, raw[0], &br.ctid); err != nil {
			rows.Close()
			return 0, nil, err
		}
		br.key = make([]string, nk)
		for i := range nk {
			br.key[i] = string(raw[1+i])
		}
		br.ct = make([][]byte, len(t.Columns))
		br.terms = make([][]int64, len(t.Columns))
		if keepPlain {
			br.plain = make([]*string, len(t.Columns))
		}
		for i, c := range t.Columns {
			v := raw[1+nk+i]
			texts[i] = v
			if v == nil {
				continue
			}
			if len(v)+1 > r.Config.Encryption.MaxValueBytes {
				rows.Close()
				return 0, nil, &RowError{Table: t.QualifiedName(), Column: c.Name, Key: br.key, KeyColumns: t.keyNames(),
					Reason: fmt.Sprintf("value is %d bytes, more than encryption.max_value_bytes (%d)", len(v), r.Config.Encryption.MaxValueBytes)}
			}
			ct, err := sealers[i].Seal(nil, envelope.Value{Type: c.ValueType, Text: string(v)},
				envelope.Binding{Table: t.QualifiedName(), Column: c.Name, PrimaryKey: br.key})
			if err != nil {
				rows.Close()
				return 0, nil, &RowError{Table: t.QualifiedName(), Column: c.Name, Key: br.key, KeyColumns: t.keyNames(), Reason: "encryption failed: " + err.Error()}
			}
			br.ct[i] = ct
			if keepPlain {
				text := string(v)
				br.plain[i] = &text
			}
			if indexers[i] != nil {
				// Non-nil even when empty: '{}' says "indexed, no terms", NULL says "not indexed yet".
				br.terms[i] = indexers[i].Terms(make([]int64, 0, 16), string(v))
			}
		}
		if len(t.Uniques) > 0 {
			br.uniq = make([][]byte, len(t.Uniques))
			for j := range t.Uniques {
				br.uniq[j] = t.Uniques[j].digest(ukeys[j], texts)
			}
		}
		batch = append(batch, br)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, fmt.Errorf("reading batch of %s: %w", t.QualifiedName(), err)
	}
	if len(batch) == 0 {
		return 0, nil, nil
	}
	if _, err := tx.Exec(ctx, t.prepareBatch()); err != nil {
		return 0, nil, fmt.Errorf("creating batch table (as the owner of %s): %w", t.QualifiedName(), err)
	}
	src := pgx.CopyFromSlice(len(batch), func(i int) ([]any, error) {
		vals := make([]any, 1, 1+2*len(t.Columns))
		vals[0] = batch[i].ctid
		for j, ct := range batch[i].ct {
			vals = append(vals, ct)
			if indexers[j] != nil {
				vals = append(vals, batch[i].terms[j])
			}
		}
		for _, u := range batch[i].uniq {
			vals = append(vals, u)
		}
		return vals, nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{t.batchTable()}, t.batchColumns(), src); err != nil {
		return 0, nil, fmt.Errorf("copying batch of %s: %w", t.QualifiedName(), err)
	}
	// With digests, the UPDATE runs under a savepoint: a duplicate the
	// digest index refuses is then traced to its rows, by key.
	var w pgx.Tx = tx
	if len(t.Uniques) > 0 {
		if w, err = tx.Begin(ctx); err != nil {
			return 0, nil, err
		}
	}
	// While a reindex builds a column's next generation, the rows get its
	// terms too: the UPDATE returns where each row moved, and a second one
	// writes them there (the first cleared them: their value changed).
	nextCols := r.nextColumns(t)
	var tag pgconn.CommandTag
	var moved map[pgtype.TID]pgtype.TID
	if len(nextCols) == 0 {
		tag, err = w.Exec(ctx, t.applyBatch())
	} else {
		moved = make(map[pgtype.TID]pgtype.TID, len(batch))
		var rows pgx.Rows
		if rows, err = w.Query(ctx, t.applyBatch()+" RETURNING b.row_ctid, t.ctid"); err == nil {
			for rows.Next() {
				var o, n pgtype.TID
				if err := rows.Scan(&o, &n); err != nil {
					rows.Close()
					return 0, nil, err
				}
				moved[o] = n
			}
			rows.Close()
			err, tag = rows.Err(), rows.CommandTag()
		}
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if w != tx && errors.As(err, &pgErr) && pgErr.Code == "23505" {
			if rerr := w.Rollback(ctx); rerr == nil {
				if derr := t.duplicateError(ctx, tx, batch); derr != nil {
					return 0, nil, derr
				}
			}
		}
		return 0, nil, fmt.Errorf("writing batch of %s: %w", t.QualifiedName(), err)
	}
	if w != tx {
		if err := w.Commit(ctx); err != nil {
			return 0, nil, err
		}
	}
	if int(tag.RowsAffected()) != len(batch) {
		return 0, nil, fmt.Errorf("writing batch of %s: updated %d rows, expected %d", t.QualifiedName(), tag.RowsAffected(), len(batch))
	}
	if len(nextCols) > 0 {
		if err := r.writeNextTerms(ctx, tx, t, nextCols, batch, moved); err != nil {
			return 0, nil, err
		}
	}
	return len(batch), batch[len(batch)-1].key, nil
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

// writeNextTerms writes the next generation's terms of the batch's rows
// that have a plaintext (the rows' new places are in moved), in one
// UPDATE that changes only those columns.
func (r *Runner) writeNextTerms(ctx context.Context, tx pgx.Tx, t *Target, cols []int, batch []batchRow, moved map[pgtype.TID]pgtype.TID) error {
	ctids := make([]pgtype.TID, 0, len(batch))
	terms := make([][]*string, len(cols))
	for _, br := range batch {
		ctids = append(ctids, moved[br.ctid])
		for k, i := range cols {
			var lit *string
			if br.plain[i] != nil {
				s := termsLiteral(r.nextIndexers.For(t.QualifiedName(), t.Columns[i].Name).Terms(make([]int64, 0, 16), *br.plain[i]))
				lit = &s
			}
			terms[k] = append(terms[k], lit)
		}
	}
	args := []any{ctids}
	unnests := []string{"pg_catalog.unnest($1::pg_catalog.tid[])"}
	names := []string{"row_ctid"}
	var sets []string
	for k, i := range cols {
		args = append(args, terms[k])
		unnests = append(unnests, fmt.Sprintf("pg_catalog.unnest($%d::pg_catalog.text[])", len(args)))
		names = append(names, fmt.Sprintf("n%d", k))
		next := ident(t.Columns[i].NextIndex())
		sets = append(sets, fmt.Sprintf("%[1]s = COALESCE(b.n%[2]d::pg_catalog.int8[], t.%[1]s)", next, k))
	}
	_, err := tx.Exec(ctx, fmt.Sprintf("UPDATE %s AS t SET %s FROM ROWS FROM (%s) AS b(%s) WHERE t.ctid OPERATOR(pg_catalog.=) b.row_ctid",
		t.Ident(), strings.Join(sets, ", "), strings.Join(unnests, ", "), strings.Join(names, ", ")), args...)
	if err != nil {
		return fmt.Errorf("writing the next generation's terms of %s: %w", t.QualifiedName(), err)
	}
	return nil
}

func decodeTID(format int16, raw []byte, tid *pgtype.TID) error {
	if format == pgx.BinaryFormatCode {
		if len(raw) != 6 {
			return fmt.Errorf("unexpected ctid encoding (%d bytes)", len(raw))
		}
		*tid = pgtype.TID{BlockNumber: binary.BigEndian.Uint32(raw), OffsetNumber: binary.BigEndian.Uint16(raw[4:]), Valid: true}
		return nil
	}
	s := strings.Trim(string(raw), "()")
	b, o, ok := strings.Cut(s, ",")
	bn, err1 := strconv.ParseUint(b, 10, 32)
	on, err2 := strconv.ParseUint(o, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("unexpected ctid %q", raw)
	}
	*tid = pgtype.TID{BlockNumber: uint32(bn), OffsetNumber: uint16(on), Valid: true}
	return nil
}
