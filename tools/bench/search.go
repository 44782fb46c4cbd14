package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/search"
	"github.com/pgphi/pgphi/keys"
)

// searchResult compares one kind of pgphi search with its plaintext
// counterpart on the same query values.
type searchResult struct {
	kind, column string
	plainLabel   string
	pgphi, plain []time.Duration // sorted
	pgphiRows    int             // total matches over all queries
	plainRows    int
	candidates   int // rows pgphi's blind index returned before decrypting
	skipped      int // sampled values the query kind refused (e.g. not a phone number)

	lastPlainRows int
}

// searchCase is one query: the pgphi query and the plaintext SQL.
type searchCase struct {
	q    blindindex.Query
	sql  string
	args []any
}

// searchKind describes how to build the queries of one kind.
type searchKind struct {
	kind       blindindex.QueryKind
	column     string
	plainLabel string
	plainSQL   string
	scan       bool // the plaintext counterpart reads the whole table
	// build turns a sampled value into a query value and plaintext
	// argument; ok false skips the value.
	build func(v string) (query string, arg any, ok bool)
}

func likeEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// substring returns n runes of s from its middle.
func substring(s string, n int) (string, bool) {
	r := []rune(strings.TrimSpace(s))
	if len(r) < n {
		return "", false
	}
	from := (len(r) - n) / 2
	return string(r[from : from+n]), true
}

var searchKinds = []searchKind{
	{kind: blindindex.QExact, column: "last_name", plainLabel: "`last_name = $1`, B-tree",
		plainSQL: "SELECT uid FROM public.patient WHERE last_name = $1",
		build:    func(v string) (string, any, bool) { return v, v, strings.TrimSpace(v) != "" }},
	{kind: blindindex.QExact, column: "email", plainLabel: "`email = $1`, B-tree",
		plainSQL: "SELECT uid FROM public.patient WHERE email = $1",
		build:    func(v string) (string, any, bool) { return v, v, strings.TrimSpace(v) != "" }},
	{kind: blindindex.QPhone, column: "phone_mobile", plainLabel: "`phone_mobile = $1`, B-tree",
		plainSQL: "SELECT uid FROM public.patient WHERE phone_mobile = $1",
		build:    func(v string) (string, any, bool) { return v, v, true }},
	{kind: blindindex.QDate, column: "date_of_birth", plainLabel: "`date_of_birth = $1`, B-tree",
		plainSQL: "SELECT uid FROM public.patient WHERE date_of_birth = $1::date",
		build:    func(v string) (string, any, bool) { return v, v, true }},
	{kind: blindindex.QPrefix, column: "last_name", plainLabel: "`last_name ILIKE 'abc%'`, scan", scan: true,
		plainSQL: "SELECT uid FROM public.patient WHERE last_name ILIKE $1",
		build: func(v string) (string, any, bool) {
			r := []rune(strings.TrimSpace(v))
			if len(r) < 3 {
				return "", nil, false
			}
			p := string(r[:3])
			return p, likeEscape(p) + "%", true
		}},
	{kind: blindindex.QContains, column: "last_name", plainLabel: "`last_name ILIKE '%term%'`, scan", scan: true,
		plainSQL: "SELECT uid FROM public.patient WHERE last_name ILIKE $1",
		build: func(v string) (string, any, bool) {
			s, ok := substring(v, 4)
			return s, "%" + likeEscape(s) + "%", ok
		}},
	{kind: blindindex.QPhonetic, column: "last_name", plainLabel: "`dmetaphone(last_name) = dmetaphone($1)`, scan", scan: true,
		plainSQL: "SELECT uid FROM public.patient WHERE public.dmetaphone(last_name) = public.dmetaphone($1)",
		build:    func(v string) (string, any, bool) { return v, v, utf8.RuneCountInString(v) >= 2 }},
}

// searchBench measures every search kind on the database of an apply with
// the default search kinds (before cleanup: the plaintext is still there for
// the plaintext queries).
func (e *env) searchBench(ctx context.Context, res *results, from *applyRun) ([]searchResult, error) {
	url := e.cl.URL(from.db)
	pool, err := dbconn.Open(ctx, url, 4)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	searcher, err := e.searcher(ctx, pool, from.config)
	if err != nil {
		return nil, err
	}
	logf("search: plaintext indexes and extensions for the plaintext queries")
	for _, q := range []string{
		"CREATE INDEX bench_last_name ON public.patient (last_name)",
		"CREATE INDEX bench_phone_mobile ON public.patient (phone_mobile)",
		"CREATE INDEX bench_date_of_birth ON public.patient (date_of_birth)",
		"CREATE INDEX bench_email ON public.patient (email)",
		"CREATE EXTENSION IF NOT EXISTS fuzzystrmatch SCHEMA public",
		"VACUUM ANALYZE public.patient",
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	if os.Getenv("PGPHI_BENCH_EXPLAIN") != "" {
		// Development aid: where an exact search spends its time, beside
		// the B-tree lookup it is compared with.
		for _, k := range searchKinds[:2] {
			var v string
			if err := pool.QueryRow(ctx, fmt.Sprintf("SELECT %s FROM public.patient WHERE %s IS NOT NULL ORDER BY uid LIMIT 1 OFFSET 77", k.column, k.column)).Scan(&v); err != nil {
				return nil, err
			}
			for range 20 { // warm
				_, _ = searcher.Find(ctx, "patient", k.column, blindindex.Query{Kind: k.kind, Value: v})
			}
			plan, err := searcher.ExplainAnalyzeCandidates(ctx, "patient", k.column, blindindex.Query{Kind: k.kind, Value: v})
			if err != nil {
				return nil, err
			}
			logf("EXPLAIN ANALYZE pgphi %s on %s:\n%s", k.kind, k.column, plan)
			rows, err := pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+k.plainSQL, v)
			if err != nil {
				return nil, err
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return nil, err
			}
			logf("EXPLAIN ANALYZE plaintext %s:\n%s", k.plainLabel, strings.Join(lines, "\n"))
			// The parts of Find's time: the candidate query alone, in
			// Find's transaction, and Find (which also decrypts).
			sql, args, err := searcher.CandidateQuery("patient", k.column, blindindex.Query{Kind: k.kind, Value: v})
			if err != nil {
				return nil, err
			}
			timeIt := func(f func() error) (time.Duration, error) {
				var ds []time.Duration
				for range 300 {
					t0 := time.Now()
					if err := f(); err != nil {
						return 0, err
					}
					ds = append(ds, time.Since(t0))
				}
				slices.Sort(ds)
				return ds[len(ds)/2], nil
			}
			drain := func(sql string, args ...any) error {
				rows, err := pool.Query(ctx, sql, args...)
				if err != nil {
					return err
				}
				for rows.Next() {
				}
				rows.Close()
				return rows.Err()
			}
			// Find first and the bare query last: a generic plan cached
			// without enable_seqscan = off would be reused by the others.
			plainT, err1 := timeIt(func() error { return drain(k.plainSQL, v) })
			findT, err4 := timeIt(func() error {
				_, err := searcher.Find(ctx, "patient", k.column, blindindex.Query{Kind: k.kind, Value: v})
				return err
			})
			txT, err3 := timeIt(func() error {
				b := &pgx.Batch{}
				b.Queue("BEGIN READ ONLY")
				b.Queue("SELECT pg_catalog.set_config('enable_seqscan', 'off', true), pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', true)")
				b.Queue(sql, args...)
				b.Queue("COMMIT")
				return pool.SendBatch(ctx, b).Close()
			})
			pipeT, err5 := timeIt(func() error {
				b := &pgx.Batch{}
				b.Queue("SELECT pg_catalog.set_config('enable_seqscan', 'off', true)")
				b.Queue(sql, args...)
				return pool.SendBatch(ctx, b).Close()
			})
			var inPipe string
			b := &pgx.Batch{}
			b.Queue("SELECT pg_catalog.set_config('enable_seqscan', 'off', true)")
			b.Queue("SELECT pg_catalog.current_setting('enable_seqscan')").QueryRow(func(r pgx.Row) error { return r.Scan(&inPipe) })
			err6 := pool.SendBatch(ctx, b).Close()
			var after string
			err7 := pool.QueryRow(ctx, "SELECT pg_catalog.current_setting('enable_seqscan')").Scan(&after)
			candT, err2 := timeIt(func() error { return drain(sql, args...) })
			if err := errors.Join(err1, err2, err3, err4, err5, err6, err7); err != nil {
				return nil, err
			}
			logf("p50 of 300: plaintext %s; Find %s; candidate query in Find's transaction batch %s; in an implicit pipeline transaction %s (enable_seqscan there %s, after %s); alone %s",
				fmtDur(plainT), fmtDur(findT), fmtDur(txT), fmtDur(pipeT), inPipe, after, fmtDur(candT))
		}
	}
	var out []searchResult
	for _, k := range searchKinds {
		n := e.o.queries
		if k.scan {
			n = e.o.scanQueries
		}
		r, err := e.searchKind(ctx, pool, searcher, k, n)
		if err != nil {
			return out, fmt.Errorf("%s search: %w", k.kind, err)
		}
		logf("search %s on %s: pgphi p50 %s p95 %s | plaintext p50 %s p95 %s (%d queries)", k.kind, k.column,
			fmtDur(percentile(r.pgphi, 50)), fmtDur(percentile(r.pgphi, 95)), fmtDur(percentile(r.plain, 50)), fmtDur(percentile(r.plain, 95)), len(r.pgphi))
		out = append(out, r)
	}
	return out, nil
}

// leakageSummary logs the leakage measured on an apply's database.
func (e *env) leakageSummary(ctx context.Context, from *applyRun) error {
	pool, err := dbconn.Open(ctx, e.cl.URL(from.db), 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	plan, ring, err := e.planAndKeys(ctx, pool, from.config)
	if err != nil {
		return err
	}
	ls, err := engine.MeasureLeakage(ctx, pool, ring, plan, false)
	if err != nil {
		return err
	}
	logf("leakage (distinct values per term array; per family: bits, values/term):")
	for _, l := range ls {
		var fams []string
		for _, f := range l.Families {
			fams = append(fams, fmt.Sprintf("%s %d %.2f", f.SubKind, f.Bits, f.MeanValuesPerTerm))
		}
		logf("  %-14s %7d values %7d arrays %6.2f per array (min %d) | %s", l.Column, l.Values, l.Arrays, l.MeanValuesPerArray, l.MinValuesPerArray, strings.Join(fams, ", "))
	}
	return nil
}

// searcher builds the Go API's searcher the way the CLI does.
func (e *env) searcher(ctx context.Context, pool *pgxpool.Pool, cfgPath string) (*search.Searcher, error) {
	plan, ring, err := e.planAndKeys(ctx, pool, cfgPath)
	if err != nil {
		return nil, err
	}
	return search.New(ctx, pool, ring, plan)
}

// planAndKeys builds the plan and loads the keys the way the CLI does.
func (e *env) planAndKeys(ctx context.Context, pool *pgxpool.Pool, cfgPath string) (*engine.Plan, *keys.Keyring, error) {
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := config.Parse(cfgPath, data)
	if err != nil {
		return nil, nil, err
	}
	cleaned, err := engine.LoadCleaned(ctx, pool)
	if err != nil {
		return nil, nil, err
	}
	tables, err := catalog.Resolve(ctx, pool, cfg, cleaned)
	if err != nil {
		return nil, nil, err
	}
	plan, err := engine.NewPlan(cfg, tables)
	if err != nil {
		return nil, nil, err
	}
	ring, err := keys.Load(ctx, pool, keys.KeyFileProvider(e.keyFile))
	if err != nil {
		return nil, nil, err
	}
	return plan, ring, nil
}

func (e *env) searchKind(ctx context.Context, pool *pgxpool.Pool, s *search.Searcher, k searchKind, n int) (searchResult, error) {
	r := searchResult{kind: string(k.kind), column: k.column, plainLabel: k.plainLabel}
	col := pgx.Identifier{k.column}.Sanitize()
	// Values of random rows (a fixed pseudo-random order), several per query
	// so that values the kind refuses can be skipped.
	rows, err := pool.Query(ctx, fmt.Sprintf("SELECT %s::text FROM public.patient WHERE %s IS NOT NULL ORDER BY md5(uid || $1) LIMIT $2", col, col), string(k.kind), 4*n+20)
	if err != nil {
		return r, err
	}
	values, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return r, err
	}
	var cases []searchCase
	for _, v := range values {
		if len(cases) == n+5 {
			break
		}
		qv, arg, ok := k.build(v)
		if !ok {
			r.skipped++
			continue
		}
		cases = append(cases, searchCase{q: blindindex.Query{Kind: k.kind, Value: qv}, sql: k.plainSQL, args: []any{arg}})
	}
	if len(cases) < 10 {
		return r, fmt.Errorf("only %d usable values", len(cases))
	}
	for i, c := range cases {
		warm := i < 5 // the first five warm caches and plans, unrecorded
		// Alternate the order so neither side always runs on a warmer cache.
		plainFirst := i%2 == 1
		if plainFirst {
			if err := e.timePlain(ctx, pool, c, &r, warm); err != nil {
				return r, err
			}
		}
		if err := e.timePgphi(ctx, s, c, &r, warm); err != nil {
			if !errors.Is(err, blindindex.ErrInvalidQuery) {
				return r, err
			}
			// A value this kind refuses (e.g. not a phone number): drop
			// the pair.
			r.skipped++
			if plainFirst && !warm {
				r.plain = r.plain[:len(r.plain)-1]
				r.plainRows -= r.lastPlainRows
			}
			continue
		}
		if !plainFirst {
			if err := e.timePlain(ctx, pool, c, &r, warm); err != nil {
				return r, err
			}
		}
	}
	slices.Sort(r.pgphi)
	slices.Sort(r.plain)
	return r, nil
}

func (e *env) timePgphi(ctx context.Context, s *search.Searcher, c searchCase, r *searchResult, warm bool) error {
	t := time.Now()
	found, err := s.Find(ctx, "patient", r.column, c.q)
	d := time.Since(t)
	if err != nil {
		return err
	}
	if !warm {
		r.pgphi = append(r.pgphi, d)
		r.pgphiRows += len(found.Keys)
		r.candidates += found.Candidates
	}
	return nil
}

func (e *env) timePlain(ctx context.Context, pool *pgxpool.Pool, c searchCase, r *searchResult, warm bool) error {
	t := time.Now()
	rows, err := pool.Query(ctx, c.sql, c.args...)
	if err != nil {
		return err
	}
	n := 0
	for rows.Next() {
		n++
	}
	rows.Close()
	d := time.Since(t)
	if err := rows.Err(); err != nil {
		return err
	}
	if !warm {
		r.plain = append(r.plain, d)
		r.plainRows += n
		r.lastPlainRows = n
	}
	return nil
}
