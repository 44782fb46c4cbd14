package engine

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/alert"
)

// StorageEstimate is the plan's estimate of one table's size once every
// row is encrypted, from value sizes sampled in the database (no value
// leaves it: only their average lengths are read). Like the blind index
// sizing, it is measured from the data and is not part of the plan id.
type StorageEstimate struct {
	Table        string  `json:"table"`
	Rows         int64   `json:"rows"`          // the catalog's estimate
	CurrentBytes int64   `json:"current_bytes"` // pg_total_relation_size now
	SampledRows  int64   `json:"sampled_rows"`
	PendingShare float64 `json:"pending_share"` // share of sampled rows still to encrypt
	AddedPerRow  float64 `json:"added_bytes_per_row"`
	// ExpectedBytes = current + pending rows x (added bytes per row + one
	// old row version each, which the backfill's UPDATE leaves until
	// vacuum) + GIN entries of their blind index terms.
	ExpectedBytes int64 `json:"expected_bytes"`
}

// Per-value overheads (docs/FORMAT.md, PostgreSQL's storage): the envelope
// adds version, key id, nonce, type byte and tag; a bytea or an array
// carries a varlena header; a bigint[] of one dimension a 24-byte header.
const (
	envelopeOverhead = 1 + 4 + 12 + 1 + 16
	varlenaHeader    = 4
	arrayHeader      = 24
	termBytes        = 8
	ginBytesPerTerm  = 10 // a posting of a row in a GIN entry, compressed, with the entry's share
	markerBytes      = 1
	storageSample    = 1000
	pageSize         = 8192
)

// EstimateStorage estimates each live table's size once encrypted.
func EstimateStorage(ctx context.Context, pool *pgxpool.Pool, p *Plan) ([]StorageEstimate, error) {
	var out []StorageEstimate
	for _, t := range p.Tables {
		if t.Cleaned() {
			continue
		}
		e := StorageEstimate{Table: t.QualifiedName()}
		var heap int64
		var expanded bool
		var vals []float64
		// Never queue behind a lock (a DDL, a VACUUM FULL): an estimate
		// can be left out, the work cannot wait for it.
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '1s'"); err != nil {
				return err
			}
			var reltuples float64
			err := tx.QueryRow(ctx, `SELECT pg_catalog.pg_total_relation_size(c.oid), pg_catalog.pg_table_size(c.oid), c.reltuples::float8
			FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass`, t.Ident()).Scan(&e.CurrentBytes, &heap, &reltuples)
			if err != nil {
				return fmt.Errorf("estimating the size of %s: %w", t.QualifiedName(), err)
			}
			e.Rows = int64(max(reltuples, 0))
			expanded, err = hasColumn(ctx, tx, t, MarkerColumn)
			if err != nil {
				return err
			}
			// One pass over a sample: average length of each plaintext, and
			// whether its ciphertext is still missing.
			var sel []string
			for _, c := range t.Columns {
				txt := fmt.Sprintf("%s::pg_catalog.text", pgx.Identifier{c.Name}.Sanitize())
				sel = append(sel, fmt.Sprintf("COALESCE(pg_catalog.avg(pg_catalog.octet_length(%s)), 0)::float8", txt),
					fmt.Sprintf("COALESCE(pg_catalog.avg(pg_catalog.char_length(%s)), 0)::float8", txt))
			}
			pending := "1.0::float8"
			if expanded {
				var conds []string
				for _, c := range t.Columns {
					conds = append(conds, fmt.Sprintf("(%s IS NOT NULL AND %s IS NULL)", pgx.Identifier{c.Name}.Sanitize(), pgx.Identifier{c.Encrypted}.Sanitize()))
				}
				pending = fmt.Sprintf("COALESCE(pg_catalog.avg(CASE WHEN %s THEN 1 ELSE 0 END), 0)::float8", strings.Join(conds, " OR "))
			}
			pct := 100.0
			if e.Rows > storageSample {
				pct = math.Max(100*float64(storageSample)/float64(e.Rows), 0.01)
			}
			q := fmt.Sprintf("SELECT pg_catalog.count(*), %s, %s FROM (SELECT * FROM %s TABLESAMPLE BERNOULLI (%g) LIMIT %d) s",
				pending, strings.Join(sel, ", "), t.Ident(), pct, storageSample)
			vals = make([]float64, 2*len(t.Columns))
			dest := []any{&e.SampledRows, &e.PendingShare}
			for i := range vals {
				dest = append(dest, &vals[i])
			}
			if err := tx.QueryRow(ctx, q).Scan(dest...); err != nil {
				return fmt.Errorf("sampling value sizes of %s: %w", t.QualifiedName(), err)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if e.SampledRows == 0 {
			e.PendingShare = 0
		}
		var terms float64
		for i, c := range t.Columns {
			octets, runes := vals[2*i], vals[2*i+1]
			if octets > 0 {
				e.AddedPerRow += octets + envelopeOverhead + varlenaHeader
			}
			if c.HasIndex() {
				n := 0.0
				for _, s := range c.SubKinds() {
					n += termsPerRow(s, runes, c.SearchOptions)
				}
				terms += n
				e.AddedPerRow += arrayHeader + termBytes*n
			}
		}
		e.AddedPerRow += markerBytes
		oldVersion := 0.0
		if e.Rows > 0 {
			oldVersion = float64(heap) / float64(e.Rows)
		}
		todo := float64(e.Rows) * e.PendingShare
		e.ExpectedBytes = e.CurrentBytes + int64(todo*(e.AddedPerRow+oldVersion+ginBytesPerTerm*terms))
		if !expanded {
			// The indexes apply creates (the pending index, one GIN index
			// per searchable column) take a metapage and a root page even
			// when empty: on a small table they are most of the growth.
			newIndexes := 1
			for _, c := range t.Columns {
				if c.HasIndex() {
					newIndexes++
				}
			}
			e.ExpectedBytes += int64(newIndexes * 2 * pageSize)
		}
		out = append(out, e)
	}
	return out, nil
}

func hasColumn(ctx context.Context, q pgx.Tx, t *Target, name string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
		AND attname OPERATOR(pg_catalog.=) $2 AND NOT attisdropped)`, t.Ident(), name).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("inspecting %s: %w", t.QualifiedName(), err)
	}
	return ok, nil
}

// PrintStorage writes the estimates under the plan.
func PrintStorage(w io.Writer, est []StorageEstimate) {
	if len(est) == 0 {
		return
	}
	fmt.Fprintln(w, "storage (estimated from sampled value sizes; an alert fires above 150 % of the estimate):")
	for _, e := range est {
		fmt.Fprintf(w, "  %-32s now %s, expected %s once encrypted (%.0f bytes added per row, %.0f%% of %d sampled rows to encrypt)\n",
			e.Table, humanBytes(e.CurrentBytes), humanBytes(e.ExpectedBytes), e.AddedPerRow, 100*e.PendingShare, e.SampledRows)
	}
	fmt.Fprintln(w)
}

func humanBytes(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

// SizeObserver receives table and database sizes (package metrics).
type SizeObserver interface {
	TableSize(table string, bytes, expected int64)
	DatabaseSize(bytes int64)
}

// StorageWatch compares each table's size with its estimate while a run
// goes on, and once more at its end: above Factor (default 1.5) times the
// estimate, the storage alert fires.
type StorageWatch struct {
	Pool      *pgxpool.Pool
	Estimates []StorageEstimate
	Factor    float64
	Interval  time.Duration // default 5s
	Alerts    *alert.Monitor
	Observer  SizeObserver // nil: none
}

// Check reads the sizes once.
func (w *StorageWatch) Check(ctx context.Context) {
	if w == nil {
		return
	}
	factor := w.Factor
	if factor <= 0 {
		factor = alert.DefaultStorageFactor
	}
	var db int64
	if err := w.Pool.QueryRow(ctx, "SELECT pg_catalog.pg_database_size(pg_catalog.current_database())").Scan(&db); err == nil && w.Observer != nil {
		w.Observer.DatabaseSize(db)
	}
	for _, e := range w.Estimates {
		var size int64
		// Reading a size takes a share lock on the table: never wait
		// behind a DDL or a VACUUM FULL for it.
		err := pgx.BeginFunc(ctx, w.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '500ms'"); err != nil {
				return err
			}
			return tx.QueryRow(ctx, "SELECT pg_catalog.pg_total_relation_size(pg_catalog.to_regclass($1))", e.Table).Scan(&size)
		})
		if err != nil {
			continue
		}
		if w.Observer != nil {
			w.Observer.TableSize(e.Table, size, e.ExpectedBytes)
		}
		if limit := factor * float64(e.ExpectedBytes); e.ExpectedBytes > 0 && float64(size) > limit {
			w.Alerts.Fire(alert.Alert{Threshold: alert.Storage, Measured: float64(size), Limit: limit, Unit: "bytes", Table: e.Table})
		}
	}
}

// Start checks every Interval until the returned function is called, which
// checks a last time.
func (w *StorageWatch) Start(ctx context.Context) (stop func()) {
	if w == nil {
		return func() {}
	}
	interval := w.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			w.Check(cctx)
			select {
			case <-cctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
		w.Check(context.WithoutCancel(ctx))
	}
}
