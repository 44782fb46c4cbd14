package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/state"
	"github.com/pgphi/pgphi/keys"
)

// Step is one idempotent unit of a plan. Run may be interrupted at any point
// and run again, by this process or another, and must end in the same state.
type Step interface {
	Describe() string
	Run(ctx context.Context, r *Runner) error
}

// buildSteps lists apply's steps: pgphi's state and the blind index
// sizing, then every table's operations stage by stage (all tables are
// expanded before any is backfilled), then one verification of the plan.
func buildSteps(p *Plan) []Step {
	steps := []Step{stateStep{}, indexPlanStep{}}
	// Tables already cleaned up have nothing left to encrypt.
	var live []*Target
	for _, t := range p.Tables {
		if !t.Cleaned() {
			live = append(live, t)
		}
	}
	for _, st := range stages {
		for _, t := range live {
			if st == StageExpand {
				steps = append(steps, expandStep{t})
				continue
			}
			for _, op := range t.operations() {
				if op.Stage() == st {
					steps = append(steps, opStep{op, t})
				}
			}
		}
	}
	return append(steps, verifyStep{})
}

// Runner carries out a plan.
type Runner struct {
	Pool      *pgxpool.Pool
	Keys      *keys.Keyring
	Config    *config.Config
	Plan      *Plan
	Workers   int
	BatchSize int
	Log       io.Writer // plain progress and status lines (stderr); never values
	Progress  ProgressFactory
	WorkerID  string

	// Throttle paces the backfill and catch-up; nil: full speed.
	Throttle *Throttle

	// Metrics receives value-free measurements (package metrics); nil: none.
	Metrics Metrics

	remaining atomic.Int64  // rows still marked after the last catch-up round
	verified  *VerifyResult // the result of apply's own verification
	indexers  Indexers      // blind index term computers, set by indexPlanStep
	// nextIndexers compute the terms of generations reindexes are building
	// (set by indexPlanStep): the catch-up writes them beside the active ones.
	nextIndexers Indexers
}

// Metrics receives what a run measures: counts, durations, a table's
// qualified name and fixed words (phase, result, error class), never a
// value. Package metrics implements it.
type Metrics interface {
	// Batch: one batch transaction of phase (backfill, catchup, restore) on
	// table committed rows (result ok), or was retried after a transient
	// error (retried), or failed (failed; unencryptable: a value could not
	// be encrypted); class names the error (ErrorClass).
	Batch(phase, table string, rows int, result, class string)
	// Verified: a verification of table read rows, compared values and
	// found mismatches.
	Verified(table string, rows, values, mismatches int64)
	// LockRetry: a lock was not granted within lock_timeout; the statement
	// is retried after wait (lock_timeout plus backoff) in all.
	LockRetry(wait time.Duration)
}

type nopMetrics struct{}

func (nopMetrics) Batch(string, string, int, string, string) {}
func (nopMetrics) Verified(string, int64, int64, int64)      {}
func (nopMetrics) LockRetry(time.Duration)                   {}

func (r *Runner) metrics() Metrics {
	if r.Metrics == nil {
		return nopMetrics{}
	}
	return r.Metrics
}

// ErrorClass names what went wrong without any value: "SQLSTATE xxxxx",
// "unencryptable value", "verification mismatch", "interrupted" or "error".
func ErrorClass(err error) string {
	var pgErr *pgconn.PgError
	var rowErr *RowError
	var ve *VerifyError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &pgErr):
		return "SQLSTATE " + pgErr.Code
	case errors.As(err, &rowErr):
		return "unencryptable value"
	case errors.As(err, &ve):
		return "verification mismatch"
	case errors.Is(err, context.Canceled):
		return "interrupted"
	}
	return "error"
}

// batchDone reports a finished batch to the metrics.
func (r *Runner) batchDone(phase string, t *Target, rows int, err error) {
	var rowErr *RowError
	switch {
	case err == nil && rows == 0:
		// The empty read that ends a chunk or a backlog: no batch was written.
	case err == nil:
		r.metrics().Batch(phase, t.QualifiedName(), rows, "ok", "")
	case transient(err):
		r.metrics().Batch(phase, t.QualifiedName(), 0, "retried", ErrorClass(err))
	case errors.As(err, &rowErr):
		r.metrics().Batch(phase, t.QualifiedName(), 0, "unencryptable", ErrorClass(err))
	default:
		r.metrics().Batch(phase, t.QualifiedName(), 0, "failed", ErrorClass(err))
	}
}

// Verification is the result of apply's verification step (nil when it did
// not run): evidence as good as a separate verify, which the command line
// records through pgphi.verification_finish.
func (r *Runner) Verification() *VerifyResult { return r.verified }

// Remaining is how many rows the application changed after apply's last
// catch-up round; they stay marked for the next apply.
func (r *Runner) Remaining() int64 { return r.remaining.Load() }

// ProgressFactory starts a progress display for one phase of work. poll
// returns rows done so far (across every process working on the plan).
type ProgressFactory func(label string, total int64, poll func(context.Context) (int64, error)) interface{ Stop() }

func (r *Runner) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, format+"\n", args...)
	}
}

func (r *Runner) defaults() {
	if r.Workers <= 0 {
		r.Workers = r.Config.Apply.Workers
	}
	if r.BatchSize <= 0 {
		r.BatchSize = r.Config.Apply.BatchSize
	}
	if r.WorkerID == "" {
		host, _ := os.Hostname()
		r.WorkerID = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if r.Progress == nil {
		r.Progress = func(string, int64, func(context.Context) (int64, error)) interface{ Stop() } { return nopStop{} }
	}
}

type nopStop struct{}

func (nopStop) Stop() {}

// Apply runs every step of the plan in order.
func (r *Runner) Apply(ctx context.Context) error {
	r.defaults()
	r.remaining.Store(0)
	for _, t := range r.Plan.Tables {
		if t.Restoring() {
			return withNextStep(fmt.Errorf("%w: a rollback of %s is under way: it must finish first", ErrRefused, t.QualifiedName()), OpRollback)
		}
	}
	if !r.Plan.dependenciesRead {
		if err := r.Plan.DiscoverDependencies(ctx, r.Pool, r.Config.Encryption.ColumnSuffix); err != nil {
			return err
		}
	}
	if err := r.Plan.ForeignKeyRefusal(); err != nil {
		return err
	}
	if r.Throttle != nil {
		if r.Throttle.CanaryQuery == "" && len(r.Plan.Tables) > 0 {
			t := r.Plan.Tables[0]
			r.Throttle.CanaryQuery = fmt.Sprintf("SELECT %s FROM %s ORDER BY %s LIMIT 10", t.keyList(""), t.Ident(), t.keyList(""))
		}
		if err := r.Throttle.Start(ctx, r.Pool); err != nil {
			return err
		}
		defer r.Throttle.Stop()
	}
	for _, s := range r.Plan.Steps {
		r.logf("==> %s", s.Describe())
		if err := s.Run(ctx, r); err != nil {
			return err
		}
	}
	_, err := r.Pool.Exec(ctx, "UPDATE pgphi.plans SET completed_at = now() WHERE plan_id = $1", r.Plan.ID)
	return err
}

// stateStep creates pgphi's schema and records the plan.
type stateStep struct{}

func (stateStep) Describe() string {
	return "create or update pgphi's state schema and record the plan"
}

func (stateStep) Run(ctx context.Context, r *Runner) error {
	conn, err := r.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := state.Ensure(ctx, conn); err != nil {
		return err
	}
	_, err = r.Pool.Exec(ctx, "INSERT INTO pgphi.plans (plan_id, spec) VALUES ($1, $2) ON CONFLICT (plan_id) DO NOTHING", r.Plan.ID, r.Plan.SpecJSON())
	if err != nil {
		return fmt.Errorf("recording plan: %w", err)
	}
	_, err = r.Pool.Exec(ctx, "UPDATE pgphi.failures SET resolved_at = now() WHERE resolved_at IS NULL")
	return err
}

// ddl runs fn in a transaction with a short lock_timeout, retrying with
// exponential backoff and jitter when the lock is not granted in time, so that
// pgphi's DDL never queues in front of the application's queries for long.
func (r *Runner) ddl(ctx context.Context, what string, fn func(pgx.Tx) error) error {
	backoff := 100 * time.Millisecond
	retries := r.Config.Apply.DDLRetries
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = '%dms'", r.Config.Apply.LockTimeout.Milliseconds())); err != nil {
				return err
			}
			return fn(tx)
		})
		if err == nil {
			return nil
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "55P03" && pgErr.Code != "40P01") || attempt >= retries {
			if attempt >= retries {
				return fmt.Errorf("%s: lock not granted after %d attempts: %w", what, attempt, err)
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		wait := backoff + time.Duration(rand.Int64N(int64(backoff)))
		r.metrics().LockRetry(r.Config.Apply.LockTimeout + wait)
		r.logf("    %s: table busy (lock not granted within %s), retry %d/%d in %s", what, r.Config.Apply.LockTimeout, attempt, retries, wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// buildIndex creates an index CONCURRENTLY, one process at a time, replacing
// an invalid leftover of an interrupted build.
func (r *Runner) buildIndex(ctx context.Context, t *Target, name, definition string) error {
	return r.buildIndexKind(ctx, t, name, definition, false)
}

// buildIndexKind is buildIndex for a unique index too.
func (r *Runner) buildIndexKind(ctx context.Context, t *Target, name, definition string, unique bool) error {
	// One process builds; the others wait. A session advisory lock taken with
	// pg_try_advisory_lock, because a waiting pg_advisory_lock would hold a
	// snapshot that CREATE INDEX CONCURRENTLY then waits for: a deadlock.
	conn, err := r.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	lockKey := "pgphi index " + t.QualifiedName() + " " + name
	for {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtext($1))", lockKey).Scan(&got); err != nil {
			return err
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(hashtext($1))", lockKey)

	var valid *bool
	err = conn.QueryRow(ctx, `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`, t.Schema, name).Scan(&valid)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if valid != nil && *valid {
		return nil
	}
	qualified := pgx.Identifier{t.Schema, name}.Sanitize()
	if valid != nil {
		// Only an interrupted build leaves an invalid index: we hold the lock
		// every builder takes.
		r.logf("    dropping invalid index %s left by an interrupted build", name)
		if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+qualified); err != nil {
			return fmt.Errorf("dropping invalid index %s: %w", name, err)
		}
	}
	kind := "INDEX"
	if unique {
		kind = "UNIQUE INDEX"
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE %s CONCURRENTLY IF NOT EXISTS %s ON %s %s", kind, ident(name), t.Ident(), definition)); err != nil {
		return fmt.Errorf("creating index %s: %w", name, err)
	}
	return nil
}

// runWorkers runs fn in n goroutines and returns the first error, cancelling the rest.
func runWorkers(ctx context.Context, n int, fn func(ctx context.Context, worker int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := fn(ctx, i); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}
