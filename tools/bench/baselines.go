package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/envelope"
)

// baseline is one way of rewriting or encrypting the seven columns.
type baseline struct {
	name    string
	rows    int           // rows processed
	took    time.Duration // wall time of the processing (commit included)
	sampled bool          // rows < table size: the rate is extrapolated
	server  time.Duration // CPU time of the PostgreSQL server during the processing
}

func (b baseline) rate() float64 {
	if b.took <= 0 {
		return 0
	}
	return float64(b.rows) / b.took.Seconds()
}

// columnTypes returns the SQL type of each PHI column.
func columnTypes(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	rows, err := conn.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
		WHERE a.attrelid = 'public.patient'::regclass AND a.attnum > 0 AND NOT a.attisdropped`)
	if err != nil {
		return nil, err
	}
	types := map[string]string{}
	for rows.Next() {
		var n, t string
		if err := rows.Scan(&n, &t); err != nil {
			return nil, err
		}
		types[n] = t
	}
	return types, rows.Err()
}

// addColumns adds c<suffix> of the given type (or the column's own type when
// typ is empty) for each PHI column.
func addColumns(ctx context.Context, conn *pgx.Conn, suffix, typ string) error {
	types, err := columnTypes(ctx, conn)
	if err != nil {
		return err
	}
	var adds []string
	for _, c := range phiColumns {
		t := typ
		if t == "" {
			t = types[c]
		}
		adds = append(adds, fmt.Sprintf("ADD COLUMN %s %s", pgx.Identifier{c + suffix}.Sanitize(), t))
	}
	_, err = conn.Exec(ctx, "ALTER TABLE public.patient "+strings.Join(adds, ", "))
	return err
}

// baselineA copies the seven columns into new columns of the same types in
// one UPDATE: every row is rewritten once, as pgphi's backfill does.
func (e *env) baselineA(ctx context.Context) (baseline, error) {
	b := baseline{name: "A: plain UPDATE copying the 7 columns into new columns", rows: e.o.patients}
	return e.updateBaseline(ctx, b, "A", "", "_copy", "", func(c string) string {
		return fmt.Sprintf("%s = %s", pgx.Identifier{c + "_copy"}.Sanitize(), pgx.Identifier{c}.Sanitize())
	}, "")
}

// baselineB encrypts the seven columns with pgcrypto's pgp_sym_encrypt
// (AES-256, a passphrase, pgcrypto's default S2K) in one UPDATE of the first
// -sample-b rows in key order.
func (e *env) baselineB(ctx context.Context) (baseline, error) {
	n := min(e.o.sampleB, e.o.patients)
	b := baseline{name: "B: pgcrypto pgp_sym_encrypt of the 7 columns, one UPDATE", rows: n, sampled: n < e.o.patients}
	pass := make([]byte, 16)
	if _, err := rand.Read(pass); err != nil {
		return b, err
	}
	return e.updateBaseline(ctx, b, "B", "CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA public", "_pgp", "bytea", func(c string) string {
		return fmt.Sprintf("%s = public.pgp_sym_encrypt(%s::text, $1, 'cipher-algo=aes256')", pgx.Identifier{c + "_pgp"}.Sanitize(), pgx.Identifier{c}.Sanitize())
	}, " WHERE uid IN (SELECT uid FROM public.patient ORDER BY uid LIMIT $2)", fmt.Sprintf("%x", pass), n)
}

// updateBaseline times one server-side UPDATE of the seven columns into new
// columns (suffix, of type colType or the original types) on a fresh copy of
// the data, with the server's CPU time. setup runs first (e.g. an extension).
func (e *env) updateBaseline(ctx context.Context, b baseline, label, setup, suffix, colType string, set func(col string) string, where string, args ...any) (baseline, error) {
	db, err := e.copyOf(ctx, "bench_template", "baseline "+label)
	if err != nil {
		return b, err
	}
	defer e.drop(ctx, db)
	conn, err := e.connect(ctx, db)
	if err != nil {
		return b, err
	}
	defer conn.Close(context.Background())
	if setup != "" {
		if _, err := conn.Exec(ctx, setup); err != nil {
			return b, fmt.Errorf("%s (install PostgreSQL's contrib modules): %w", setup, err)
		}
	}
	if err := addColumns(ctx, conn, suffix, colType); err != nil {
		return b, err
	}
	var sets []string
	for _, c := range phiColumns {
		sets = append(sets, set(c))
	}
	logf("baseline %s: UPDATE of %d rows", label, b.rows)
	cpu0, _ := serverCPU(e.cl.DataDir())
	start := time.Now()
	tag, err := conn.Exec(ctx, "UPDATE public.patient SET "+strings.Join(sets, ", ")+where, args...)
	b.took = time.Since(start)
	if cpu1, ok := serverCPU(e.cl.DataDir()); ok {
		b.server = cpu1 - cpu0
	}
	if err != nil {
		return b, err
	}
	b.rows = int(tag.RowsAffected())
	logf("baseline %s: %d rows in %s (%.0f rows/s)", label, b.rows, b.took.Round(time.Millisecond), b.rate())
	return b, nil
}

// baselineC is the hand-written script: read the rows, encrypt each value
// in the client (AES-256-GCM, the same envelope as pgphi), and write each
// row back with its own autocommitted UPDATE. It stops after -sample-c rows
// or -sample-c-time, whichever comes first.
func (e *env) baselineC(ctx context.Context) (baseline, error) {
	n := min(e.o.sampleC, e.o.patients)
	b := baseline{name: "C: client loop, AES-GCM in the client, one autocommitted UPDATE per row", sampled: true}
	db, err := e.copyOf(ctx, "bench_template", "baseline C")
	if err != nil {
		return b, err
	}
	defer e.drop(ctx, db)
	conn, err := e.connect(ctx, db)
	if err != nil {
		return b, err
	}
	defer conn.Close(context.Background())
	if err := addColumns(ctx, conn, "_enc", "bytea"); err != nil {
		return b, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return b, err
	}
	sealer, err := envelope.NewSealer(1, key)
	if err != nil {
		return b, err
	}
	var sel, sets []string
	for i, c := range phiColumns {
		sel = append(sel, pgx.Identifier{c}.Sanitize()+"::text")
		sets = append(sets, fmt.Sprintf("%s = $%d", pgx.Identifier{c + "_enc"}.Sanitize(), i+2))
	}
	update := "UPDATE public.patient SET " + strings.Join(sets, ", ") + " WHERE uid = $1"
	logf("baseline C: row-at-a-time loop over at most %d rows or %s", n, e.o.sampleCTime)
	start := time.Now()
	// The script reads in pages, as such scripts do, and writes row by row.
	last := ""
	done := false
	for !done {
		rows, err := conn.Query(ctx, "SELECT uid, "+strings.Join(sel, ", ")+" FROM public.patient WHERE uid > $1 ORDER BY uid LIMIT 500", last)
		if err != nil {
			return b, err
		}
		type row struct {
			uid  string
			vals []*string
		}
		var page []row
		for rows.Next() {
			r := row{vals: make([]*string, len(phiColumns))}
			dst := []any{&r.uid}
			for i := range r.vals {
				dst = append(dst, &r.vals[i])
			}
			if err := rows.Scan(dst...); err != nil {
				return b, err
			}
			page = append(page, r)
		}
		if err := rows.Err(); err != nil {
			return b, err
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			args := []any{r.uid}
			for i, v := range r.vals {
				if v == nil {
					args = append(args, nil)
					continue
				}
				ct, err := sealer.Seal(nil, envelope.Value{Type: envelope.TypeText, Text: *v},
					envelope.Binding{Table: "public.patient", Column: phiColumns[i], PrimaryKey: []string{r.uid}})
				if err != nil {
					return b, err
				}
				args = append(args, ct)
			}
			if _, err := conn.Exec(ctx, update, args...); err != nil {
				return b, err
			}
			b.rows++
			last = r.uid
			if b.rows >= n || time.Since(start) >= e.o.sampleCTime {
				done = true
				break
			}
		}
	}
	b.took = time.Since(start)
	b.sampled = b.rows < e.o.patients
	logf("baseline C: %d rows in %s (%.0f rows/s)", b.rows, b.took.Round(time.Millisecond), b.rate())
	return b, nil
}
