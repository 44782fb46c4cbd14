package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// writerMode is what the application writes.
type writerMode int

const (
	// plainWrites: inserts with protected values, updates of names, deletes
	// (an application before cutover; after cutover its plaintext writes
	// are refused by require_encryption, which is expected).
	plainWrites writerMode = iota
	// noPHIWrites: inserts without protected values, updates of an
	// unprotected column, deletes (an application after cleanup, when the
	// plaintext columns are gone).
	noPHIWrites
)

// writer is the application: one connection, one operation on patient every
// interval, each recorded. It touches only the pool's rows and rows it
// inserted, and knows what each of them must hold at the end.
type writer struct {
	e       *env
	db      string
	tag     string // in inserted keys and values: unique per trial
	mode    writerMode
	touch   bool // a quarter of the updates change only updated_at (allowed after cutover)
	every   time.Duration
	rng     *rand.Rand
	allowed map[string]bool // SQLSTATEs expected in this scenario (besides the require_encryption refusal)

	conn    *pgx.Conn
	alive   []string           // keys the writer may update or delete
	expect  map[string]rowVals // every key it ever touched or may touch -> what the row must hold
	gone    map[string]bool    // keys it deleted
	initial int64              // rows at the start
	seq     int

	quit chan struct{}
	done chan struct{}
	st   writerStats
}

// writerStats count what the application saw.
type writerStats struct {
	ops, ok, refused, expectedErr, reconnects, uncertain int
	inserted, deleted                                    int64
	unexpected                                           []string // SQLSTATE and message, no detail (never a value)
}

// startWriter starts the application on db; initial is the row count now.
func (t *trial) startWriter(ctx context.Context, mode writerMode, allowed ...string) error {
	w := &writer{
		e: t.e, db: t.db, tag: t.tag, mode: mode, every: t.e.o.writerEvery, touch: t.touch,
		rng:     rand.New(rand.NewPCG(t.seed, 0x77726974)),
		allowed: map[string]bool{},
		expect:  map[string]rowVals{},
		gone:    map[string]bool{},
		quit:    make(chan struct{}), done: make(chan struct{}),
	}
	for _, a := range allowed {
		w.allowed[a] = true
	}
	for _, k := range t.e.base.pool {
		w.expect[k] = t.e.base.poolVals[k]
		w.alive = append(w.alive, k)
	}
	var err error
	if w.conn, err = pgx.Connect(ctx, t.e.url(t.db, "faults-writer")); err != nil {
		return err
	}
	if w.initial, err = queryInt(ctx, w.conn, "SELECT count(*) FROM patient"); err != nil {
		w.conn.Close(context.Background())
		return err
	}
	t.w = w
	go w.loop()
	return nil
}

// stop ends the writer and returns its statistics.
func (w *writer) stop() writerStats {
	close(w.quit)
	<-w.done
	return w.st
}

// expectedRows is the row count the table must have.
func (w *writer) expectedRows() int64 { return w.initial + w.st.inserted - w.st.deleted }

func (w *writer) loop() {
	defer close(w.done)
	defer func() {
		if w.conn != nil {
			w.conn.Close(context.Background())
		}
	}()
	for {
		select {
		case <-w.quit:
			return
		case <-time.After(w.every):
		}
		w.step()
	}
}

// touchSQL updates only an unprotected column.
const touchSQL = "UPDATE patient SET updated_at = now() WHERE uid = $1"

// op is one application statement.
type op struct {
	kind string // insert, update, delete
	key  string
	vals rowVals // insert: the new row; update: the row after the update
	sql  string
	args []any
}

func (w *writer) next() op {
	w.seq++
	s := func(v string) *string { return &v }
	r := w.rng.IntN(100)
	switch {
	case r < 35 || len(w.alive) == 0:
		k := fmt.Sprintf("%s%s-%06d", writerPrefix, w.tag, w.seq)
		if w.mode == noPHIWrites {
			return op{kind: "insert", key: k, sql: "INSERT INTO patient (uid, gender, updated_at) VALUES ($1, 'F', now())", args: []any{k}}
		}
		var v rowVals
		v[colIndex("first_name")] = s(fmt.Sprintf("%sfn-%s-%d", canaryPrefix, w.tag, w.seq))
		v[colIndex("last_name")] = s(fmt.Sprintf("%sln-%s-%d", canaryPrefix, w.tag, w.seq))
		v[colIndex("email")] = s(fmt.Sprintf("%s%s-%d@example.org", canaryPrefix, w.tag, w.seq))
		v[colIndex("phone_mobile")] = s(fmt.Sprintf("+2547%08d", w.rng.IntN(100_000_000)))
		v[colIndex("date_of_birth")] = s(time.Date(1940, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, w.rng.IntN(30000)).Format("2006-01-02"))
		return op{kind: "insert", key: k, vals: v,
			sql: `INSERT INTO patient (uid, first_name, last_name, email, phone_mobile, date_of_birth, gender, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6::date, 'F', now())`,
			args: []any{k, *v[0], *v[2], *v[5], *v[3], *v[6]}}
	case r < 75:
		k := w.alive[w.rng.IntN(len(w.alive))]
		if w.mode == noPHIWrites || (w.touch && r >= 65) {
			return op{kind: "update", key: k, vals: w.expect[k], sql: touchSQL, args: []any{k}}
		}
		v := w.expect[k]
		v[colIndex("first_name")] = s(fmt.Sprintf("%sufn-%s-%d", canaryPrefix, w.tag, w.seq))
		v[colIndex("last_name")] = s(fmt.Sprintf("%suln-%s-%d", canaryPrefix, w.tag, w.seq))
		return op{kind: "update", key: k, vals: v,
			sql:  "UPDATE patient SET first_name = $2, last_name = $3, updated_at = now() WHERE uid = $1",
			args: []any{k, *v[0], *v[2]}}
	default:
		k := w.alive[w.rng.IntN(len(w.alive))]
		return op{kind: "delete", key: k, sql: "DELETE FROM patient WHERE uid = $1", args: []any{k}}
	}
}

func (w *writer) step() {
	o := w.next()
	w.st.ops++
	if w.conn == nil && !w.reconnect() {
		w.st.unexpected = append(w.st.unexpected, "could not reconnect within 2 minutes")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tag, err := w.conn.Exec(ctx, o.sql, o.args...)
	cancel()
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		w.st.ok++
		w.applied(o, tag.RowsAffected() == 1)
	case errors.As(err, &pgErr):
		// The server answered: the statement did not happen.
		switch {
		case pgErr.Code == "42501" && strings.Contains(pgErr.Message, "require_encryption"):
			w.st.refused++
		case w.allowed[pgErr.Code]:
			w.st.expectedErr++
		default:
			w.st.unexpected = append(w.st.unexpected, fmt.Sprintf("%s %s: SQLSTATE %s: %s", o.kind, "patient", pgErr.Code, pgErr.Message))
		}
		if w.conn.IsClosed() {
			w.conn = nil
		}
	default:
		// No answer (connection lost, server restarting, timeout): the
		// statement may or may not have committed. Reconnect and look.
		w.st.uncertain++
		if w.conn != nil {
			w.conn.Close(context.Background())
			w.conn = nil
		}
		if !w.reconnect() {
			w.st.unexpected = append(w.st.unexpected, "could not reconnect within 2 minutes")
			return
		}
		happened, ok, err := w.resolve(o)
		if err != nil {
			w.st.unexpected = append(w.st.unexpected, "resolving an interrupted "+o.kind+": "+err.Error())
			return
		}
		if ok {
			w.applied(o, happened)
		}
		w.st.expectedErr++
	}
}

// applied records an operation that committed; hit says it found its row.
func (w *writer) applied(o op, hit bool) {
	switch o.kind {
	case "insert":
		w.st.inserted++
		w.expect[o.key] = o.vals
		w.alive = append(w.alive, o.key)
	case "update":
		if hit {
			w.expect[o.key] = o.vals
		}
	case "delete":
		if hit {
			w.st.deleted++
		}
		delete(w.expect, o.key)
		w.gone[o.key] = true
		for i, k := range w.alive {
			if k == o.key {
				w.alive = append(w.alive[:i], w.alive[i+1:]...)
				break
			}
		}
	}
}

// resolve tells whether an operation whose outcome was lost happened, by
// reading its row (only this writer touches it). ok is false when there is
// nothing to record.
func (w *writer) resolve(o op) (happened, ok bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var exists bool
	if err := w.conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM patient WHERE uid = $1)", o.key).Scan(&exists); err != nil {
		return false, false, err
	}
	switch o.kind {
	case "insert":
		return exists, exists, nil
	case "delete":
		return !exists, !exists, nil
	}
	if o.sql == touchSQL {
		return false, false, nil // only updated_at changed, which is not checked
	}
	var first *string
	err = w.conn.QueryRow(ctx, "SELECT first_name::text FROM patient WHERE uid = $1", o.key).Scan(&first)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42703" {
		return false, false, nil // no plaintext column: the update cannot have happened
	}
	if err != nil {
		return false, false, err
	}
	want := o.vals[colIndex("first_name")]
	happened = first != nil && want != nil && *first == *want
	return happened, happened, nil
}

func (w *writer) reconnect() bool {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := pgx.Connect(ctx, w.e.url(w.db, "faults-writer"))
		cancel()
		if err == nil {
			w.conn = c
			w.st.reconnects++
			return true
		}
		select {
		case <-w.quit:
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
	return false
}
