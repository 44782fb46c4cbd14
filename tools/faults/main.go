// Command faults is the fault campaign: it runs the real pgphi
// binary against a throwaway PostgreSQL cluster while an application writes
// to the same table, injects a fault into each trial, resumes by running the
// same pgphi command again until it succeeds, and then checks that nothing
// was lost, doubled, changed or leaked.
//
// Scenarios (each a number of trials on a fresh copy of the data):
//
//   - kill-apply, kill-cleanup, kill-rollback, kill-reencrypt: SIGKILL of the
//     pgphi process at a uniformly random moment within the measured duration
//     of an uninterrupted run of the same command (rollback both before and
//     after cleanup; `keys rotate --reencrypt` on an applied table the
//     application still writes plaintext to);
//   - restart: PostgreSQL restarted (pg_ctl restart -m fast) at a random
//     moment of apply's backfill;
//   - conn-drop: pgphi's backends terminated (pg_terminate_backend) at
//     several random moments of apply;
//   - lock: another session holds a lock on the table when apply reaches its
//     expand step, once for longer than lock_timeout × ddl_retries allow
//     (apply must fail cleanly) and once for less (apply must succeed);
//   - disk-full: the table lives in a tablespace on a small tmpfs (root
//     only) that fills up during the backfill; the file system is then grown;
//   - control: one uninterrupted run of each command, which also measures the
//     durations the random moments are drawn from.
//
// Every trial ends with the same checks: `pgphi verify` exits 0 and counts
// every row, the row count equals the initial count plus what the writer
// inserted minus what it deleted, every row the writer did not touch holds
// exactly its original values (md5 against the template), every row it did
// touch holds what it last wrote, and no output or file of pgphi contains
// one of the values planted in the table. After a re-encryption every
// ciphertext must be under the active data key. After cleanup the plaintext must
// be gone and search must find planted values; after rollback the table must
// be the original one.
//
// Usage (from the repository root; as root for the disk-full scenario):
//
//	go run ./tools/faults [-seed 1] [-patients 40000] [-scenario kill-apply,restart] [-write]
//
// It prints progress lines and a Markdown summary; -write also records the
// summary in RELIABILITY.md. The random draws (kill moments as fractions of
// the measured durations, the writer's operations) are a function of -seed,
// the scenario and the trial number, so `-scenario X -seed N` repeats the
// trials of X.
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

// options are the command-line flags.
type options struct {
	seed          uint64
	patients      int
	poolSize      int
	canaries      int
	scenarios     []string
	killApply     int
	killCleanup   int
	killRollback  int
	killReencrypt int
	restarts      int
	connDrops     int
	dropsPerRun   int
	diskFull      int
	writerEvery   time.Duration
	cmdTimeout    time.Duration
	maxReruns     int
	write         bool
	out           string
	keepLogs      bool
	sabotage      bool
	pgphiBin      string
	touchWrites   bool
	commandLine   string
}

// allScenarios in the order they run.
var allScenarios = []string{"kill-apply", "kill-cleanup", "kill-rollback", "kill-reencrypt", "restart", "conn-drop", "lock", "disk-full"}

func main() {
	var o options
	var scen string
	flag.Uint64Var(&o.seed, "seed", 1, "seed of every random draw (kill moments, writer operations)")
	flag.IntVar(&o.patients, "patients", 50_000, "rows of the patient table")
	flag.IntVar(&o.poolSize, "pool", 3000, "existing rows the writer may update and delete (the rest must stay untouched)")
	flag.IntVar(&o.canaries, "canaries", 300, "rows whose names and e-mail are replaced with planted values that must never appear in pgphi's output")
	flag.StringVar(&scen, "scenario", strings.Join(allScenarios, ","), "comma-separated scenarios to run (control trials always run): "+strings.Join(allScenarios, ", "))
	flag.IntVar(&o.killApply, "kill-apply", 8, "trials of SIGKILL during apply")
	flag.IntVar(&o.killCleanup, "kill-cleanup", 6, "trials of SIGKILL during cleanup")
	flag.IntVar(&o.killRollback, "kill-rollback", 6, "trials of SIGKILL during rollback (alternately before and after cleanup)")
	flag.IntVar(&o.killReencrypt, "kill-reencrypt", 4, "trials of SIGKILL during keys rotate --reencrypt")
	flag.IntVar(&o.restarts, "restarts", 3, "trials of a server restart during the backfill")
	flag.IntVar(&o.connDrops, "conn-drops", 3, "trials of terminated backends during apply")
	flag.IntVar(&o.dropsPerRun, "drops-per-trial", 3, "pg_terminate_backend moments per conn-drop trial")
	flag.IntVar(&o.diskFull, "disk-full", 2, "trials of a full tablespace during the backfill (root only)")
	flag.DurationVar(&o.writerEvery, "writer-interval", 20*time.Millisecond, "pause between the application writer's operations")
	flag.DurationVar(&o.cmdTimeout, "command-timeout", 10*time.Minute, "a pgphi run taking longer than this is a hang (a failure)")
	flag.IntVar(&o.maxReruns, "max-reruns", 5, "reruns of the interrupted command before the trial fails")
	flag.BoolVar(&o.write, "write", false, "record the results in RELIABILITY.md")
	flag.StringVar(&o.out, "out", "RELIABILITY.md", "the file -write updates")
	flag.BoolVar(&o.keepLogs, "keep-logs", false, "keep the working directory (configs, every pgphi output)")
	flag.StringVar(&o.pgphiBin, "pgphi", "", "test this pgphi binary instead of building ./cmd/pgphi from the working tree")
	flag.BoolVar(&o.touchWrites, "cleanup-touch", true, "in the cleanup trials the application also updates an unprotected column (updated_at) now and then; cleanup is then resumed with verify && cleanup")
	flag.BoolVar(&o.sabotage, "sabotage", false, "check the checks: damage the first control trial's table and directory behind pgphi's back; that trial must fail")
	flag.Parse()
	if o.patients < 5000 || o.poolSize < 100 || o.poolSize+o.canaries > o.patients/2 {
		fmt.Fprintln(os.Stderr, "faults: need -patients >= 5000, -pool >= 100 and -pool + -canaries <= patients/2")
		os.Exit(2)
	}
	for _, s := range strings.Split(scen, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !knownScenario(s) {
			fmt.Fprintf(os.Stderr, "faults: unknown scenario %q (known: %s)\n", s, strings.Join(allScenarios, ", "))
			os.Exit(2)
		}
		o.scenarios = append(o.scenarios, s)
	}
	o.commandLine = strings.TrimSpace("go run ./tools/faults " + strings.Join(os.Args[1:], " "))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	md := res.markdown(o)
	fmt.Print(md)
	if o.write {
		if err := writeResults(o.out, md); err != nil {
			fmt.Fprintln(os.Stderr, "faults:", err)
			os.Exit(1)
		}
		logf("results recorded in %s", o.out)
	}
	if res.failures() > 0 {
		os.Exit(1)
	}
}

func knownScenario(s string) bool {
	for _, k := range allScenarios {
		if k == s {
			return true
		}
	}
	return false
}

func (o options) wants(s string) bool {
	for _, k := range o.scenarios {
		if k == s {
			return true
		}
	}
	return false
}

var started = time.Now()

// logf prints a progress line on stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%7.1fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
}
