package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// One batch writer serves every pass of pgphi's that computes new values of
// an application table's rows in Go: the backfill and catch-up (ciphertexts,
// terms, digests), rollback's restore (plaintexts), re-encryption
// (ciphertexts under the active data key) and a reindex (the next
// generation's terms). A caller says which rows (a query, built by lockQuery
// or chunkQuery), which columns it writes with which types, and how to
// compute one row's new values; writeBatch does the rest and guarantees, for
// every batch:
//
//   - One transaction, the caller's. The rows are read and locked FOR NO KEY
//     UPDATE (SKIP LOCKED where the caller asks) in key order, and written in
//     that transaction, so what the caller records beside them (a chunk's
//     checkpoint, a count of encryptions) commits or is lost with the batch:
//     a run killed at any moment resumes after the last committed batch.
//   - Rows matched by ctid. The values go by COPY into a temporary table and
//     one UPDATE ... FROM joins it on ctid, which cannot move while this
//     transaction holds the rows' locks; the plan is pinned to a ctid lookup
//     per row (hash and merge joins off), since the planner knows nothing of
//     the temporary table's size and might scan the whole table instead.
//   - The owner's rights. Reads and writes run as the table's owner where the
//     connected role may (owner.go): the owner's triggers, index
//     expressions, CHECKs and policies fire with no more than its rights. The
//     temporary table is the owner's then (it needs TEMPORARY on the
//     database, which PUBLIC has by default). The session's role is back
//     when writeBatch returns, for the caller's writes to pgphi's own state.
//   - Never a NULL where a value could not be computed. compute's error (a
//     *RowError or *TermsError, naming table, column and primary key, never
//     the value) fails the batch whole and nothing of it is written; an
//     UPDATE that finds another number of rows than the batch holds fails it
//     too.

// batchWrite is one batch: which rows, what it writes, how it computes it.
type batchWrite struct {
	// what names the write in errors: "batch of public.patient".
	what string
	// query reads and locks the rows: ctid, the key's texts, then what
	// compute reads (lockQuery, chunkQuery); args are its arguments.
	query string
	args  []any
	// cols are set by one UPDATE ... FROM the batch table, each from one
	// value compute returns; also are further assignments of that UPDATE
	// that take none (marker = false).
	cols []batchColumn
	also []string
	// after are set by a second UPDATE, at the rows' new places, once the
	// first UPDATE's triggers have fired (a reindex's trigger clears the
	// next generation's terms of a row whose value changed). Their values
	// follow cols' in what compute returns.
	after []batchColumn
	// compute fills out (one value per column of cols, then of after) from
	// in (the row's values after its key, as the query's text or binary
	// output; valid only during the call) and says whether to write the row
	// at all. A row it cannot compute is an error naming the row, never a
	// NULL in the value's place.
	compute func(key []string, in [][]byte, out []any) (write bool, err error)
	// onDuplicate, when set, runs the first UPDATE under a savepoint and is
	// asked, after a unique violation, to name the rows behind it (nil: the
	// database's error stands).
	onDuplicate func(ctx context.Context, tx pgx.Tx, rows []batchOut) error
	// asyncCommit commits the batch without waiting for its WAL flush: a
	// commit a server crash loses is lost whole with the caller's
	// checkpoint, and the resumed run computes those rows again.
	asyncCommit bool
}

// batchColumn is one column a batch writes.
type batchColumn struct {
	name string // the application table's column
	typ  string // the SQL type its values travel as
	// set is the value written, given v (the batch's value, an SQL
	// expression; the row is t); nil writes v.
	set func(v string) string
}

// batchOut is one row a batch writes: vals[0] is its ctid, then the values
// compute returned.
type batchOut struct {
	key  []string
	vals []any
}

// batchResult is what a batch did.
type batchResult struct {
	read int      // rows read and locked
	last []string // the key of the last row read (nil: none)
}

// writeBatch reads the rows w.query selects, computes their new values and
// writes them, in tx, with the guarantees above.
func (r *Runner) writeBatch(ctx context.Context, tx pgx.Tx, t *Target, w *batchWrite) (batchResult, error) {
	restore, err := r.asOwner(ctx, tx, t)
	if err != nil {
		return batchResult{}, err
	}
	res, batch, err := w.read(ctx, tx, t)
	if err != nil {
		return batchResult{}, err
	}
	if len(batch) > 0 {
		if err := w.write(ctx, tx, t, batch); err != nil {
			return batchResult{}, err
		}
	}
	if err := restore(); err != nil {
		return batchResult{}, err
	}
	return res, nil
}

// read runs the query and computes the rows to write.
func (w *batchWrite) read(ctx context.Context, tx pgx.Tx, t *Target) (batchResult, []batchOut, error) {
	var res batchResult
	rows, err := tx.Query(ctx, w.query, w.args...)
	if err != nil {
		return res, nil, fmt.Errorf("reading %s: %w", w.what, err)
	}
	defer rows.Close()
	nk := len(t.PrimaryKey)
	width := 1 + len(w.cols) + len(w.after)
	var batch []batchOut
	var vals []any // reused while compute leaves rows alone
	for rows.Next() {
		raw := rows.RawValues()
		var tid pgtype.TID
		if err := decodeTID(rows.FieldDescriptions()[0].Format, raw[0], &tid); err != nil {
			return res, nil, err
		}
		key := keyStrings(raw[1 : 1+nk])
		res.read++
		res.last = key
		if vals == nil {
			vals = make([]any, width)
		} else {
			clear(vals)
		}
		write, err := w.compute(key, raw[1+nk:], vals[1:])
		if err != nil {
			return res, nil, err
		}
		if write {
			vals[0] = tid
			batch = append(batch, batchOut{key: key, vals: vals})
			vals = nil
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, nil, fmt.Errorf("reading %s: %w", w.what, err)
	}
	return res, batch, nil
}

// write copies the batch into its temporary table and updates the rows.
func (w *batchWrite) write(ctx context.Context, tx pgx.Tx, t *Target, batch []batchOut) error {
	table, setup, names := w.batchTable(t)
	if _, err := tx.Exec(ctx, setup); err != nil {
		return fmt.Errorf("creating the batch table of %s (as its owner): %w", w.what, err)
	}
	if err := w.copy(ctx, tx, table, names, batch); err != nil {
		return err
	}
	// With onDuplicate, the UPDATE runs under a savepoint: a duplicate a
	// unique index refuses is then traced to its rows.
	var u pgx.Tx = tx
	var err error
	if w.onDuplicate != nil {
		if u, err = tx.Begin(ctx); err != nil {
			return err
		}
	}
	moved, err := w.update(ctx, u, t, table, w.cols, w.also, len(w.after) > 0, len(batch))
	if err != nil {
		var pgErr *pgconn.PgError
		if u != tx && errors.As(err, &pgErr) && pgErr.Code == "23505" {
			if rerr := u.Rollback(ctx); rerr == nil {
				if derr := w.onDuplicate(ctx, tx, batch); derr != nil {
					return derr
				}
			}
		}
		return fmt.Errorf("writing %s: %w", w.what, err)
	}
	if u != tx {
		if err := u.Commit(ctx); err != nil {
			return err
		}
	}
	if len(w.after) == 0 {
		return nil
	}
	// The second pass: the same values, at the rows' new places.
	for i := range batch {
		tid, ok := moved[batch[i].vals[0].(pgtype.TID)]
		if !ok {
			return fmt.Errorf("writing %s: a row of the batch was not updated", w.what)
		}
		batch[i].vals[0] = tid
	}
	if _, err := tx.Exec(ctx, "DELETE FROM "+ident(table)); err != nil {
		return fmt.Errorf("writing %s: %w", w.what, err)
	}
	if err := w.copy(ctx, tx, table, names, batch); err != nil {
		return err
	}
	// The values of after follow cols' in the batch table.
	cols := make([]batchColumn, len(w.cols), len(w.cols)+len(w.after))
	cols = append(cols, w.after...)
	if _, err := w.update(ctx, tx, t, table, cols, nil, false, len(batch)); err != nil {
		return fmt.Errorf("writing %s: %w", w.what, err)
	}
	return nil
}

func (w *batchWrite) copy(ctx context.Context, tx pgx.Tx, table string, names []string, batch []batchOut) error {
	src := pgx.CopyFromSlice(len(batch), func(i int) ([]any, error) { return batch[i].vals, nil })
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{table}, names, src); err != nil {
		return fmt.Errorf("copying %s: %w", w.what, err)
	}
	return nil
}

// batchTable names the temporary table of this batch's columns and returns
// the statements that create it (once per session; its rows go at commit)
// and pin the UPDATE's plan, and its column names. The name follows the
// table and the columns, so another set of columns (a unique rule added, a
// reindex under way) gets a table of its own.
func (w *batchWrite) batchTable(t *Target) (string, string, []string) {
	names := []string{"row_ctid"}
	defs := []string{"row_ctid pg_catalog.tid"}
	for i, c := range slices.Concat(w.cols, w.after) {
		names = append(names, "v"+strconv.Itoa(i))
		defs = append(defs, fmt.Sprintf("v%d %s", i, c.typ))
	}
	def := strings.Join(defs, ", ")
	table := "pgphi_batch_" + shortHash(t.QualifiedName()) + "_" + shortHash(def)
	setup := fmt.Sprintf("CREATE TEMP TABLE IF NOT EXISTS %s (%s) ON COMMIT DELETE ROWS; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off", ident(table), def)
	if w.asyncCommit {
		setup += "; SET LOCAL synchronous_commit = off"
	}
	return table, setup, names
}

// updateSQL sets cols (entries without a name: columns of the batch table
// this UPDATE leaves alone) and also in the rows of the batch table, joined
// on ctid.
func updateSQL(t *Target, table string, cols []batchColumn, also []string) string {
	var sets []string
	for i, c := range cols {
		if c.name == "" {
			continue
		}
		v := "b.v" + strconv.Itoa(i)
		if c.set != nil {
			v = c.set(v)
		}
		sets = append(sets, ident(c.name)+" = "+v)
	}
	sets = append(sets, also...)
	return fmt.Sprintf("UPDATE %s AS t SET %s FROM %s AS b WHERE t.ctid OPERATOR(pg_catalog.=) b.row_ctid",
		t.Ident(), strings.Join(sets, ", "), ident(table))
}

// update runs one UPDATE of the batch and checks that it found every row;
// with returning, it says where each row moved.
func (w *batchWrite) update(ctx context.Context, tx pgx.Tx, t *Target, table string, cols []batchColumn, also []string, returning bool, n int) (map[pgtype.TID]pgtype.TID, error) {
	q := updateSQL(t, table, cols, also)
	var tag pgconn.CommandTag
	var moved map[pgtype.TID]pgtype.TID
	if !returning {
		var err error
		if tag, err = tx.Exec(ctx, q); err != nil {
			return nil, err
		}
	} else {
		rows, err := tx.Query(ctx, q+" RETURNING b.row_ctid, t.ctid")
		if err != nil {
			return nil, err
		}
		moved = make(map[pgtype.TID]pgtype.TID, n)
		for rows.Next() {
			var from, to pgtype.TID
			if err := rows.Scan(&from, &to); err != nil {
				rows.Close()
				return nil, err
			}
			moved[from] = to
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		tag = rows.CommandTag()
	}
	if int(tag.RowsAffected()) != n {
		return nil, fmt.Errorf("updated %d rows, expected %d", tag.RowsAffected(), n)
	}
	return moved, nil
}

// lockQuery reads, in key order, at most limit rows of t that match where
// ("" for all; its arguments are args, $1 on) and locks them FOR NO KEY
// UPDATE (skipLocked: rows another transaction holds are left for a later
// batch). It selects what writeBatch wants: ctid, the key's texts, then
// read, each under a name of its own. It returns the query and its
// arguments.
func (t *Target) lockQuery(read []string, where string, args []any, limit int, skipLocked bool) (string, []any) {
	sel := append([]string{"ctid"}, t.KeyTexts()...)
	for i, x := range read {
		sel = append(sel, fmt.Sprintf("%s AS pgphi_value_%d", x, i))
	}
	if where != "" {
		where = " WHERE " + where
	}
	skip := ""
	if skipLocked {
		skip = " SKIP LOCKED"
	}
	args = append(slices.Clip(args), limit)
	return fmt.Sprintf("SELECT %s FROM %s%s ORDER BY %s LIMIT $%d FOR NO KEY UPDATE%s",
		strings.Join(sel, ", "), t.Ident(), where, t.keyList(""), len(args), skip), args
}

// chunkQuery is lockQuery over the rows after the key from (nil: from the
// first) up to the key upper (nil: to the last) that also match where.
func (t *Target) chunkQuery(read []string, where string, from, upper []string, limit int) (string, []any) {
	var conds []string
	var args []any
	if from != nil {
		conds = append(conds, t.keyCompare(">", 1))
		args = append(args, stringArgs(from)...)
	}
	if upper != nil {
		conds = append(conds, t.keyCompare("<=", len(args)+1))
		args = append(args, stringArgs(upper)...)
	}
	if where != "" {
		conds = append(conds, "("+where+")")
	}
	return t.lockQuery(read, strings.Join(conds, " AND "), args, limit, false)
}

// keyStrings copies a row's key texts out of the row's raw values.
func keyStrings(raw [][]byte) []string {
	out := make([]string, len(raw))
	for i, v := range raw {
		out[i] = string(v)
	}
	return out
}

func stringArgs(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// RowError says that one value could not be encrypted (or decrypted, or
// sealed again). It names table, column and primary key; it never carries
// the value.
type RowError struct {
	Table, Column string
	Key           []string
	KeyColumns    []string
	Reason        string
	// Action is what could not be done: "encrypt" when empty, "decrypt",
	// "re-encrypt".
	Action string
}

func (e *RowError) Error() string {
	action, resume := e.Action, "running it again resumes here"
	if action == "" {
		action, resume = "encrypt", "apply again resumes here"
	}
	return fmt.Sprintf("cannot %s %s.%s at key (%s)=(%s): %s; nothing was stored for this row; fix the value, and %s",
		action, e.Table, e.Column, strings.Join(e.KeyColumns, ", "), strings.Join(e.Key, ", "), e.Reason, resume)
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
