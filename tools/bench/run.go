package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/demo"
	"github.com/pgphi/pgphi/internal/machine"
	"github.com/pgphi/pgphi/internal/pgcluster"
)

// phiColumns are the seven PHI columns of patient in the demo config.
var phiColumns = []string{"first_name", "middle_name", "last_name", "phone_mobile", "phone_home", "email", "date_of_birth"}

// results is everything one run measured.
type results struct {
	machine   machine.Info
	patients  int
	load      time.Duration
	tableSize string

	a, b, c baseline

	plain, indexed *applyRun // pgphi apply without / with the default search kinds
	demo           *applyRun // with the demo's search kinds; searched and cleaned up
	small          *applyRun // with search kinds on a quarter of the rows (-memcheck)
	cleanup        *applyRun
	backup         *backupRun
	reencrypt      *reencryptRun // keys rotate --reencrypt on plain's database

	searches []searchResult
	// searchesAccepted: the same searches with the earlier row planner's
	// bits and accept_leakage, the speed side of the privacy trade.
	searchesAccepted []searchResult
	serve            *serveResult
	migrate          *migrateResults
	notes            []string
}

func (r *results) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
	logf("note: "+format, args...)
}

// env is the working state of a run.
type env struct {
	o       options
	cl      *pgcluster.Cluster
	admin   *pgx.Conn
	dir     string // configs, key file, logs
	bin     string // the pgphi binary
	keyFile string
	copies  int
}

func run(ctx context.Context, o options) (*results, error) {
	res := &results{patients: o.patients, machine: machine.Read()}
	e := &env{o: o}
	var err error
	if e.dir, err = os.MkdirTemp("", "pgphi-bench-"); err != nil {
		return nil, err
	}
	if o.keepLogs {
		logf("working directory (kept): %s", e.dir)
	} else {
		defer os.RemoveAll(e.dir)
	}

	logf("building pgphi")
	e.bin = filepath.Join(e.dir, "pgphi")
	build := exec.CommandContext(ctx, "go", "build", "-o", e.bin, "./cmd/pgphi")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/pgphi (run the benchmark from the repository root): %w", err)
	}
	e.keyFile = filepath.Join(e.dir, "kek")
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := os.WriteFile(e.keyFile, k, 0o600); err != nil {
		return nil, err
	}

	if err := e.startCluster(ctx, res); err != nil {
		return nil, err
	}
	defer e.stop()

	t0 := time.Now()
	if os.Getenv("PGPHI_BENCH_STATEMENTS") != "" {
		if _, err := e.admin.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
			return nil, err
		}
	}
	if res.tableSize, err = e.makeTemplate(ctx, "bench_template", o.patients); err != nil {
		return nil, err
	}
	res.load = time.Since(t0)
	logf("patient table: %d rows, %s, loaded in %s", o.patients, res.tableSize, res.load.Round(time.Millisecond))

	if o.only == "migrate" {
		_, err := e.migrateBench(ctx, "bench_template", o.patients)
		return nil, err
	}
	if res.a, err = e.baselineA(ctx); err != nil {
		return nil, fmt.Errorf("baseline A: %w", err)
	}
	if o.only != "" {
		// A development loop: baseline A and one apply, summarized on stderr.
		mode := map[string]string{"plain": searchNone, "search": searchDemo, "search-rows": searchRows, "demo": searchDemo, "unique": searchUnique, "serve": searchDemo, "backup": searchDemo, "reindex": searchDemo, "reencrypt": searchNone}[o.only]
		rowsHint = o.patients
		var a *applyRun
		if o.only == "reencrypt" {
			a = e.applyKeep(ctx, res, "pgphi apply ("+o.only+")", "bench_template", mode)
			if a.db != "" {
				defer e.drop(ctx, a.db)
			}
		} else {
			a = e.apply(ctx, res, "pgphi apply ("+o.only+")", "bench_template", mode)
		}
		if a.err != nil {
			return nil, a.err
		}
		if o.only == "serve" {
			sv, err := e.serveBench(ctx, res, a)
			if err != nil {
				return nil, fmt.Errorf("serve benchmark: %w", err)
			}
			if o.write {
				// The serve figures alone, in a section of their own.
				res.serve = sv
				res.machine.LoadEnd = machine.Loadavg()
				md := res.serveMarkdown(o)
				if err := writeSection(o.out, "serve", md); err != nil {
					return nil, err
				}
				logf("serve results recorded in %s", o.out)
			}
		}
		logf("baseline A %.0f rows/s; %s %.0f rows/s = %.2fx A; max RSS %d MiB", res.a.rate(), a.name, a.rate(), a.rate()/res.a.rate(), a.maxRSS/1024)
		if o.only == "backup" {
			if br := e.backupBench(ctx, res, a); br.err != nil {
				return nil, br.err
			}
			e.drop(ctx, a.db)
			return nil, nil
		}
		logf("CPU per 1,000 rows: baseline A server %s; pgphi client %s + server %s", perK(res.a.server, res.a.rows), perK(a.cpu, a.rows), perK(a.server, a.rows))
		for _, s := range a.steps {
			logf("  %-50s %s", s.name, s.took.Round(time.Millisecond))
		}
		if o.only == "reencrypt" {
			// The same table re-encrypted under a new data key, under the
			// same writer, against this apply's backfill.
			rr := e.reencryptBench(ctx, res, a)
			if rr.err != nil {
				return nil, rr.err
			}
			if !rr.complete() {
				return nil, fmt.Errorf("keys rotate --reencrypt: %d of %d ciphertexts re-encrypted, %d left under another key", rr.sealed, rr.ciphertexts, rr.stale)
			}
			for _, s := range rr.steps {
				logf("  %-50s %s", s.name, s.took.Round(time.Millisecond))
			}
		}
		if o.only == "reindex" {
			// Every searchable column's terms rebuilt once, one column after
			// the other, each a full pass over the table.
			r, err := e.runPgphi(ctx, a.db, "reindex", nil, "reindex", "--config", a.config)
			if err != nil {
				return nil, err
			}
			cols := strings.Count(r.output, ": generation ")
			logf("pgphi reindex: %d columns in %s = %.0f column-rows/s = %.2fx baseline A; pgphi CPU per 1,000 column-rows %s, server %s",
				cols, r.took.Round(time.Millisecond), float64(cols*a.rows)/r.took.Seconds(), float64(cols*a.rows)/r.took.Seconds()/res.a.rate(),
				perK(r.cpu, cols*a.rows), perK(r.server, cols*a.rows))
			for _, s := range r.steps {
				logf("  %-60s %s", s.name, s.took.Round(time.Millisecond))
			}
		}
		if o.only == "search" || o.only == "search-rows" {
			// Search on the demo search kinds, as the full run does,
			// candidates beside latencies, and the leakage measured on the
			// same data.
			ss, err := e.searchBench(ctx, res, a)
			if err != nil {
				return nil, err
			}
			for _, s := range ss {
				q := float64(len(s.pgphi))
				logf("  %-10s %-14s pgphi p50 %-9s plaintext p50 %-9s = %5.2fx | per query: %7.1f candidates, %7.1f matches (plaintext %.1f)",
					s.kind, s.column, fmtDur(percentile(s.pgphi, 50)), fmtDur(percentile(s.plain, 50)),
					float64(percentile(s.pgphi, 50))/float64(max(percentile(s.plain, 50), 1)),
					float64(s.candidates)/q, float64(s.pgphiRows)/q, float64(s.plainRows)/q)
			}
			if err := e.leakageSummary(ctx, a); err != nil {
				return nil, err
			}
		}
		if os.Getenv("PGPHI_BENCH_STATEMENTS") != "" {
			rows, err := e.admin.Query(ctx, `SELECT calls, round(total_exec_time)::bigint, left(regexp_replace(query, '\s+', ' ', 'g'), 110)
				FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15`)
			if err != nil {
				return nil, err
			}
			for rows.Next() {
				var calls, ms int64
				var q string
				if err := rows.Scan(&calls, &ms, &q); err != nil {
					return nil, err
				}
				logf("  %7d calls %7d ms  %s", calls, ms, q)
			}
			rows.Close()
		}
		return nil, nil
	}
	if res.b, err = e.baselineB(ctx); err != nil {
		return nil, fmt.Errorf("baseline B: %w", err)
	}
	if res.c, err = e.baselineC(ctx); err != nil {
		return nil, fmt.Errorf("baseline C: %w", err)
	}

	res.plain = e.applyKeep(ctx, res, "pgphi apply, no search kinds", "bench_template", searchNone)
	if res.plain.err == nil {
		// Re-encryption of the same table under the same writer, against
		// this apply's backfill.
		res.reencrypt = e.reencryptBench(ctx, res, res.plain)
	}
	if res.plain.db != "" {
		e.drop(ctx, res.plain.db)
	}
	res.indexed = e.apply(ctx, res, "pgphi apply, default search kinds", "bench_template", searchDefault)
	res.demo = e.apply(ctx, res, "pgphi apply, demo search kinds (default + contains on last_name, exact on email)", "bench_template", searchDemo)
	if o.memCheck {
		small := o.patients / 4
		if _, err := e.makeTemplate(ctx, "bench_small", small); err != nil {
			return nil, err
		}
		res.small = e.apply(ctx, res, fmt.Sprintf("pgphi apply, default search kinds, %d rows", small), "bench_small", searchDefault)
		if res.small.db != "" {
			e.drop(ctx, res.small.db)
		}
		e.drop(ctx, "bench_small")
	}

	if res.demo.err == nil {
		if res.searches, err = e.searchBench(ctx, res, res.demo); err != nil {
			res.note("search benchmark failed: %v", err)
		}
		// The speed side of the privacy trade, in the same run: the demo
		// kinds sized by rows (as before the budget) with accept_leakage.
		rowsHint = o.patients
		if acc := e.apply(ctx, res, "pgphi apply, demo search kinds sized by rows (leakage accepted)", "bench_template", searchRows); acc.err == nil {
			if res.searchesAccepted, err = e.searchBench(ctx, res, acc); err != nil {
				res.note("search benchmark (leakage accepted) failed: %v", err)
			}
			if acc.db != "" {
				e.drop(ctx, acc.db)
			}
		}
		res.backup = e.backupBench(ctx, res, res.demo)
		if res.serve, err = e.serveBench(ctx, res, res.demo); err != nil {
			res.note("serve benchmark failed: %v", err)
		}
		if o.cleanup {
			res.cleanup = e.cleanupRun(ctx, res, res.demo)
		}
	}
	// Schema migrations under a writer: on a small table, so that it takes
	// seconds; the stalls come from lock queues, not from the table's size.
	if n := min(o.patients, migrateBenchRows); ctx.Err() == nil {
		if _, err := e.makeTemplate(ctx, "bench_migrate", n); err != nil {
			res.note("migrate benchmark: %v", err)
		} else {
			if res.migrate, err = e.migrateBench(ctx, "bench_migrate", n); err != nil {
				res.note("migrate benchmark failed: %v", err)
			}
			e.drop(ctx, "bench_migrate")
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	res.machine.LoadEnd = machine.Loadavg()
	return res, nil
}

// startCluster starts the throwaway cluster with the run's settings and
// connects to it as the administrator; stop undoes both.
func (e *env) startCluster(ctx context.Context, res *results) error {
	logf("starting a throwaway PostgreSQL cluster (durable settings)")
	var err error
	if e.cl, err = pgcluster.Start(ctx, pgcluster.Options{Settings: e.o.serverSetting}); err != nil {
		return err
	}
	if e.admin, err = dbconn.Conn(ctx, e.cl.URL("postgres")); err != nil {
		e.stop()
		return err
	}
	res.machine.ReadServer(ctx, e.admin, e.cl.DataDir(), []string{"fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "max_wal_size", "checkpoint_timeout", "work_mem", "maintenance_work_mem", "jit"})
	return nil
}

func (e *env) stop() {
	if e.admin != nil {
		e.admin.Close(context.Background())
	}
	if e.cl != nil {
		if err := e.cl.Stop(); err != nil {
			logf("stopping the cluster: %v", err)
		}
	}
}

// makeTemplate creates database name with the demo schema and data for
// patients, keeps only the patient table (the benchmark's subject) and
// freezes it, so that every copy starts from the same, settled state. It
// returns the table's size.
func (e *env) makeTemplate(ctx context.Context, name string, patients int) (string, error) {
	logf("creating %s: demo data for %d patients", name, patients)
	if _, err := e.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	conn, err := dbconn.Conn(ctx, e.cl.URL(name))
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	if err := demo.CreateSchema(ctx, conn); err != nil {
		return "", err
	}
	if _, err := demo.Populate(ctx, conn, demo.Options{Patients: patients, Seed: 1}); err != nil {
		return "", err
	}
	for _, q := range []string{
		"DROP TABLE public.patient_identification, public.analysis_result, public.result_mutation, public.clinical_data CASCADE",
		"VACUUM (FREEZE, ANALYZE) public.patient",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return "", fmt.Errorf("%s: %w", q, err)
		}
	}
	var size string
	err = conn.QueryRow(ctx, "SELECT pg_size_pretty(pg_total_relation_size('public.patient'))").Scan(&size)
	return size, err
}

// copyOf creates a fresh database from a template: a byte-for-byte copy of
// the table, so every measurement starts from the same state. FILE_COPY
// checkpoints first, so no run pays for the previous run's dirty buffers.
func (e *env) copyOf(ctx context.Context, template, purpose string) (string, error) {
	e.copies++
	name := fmt.Sprintf("bench_%d", e.copies)
	logf("fresh copy %s of %s for %s", name, template, purpose)
	_, err := e.admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s STRATEGY FILE_COPY",
		pgx.Identifier{name}.Sanitize(), pgx.Identifier{template}.Sanitize()))
	return name, err
}

// drop removes a database that is no longer needed (disk space at 4M rows).
func (e *env) drop(ctx context.Context, name string) {
	if _, err := e.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		logf("dropping %s: %v", name, err)
	}
}

// connect opens one connection to a database of the cluster.
func (e *env) connect(ctx context.Context, db string) (*pgx.Conn, error) {
	return dbconn.Conn(ctx, e.cl.URL(db))
}

// perK is a CPU time per 1,000 rows.
func perK(d time.Duration, rows int) time.Duration {
	if rows <= 0 {
		return 0
	}
	return (d * 1000 / time.Duration(rows)).Round(10 * time.Microsecond)
}
