// Command bench measures pgphi against its baselines in one run,
// on a throwaway PostgreSQL cluster with durable settings and the demo's
// synthetic patient table:
//
//   - baseline A: one server-side UPDATE copying the seven PHI columns of
//     patient into new columns (the physical cost of rewriting every row);
//   - baseline B: pgcrypto pgp_sym_encrypt of the seven columns in one UPDATE
//     (on a sample; the rate is extrapolated and said so);
//   - baseline C: a row-at-a-time client loop, AES-GCM in the client and one
//     autocommitted UPDATE per row (on a sample);
//   - `pgphi apply` (the real binary, PGPHI_ADAPTIVE=off) without search
//     kinds and with the default search kinds of the demo config, each on a
//     fresh copy of the table, while a writer updates one row every few
//     milliseconds and records the longest stall; peak memory (max RSS);
//   - search latency of every kind through the Go API against plaintext
//     SQL (B-tree equality, ILIKE, dmetaphone);
//   - `pgphi serve` on loopback against the in-process Go API: values
//     sealed (with terms) and decrypted per second in requests of 500, and
//     the latency of a one-value seal;
//   - `pgphi keys rotate --reencrypt` on the apply's table without search
//     kinds, under the same writer, against that apply's backfill;
//   - `pgphi cleanup` under the same writer.
//
// Usage (from the repository root):
//
//	go run ./tools/bench [-patients 200000] [-write]
//
// It prints a Markdown report; -write also records it in BENCHMARKS.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type options struct {
	patients      int
	workers       int
	batchSize     int
	queries       int
	scanQueries   int
	sampleB       int
	sampleC       int
	sampleCTime   time.Duration
	writerEvery   time.Duration
	memCheck      bool
	cleanup       bool
	write         bool
	out           string
	keepLogs      bool
	only          string
	compare       string
	rounds        int
	commandLine   string
	serverSetting map[string]string
}

func main() {
	var o options
	flag.IntVar(&o.patients, "patients", 1_000_000, "rows of the patient table (the issue asks for 1000000 and 4000000)")
	flag.IntVar(&o.workers, "workers", 0, "pgphi apply --workers (0: the config default)")
	flag.IntVar(&o.batchSize, "batch-size", 0, "pgphi apply --batch-size (0: the config default)")
	flag.IntVar(&o.queries, "queries", 300, "queries per index-backed search kind (exact, phone, date)")
	flag.IntVar(&o.scanQueries, "scan-queries", 30, "queries per search kind whose plaintext counterpart scans the table (prefix, contains, phonetic; under the privacy budget most rows of a large table are candidates of contains and phonetic, seconds each)")
	flag.IntVar(&o.sampleB, "sample-b", 10_000, "rows encrypted by baseline B (pgcrypto), at most -patients")
	flag.IntVar(&o.sampleC, "sample-c", 5_000, "rows encrypted by baseline C (client loop), at most -patients")
	flag.DurationVar(&o.sampleCTime, "sample-c-time", 20*time.Second, "time limit of baseline C")
	flag.DurationVar(&o.writerEvery, "writer-interval", 5*time.Millisecond, "pause between the concurrent writer's single-row UPDATEs")
	flag.BoolVar(&o.memCheck, "memcheck", true, "also apply to a table a quarter the size, to see whether peak memory grows with the table")
	flag.BoolVar(&o.cleanup, "cleanup", true, "also run pgphi cleanup (with pg_repack when installed) under the writer")
	flag.BoolVar(&o.write, "write", false, "record the results in BENCHMARKS.md")
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "the file -write updates")
	flag.BoolVar(&o.keepLogs, "keep-logs", false, "keep the working directory (configs, pgphi output) after the run")
	flag.StringVar(&o.compare, "compare", "", "measure the cost of a change instead: apply built from this git revision against the working tree, in alternating rounds (-write records it in BENCHMARKS.md)")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds per binary and mode with -compare")
	flag.StringVar(&o.only, "only", "", "development loop: run baseline A and one apply, \"plain\", \"search\" (then the search bench on the demo kinds, with candidates and measured leakage), \"search-rows\" (the same with the earlier row planner's bits and accept_leakage: the speed side of the privacy trade), \"unique\" (plain, with email made unique and under a UNIQUE constraint: the digest column's cost) \"serve\" (the demo apply, then pgphi serve against the Go API), or the writer's stalls during schema migrations, \"migrate\", or the online rebuild of every column's terms, \"reindex\", or the plain apply then keys rotate --reencrypt of the same table, \"reencrypt\"; print a summary and record nothing")
	flag.Parse()
	if o.only != "" && o.only != "plain" && o.only != "search" && o.only != "search-rows" && o.only != "unique" && o.only != "serve" && o.only != "migrate" && o.only != "backup" && o.only != "reindex" && o.only != "reencrypt" {
		fmt.Fprintln(os.Stderr, "bench: -only takes plain, search, search-rows, unique, serve, migrate, backup, reindex or reencrypt")
		os.Exit(2)
	}
	if o.patients < 1000 {
		fmt.Fprintln(os.Stderr, "bench: -patients must be at least 1000")
		os.Exit(2)
	}
	o.commandLine = commandLine()
	// Durable, production-like settings: fsync, full_page_writes and
	// synchronous_commit stay on. JIT is off so plaintext scans are not
	// slowed by compilation (it would flatter pgphi's search ratios).
	o.serverSetting = map[string]string{
		"shared_buffers":                  "1GB",
		"effective_cache_size":            "4GB",
		"maintenance_work_mem":            "256MB",
		"work_mem":                        "16MB",
		"max_wal_size":                    "4GB",
		"checkpoint_timeout":              "15min",
		"checkpoint_completion_target":    "0.9",
		"wal_buffers":                     "16MB",
		"jit":                             "off",
		"max_parallel_workers_per_gather": "2",
	}

	if os.Getenv("PGPHI_BENCH_STATEMENTS") != "" {
		// Development aid with -only: the statements that took the server's time.
		o.serverSetting["shared_preload_libraries"] = "pg_stat_statements"
		o.serverSetting["pg_stat_statements.track"] = "all"
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.compare != "" {
		md, err := compareRevisions(ctx, o, o.compare)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Print(md)
		if o.write {
			if err := writeSection(o.out, "compare", md); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				os.Exit(1)
			}
			logf("results recorded in %s", o.out)
		}
		return
	}
	res, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if res == nil {
		return // -only printed its summary
	}
	md := res.markdown(o)
	fmt.Print(md)
	if o.write {
		if err := writeBenchmarks(o.out, o.patients, md); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		logf("results recorded in %s", o.out)
	}
}

// commandLine is the command as a reader would type it.
func commandLine() string {
	args := os.Args[1:]
	return strings.TrimSpace("go run ./tools/bench " + strings.Join(args, " "))
}

var started = time.Now()

// logf prints a progress line on stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
}
