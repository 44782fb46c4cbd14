package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// RowQuerier runs a query returning one row.
type RowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Options tune a runner.
type Options struct {
	Actor       string        // the person or pipeline, recorded beside the database role
	LockWait    time.Duration // how long to wait for another runner (default 60s)
	LockTimeout time.Duration // how long DDL waits for a table lock (default 2s)
	Retries     int           // retries of a statement that timed out on a lock (default 5)
	Logf        func(format string, args ...any)
	Observer    Observer // told what the run does, for metrics (nil: nobody)
}

// Observer is told what a run does: counts, versions and durations, never
// a name or a statement. *metrics.Recorder implements it.
type Observer interface {
	MigrationsPlanned(n int)
	MigrationStarted(version int64)
	MigrationStatement()
	MigrationDone(version int64)
	LockRetry(wait time.Duration) // a table lock not granted within the lock timeout; wait includes the backoff
	RunnerLockWait(d time.Duration)
}

type nopObserver struct{}

func (nopObserver) MigrationsPlanned(int)        {}
func (nopObserver) MigrationStarted(int64)       {}
func (nopObserver) MigrationStatement()          {}
func (nopObserver) MigrationDone(int64)          {}
func (nopObserver) LockRetry(time.Duration)      {}
func (nopObserver) RunnerLockWait(time.Duration) {}

// Runner applies and reverts migrations while it holds the runner lock.
type Runner struct {
	dir  *Dir
	opt  Options
	lock *lockConn
	hist []Record
}

// Result is what one run did, for the audit record and the operator.
type Result struct {
	Migrations []MigrationResult
	Skipped    []string // dry run: statements that could not be tried in a transaction (file:line)
}

// MigrationResult is one migration's run.
type MigrationResult struct {
	Name       string
	SHA256     string
	Statements int
	Rows       int64
	Duration   time.Duration
	Resumed    int      // statements already done before this run
	Rebuilt    []string // INVALID indexes dropped and built again
}

// Rows is the total of rows affected.
func (r *Result) Rows() int64 {
	var n int64
	for _, m := range r.Migrations {
		n += m.Rows
	}
	return n
}

// Open takes the runner lock (waiting up to opt.LockWait), then reads the
// directory's history and checks directory and history (Check).
func Open(ctx context.Context, pool *pgxpool.Pool, d *Dir, opt Options) (*Runner, error) {
	if opt.LockWait <= 0 {
		opt.LockWait = 60 * time.Second
	}
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = 2 * time.Second
	}
	if opt.Retries <= 0 {
		opt.Retries = 5
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.Actor == "" {
		opt.Actor = "unknown"
	}
	if opt.Observer == nil {
		opt.Observer = nopObserver{}
	}
	waitStart := time.Now()
	l, err := acquireLock(ctx, pool, opt.LockWait, opt.Logf)
	opt.Observer.RunnerLockWait(time.Since(waitStart))
	if err != nil {
		return nil, err
	}
	r := &Runner{dir: d, opt: opt, lock: l}
	if err := r.reload(ctx); err != nil {
		r.Close(ctx)
		return nil, err
	}
	if err := Check(d, r.hist); err != nil {
		r.Close(ctx)
		return nil, err
	}
	return r, nil
}

// Close releases the lock and its connection.
func (r *Runner) Close(ctx context.Context) { r.lock.close(ctx) }

// History is the history as the runner last read it.
func (r *Runner) History() []Record { return r.hist }

func (r *Runner) reload(ctx context.Context) error {
	h, err := History(ctx, r.lock.conn)
	r.hist = h
	return err
}

// MigrationError is a migration that failed: file, statement and position,
// and the database's error (which names objects, never row values).
type MigrationError struct {
	File      string
	Statement int
	Line, Col int
	Err       error
}

func (e *MigrationError) Error() string {
	if e.Statement == 0 {
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("%s:%d:%d: statement %d failed: %v", e.File, e.Line, e.Col, e.Statement, e.Err)
}
func (e *MigrationError) Unwrap() error { return e.Err }

// ErrorClass names what went wrong without a value: SQLSTATE or a kind.
func ErrorClass(err error) string {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		return "SQLSTATE " + pgErr.Code
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "interrupted"
	}
	return "error"
}

func isLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

// Up applies pending migrations up to version to (to < 0: all), each in its
// own transaction, or statement by statement where one cannot run in a
// transaction. INVALID indexes built by applied migrations are rebuilt first.
func (r *Runner) Up(ctx context.Context, to int64) (*Result, error) {
	res := &Result{}
	if err := r.rebuildInvalid(ctx, res); err != nil {
		return res, err
	}
	pending := Pending(r.dir, r.hist, to)
	r.opt.Observer.MigrationsPlanned(len(pending))
	for _, m := range pending {
		f, err := Parse(m.UpFile, m.Up)
		if err != nil {
			return res, err
		}
		if err := r.lock.stillHeld(ctx); err != nil {
			return res, err
		}
		r.opt.Observer.MigrationStarted(m.Version)
		var mr *MigrationResult
		if f.NonTx() {
			mr, err = r.upStatements(ctx, m, f)
		} else {
			mr, err = r.upTransaction(ctx, m, f)
		}
		if mr != nil {
			res.Migrations = append(res.Migrations, *mr)
		}
		if err != nil {
			return res, err
		}
		r.opt.Observer.MigrationDone(m.Version)
		if err := r.lock.appSession(ctx, true); err != nil {
			return res, err
		}
	}
	return res, r.reload(ctx)
}

func (r *Runner) setLockTimeout(ctx context.Context, local bool, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}) error {
	s := "SET"
	if local {
		s = "SET LOCAL"
	}
	_, err := q.Exec(ctx, fmt.Sprintf("%s lock_timeout = %d", s, r.opt.LockTimeout.Milliseconds()))
	return err
}

func (r *Runner) backoff(ctx context.Context, attempt int, what string) error {
	d := time.Duration(1<<min(attempt, 5)) * 100 * time.Millisecond
	r.opt.Observer.LockRetry(r.opt.LockTimeout + d)
	r.opt.Logf("%s waited %s for a lock; retrying in %s (attempt %d of %d)", what, r.opt.LockTimeout, d, attempt+1, r.opt.Retries)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func rowsOf(tag pgconn.CommandTag) int64 {
	if tag.Insert() || tag.Update() || tag.Delete() || strings.HasPrefix(tag.String(), "MERGE") || strings.HasPrefix(tag.String(), "COPY") {
		return tag.RowsAffected()
	}
	return 0
}

// upTransaction runs a migration and its history record in one
// transaction: killed or failed, it leaves nothing but a failure record.
func (r *Runner) upTransaction(ctx context.Context, m *Migration, f *File) (*MigrationResult, error) {
	conn := r.lock.conn
	start := time.Now()
	for attempt := 0; ; attempt++ {
		var rows int64
		failed := 0
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if err := r.setLockTimeout(ctx, true, tx); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "SELECT pgphi.migration_begin($1, $2, $3, true, $4, $5, $6)", m.Version, m.Name, m.UpSHA, len(f.Statements), r.opt.Actor, f.Hashes()); err != nil {
				return err
			}
			for _, s := range f.Statements {
				tag, err := tx.Exec(ctx, s.SQL, pgx.QueryExecModeSimpleProtocol)
				if err != nil {
					failed = s.Index
					return err
				}
				r.opt.Observer.MigrationStatement()
				rows += rowsOf(tag)
			}
			_, err := tx.Exec(ctx, "SELECT pgphi.migration_finish($1, 'applied', NULL, NULL, $2, $3)", m.Version, f.Hashes(), rows)
			return err
		})
		if err == nil {
			r.opt.Logf("applied %s: %d statements, %d rows, %s", m.Name, len(f.Statements), rows, time.Since(start).Round(time.Millisecond))
			return &MigrationResult{Name: m.Name, SHA256: m.UpSHA, Statements: len(f.Statements), Rows: rows, Duration: time.Since(start)}, nil
		}
		if isLockTimeout(err) && attempt < r.opt.Retries {
			if berr := r.backoff(ctx, attempt, m.Name); berr != nil {
				return nil, berr
			}
			continue
		}
		return nil, r.fail(ctx, m, f, failed, err)
	}
}

// fail records the failure of statement n (0: before any statement) in the
// history and returns the error naming the file and position.
func (r *Runner) fail(ctx context.Context, m *Migration, f *File, n int, err error) error {
	ctx = context.WithoutCancel(ctx)
	class := ErrorClass(err)
	var rec error
	if f.NonTx() {
		_, rec = r.lock.conn.Exec(ctx, "SELECT pgphi.migration_finish($1, 'failed', $2, $3, NULL, NULL)", m.Version, class, n)
	} else {
		rec = pgx.BeginFunc(ctx, r.lock.conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pgphi.migration_begin($1, $2, $3, true, $4, $5, $6)", m.Version, m.Name, m.UpSHA, len(f.Statements), r.opt.Actor, f.Hashes()); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "SELECT pgphi.migration_finish($1, 'failed', $2, $3, NULL, NULL)", m.Version, class, n)
			return err
		})
	}
	_ = r.reload(ctx)
	me := &MigrationError{File: m.UpFile, Statement: n, Err: err}
	if n > 0 && n <= len(f.Statements) {
		me.Line, me.Col = f.Statements[n-1].Line, f.Statements[n-1].Col
	}
	if rec != nil {
		return errors.Join(me, fmt.Errorf("recording the failure of %s: %w", m.Name, rec))
	}
	return me
}

// upStatements runs a migration statement by statement, recording each,
// and resumes after the statements a failed or interrupted run did.
func (r *Runner) upStatements(ctx context.Context, m *Migration, f *File) (*MigrationResult, error) {
	conn := r.lock.conn
	start := time.Now()
	var done int
	if err := conn.QueryRow(ctx, "SELECT pgphi.migration_begin($1, $2, $3, false, $4, $5, $6)", m.Version, m.Name, m.UpSHA, len(f.Statements), r.opt.Actor, f.Hashes()).Scan(&done); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55000" {
			return nil, fmt.Errorf("%w: %s: %s", ErrTampered, m.UpFile, pgErr.Message)
		}
		return nil, err
	}
	mr := &MigrationResult{Name: m.Name, SHA256: m.UpSHA, Statements: len(f.Statements), Resumed: done}
	if done > 0 {
		r.opt.Logf("resuming %s at statement %d of %d: the %d statements done still hash the same", m.Name, done+1, len(f.Statements), done)
	}
	if err := r.setLockTimeout(ctx, false, conn); err != nil {
		return mr, r.fail(ctx, m, f, done+1, err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "RESET lock_timeout") }()
	for _, s := range f.Statements[done:] {
		if err := r.lock.stillHeld(ctx); err != nil {
			return mr, r.fail(ctx, m, f, s.Index, err)
		}
		var rows int64
		for attempt := 0; ; attempt++ {
			rebuilt, skip, err := r.prepareIndex(ctx, s, attempt == 0 && s.Index == done+1 && done > 0)
			if err != nil {
				return mr, r.fail(ctx, m, f, s.Index, err)
			}
			mr.Rebuilt = append(mr.Rebuilt, rebuilt...)
			if skip {
				r.opt.Logf("%s statement %d: index already built by the interrupted run", m.Name, s.Index)
				break
			}
			r.opt.Logf("%s statement %d of %d (line %d)%s", m.Name, s.Index, len(f.Statements), s.Line, map[bool]string{true: ", outside a transaction", false: ""}[s.NonTx])
			tag, err := conn.Exec(ctx, s.SQL, pgx.QueryExecModeSimpleProtocol)
			if err == nil {
				r.opt.Observer.MigrationStatement()
				rows = rowsOf(tag)
				break
			}
			if isLockTimeout(err) && attempt < r.opt.Retries {
				if berr := r.backoff(ctx, attempt, fmt.Sprintf("%s statement %d", m.Name, s.Index)); berr != nil {
					return mr, r.fail(ctx, m, f, s.Index, berr)
				}
				continue
			}
			return mr, r.fail(ctx, m, f, s.Index, err)
		}
		if _, err := conn.Exec(ctx, "SELECT pgphi.migration_step($1, $2, $3, $4)", m.Version, s.Index, s.Hash, rows); err != nil {
			return mr, r.fail(ctx, m, f, s.Index, err)
		}
		mr.Rows += rows
	}
	if _, err := conn.Exec(ctx, "SELECT pgphi.migration_finish($1, 'applied', NULL, NULL, NULL, NULL)", m.Version); err != nil {
		return mr, err
	}
	mr.Duration = time.Since(start)
	r.opt.Logf("applied %s: %d statements (%d resumed), %d rows, %s", m.Name, len(f.Statements), done, mr.Rows, mr.Duration.Round(time.Millisecond))
	return mr, nil
}

// prepareIndex looks, before a CREATE INDEX CONCURRENTLY, for the index it
// names: an INVALID one (left by an interrupted or failed build) is dropped
// so the statement builds it again; a valid one at the resume point means
// the interrupted run built it and died before recording it (skip).
func (r *Runner) prepareIndex(ctx context.Context, s *Statement, resuming bool) (rebuilt []string, skip bool, err error) {
	is := s.Node.GetIndexStmt()
	if is == nil || !is.Concurrent || is.Idxname == "" {
		return nil, false, nil
	}
	name := pgx.Identifier{is.Idxname}
	if sch := is.Relation.GetSchemaname(); sch != "" {
		name = pgx.Identifier{sch, is.Idxname}
	}
	valid, exists, err := indexValid(ctx, r.lock.conn, is.Relation.GetSchemaname(), is.Idxname)
	if err != nil || !exists {
		return nil, false, err
	}
	if valid {
		return nil, resuming && !is.IfNotExists, nil
	}
	r.opt.Logf("dropping INVALID index %s left by an interrupted build, to build it again", name.Sanitize())
	if _, err := r.lock.conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+name.Sanitize()); err != nil {
		return nil, false, err
	}
	return []string{name.Sanitize()}, false, nil
}

// indexValid looks the index up by schema and name; an unqualified name is
// looked up in every schema (the connection's search path may be pgphi's
// own, not the application's), and is valid only if every match is.
func indexValid(ctx context.Context, conn RowQuerier, schema, name string) (valid, exists bool, err error) {
	err = conn.QueryRow(ctx, `SELECT COALESCE(bool_and(i.indisvalid), false), count(*) > 0
		FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relname = $2 AND ($1 = '' OR n.nspname = $1)`, schema, name).Scan(&valid, &exists)
	return valid, exists, err
}

// InvalidIndexes lists the indexes that CREATE INDEX CONCURRENTLY
// statements of applied migrations name and that are INVALID now.
func InvalidIndexes(ctx context.Context, conn RowQuerier, d *Dir, hist []Record) ([]string, error) {
	hv := byVersion(hist)
	var out []string
	for _, m := range d.Migrations {
		if r := hv[m.Version]; r == nil || r.State != "applied" {
			continue
		}
		f, err := Parse(m.UpFile, m.Up)
		if err != nil {
			return nil, err
		}
		for _, s := range f.Statements {
			is := s.Node.GetIndexStmt()
			if is == nil || !is.Concurrent || is.Idxname == "" {
				continue
			}
			name := pgx.Identifier{is.Idxname}
			if sch := is.Relation.GetSchemaname(); sch != "" {
				name = pgx.Identifier{sch, is.Idxname}
			}
			valid, exists, err := indexValid(ctx, conn, is.Relation.GetSchemaname(), is.Idxname)
			if err != nil {
				return nil, err
			}
			if exists && !valid {
				out = append(out, name.Sanitize())
			}
		}
	}
	return out, nil
}

// rebuildInvalid rebuilds (REINDEX CONCURRENTLY) every INVALID index an
// applied migration built.
func (r *Runner) rebuildInvalid(ctx context.Context, res *Result) error {
	bad, err := InvalidIndexes(ctx, r.lock.conn, r.dir, r.hist)
	if err != nil {
		return err
	}
	for _, name := range bad {
		r.opt.Logf("rebuilding INVALID index %s (REINDEX INDEX CONCURRENTLY)", name)
		if _, err := r.lock.conn.Exec(ctx, "REINDEX INDEX CONCURRENTLY "+name); err != nil {
			return fmt.Errorf("rebuilding INVALID index %s: %w", name, err)
		}
		res.Migrations = append(res.Migrations, MigrationResult{Name: "rebuild " + name, Rebuilt: []string{name}})
	}
	return nil
}

// Down reverts the migrations ToRevert chooses, newest first, each with its
// down file in one transaction (or statement by statement where one cannot
// run in a transaction).
func (r *Runner) Down(ctx context.Context, to int64, steps int) (*Result, error) {
	res := &Result{}
	revert := ToRevert(r.dir, r.hist, to, steps)
	r.opt.Observer.MigrationsPlanned(len(revert))
	for _, rec := range revert {
		r.opt.Observer.MigrationStarted(rec.Version)
		m := r.dir.Find(rec.Version)
		if m == nil || m.DownFile == "" {
			return res, fmt.Errorf("%w: %s has no down file: it cannot be rolled down", ErrDir, rec.Name)
		}
		f, err := Parse(m.DownFile, m.Down)
		if err != nil {
			return res, err
		}
		start := time.Now()
		var rows int64
		if f.NonTx() {
			if err := r.setLockTimeout(ctx, false, r.lock.conn); err != nil {
				return res, err
			}
			for _, s := range f.Statements {
				tag, err := r.lock.conn.Exec(ctx, s.SQL, pgx.QueryExecModeSimpleProtocol)
				if err != nil {
					return res, &MigrationError{File: m.DownFile, Statement: s.Index, Line: s.Line, Col: s.Col, Err: err}
				}
				r.opt.Observer.MigrationStatement()
				rows += rowsOf(tag)
			}
			_, _ = r.lock.conn.Exec(ctx, "RESET lock_timeout")
			if _, err := r.lock.conn.Exec(ctx, "SELECT pgphi.migration_revert($1)", m.Version); err != nil {
				return res, err
			}
		} else {
			for attempt := 0; ; attempt++ {
				rows = 0
				var failed *Statement
				err := pgx.BeginFunc(ctx, r.lock.conn, func(tx pgx.Tx) error {
					if err := r.setLockTimeout(ctx, true, tx); err != nil {
						return err
					}
					for _, s := range f.Statements {
						tag, err := tx.Exec(ctx, s.SQL, pgx.QueryExecModeSimpleProtocol)
						if err != nil {
							failed = s
							return err
						}
						r.opt.Observer.MigrationStatement()
						rows += rowsOf(tag)
					}
					_, err := tx.Exec(ctx, "SELECT pgphi.migration_revert($1)", m.Version)
					return err
				})
				if err == nil {
					break
				}
				if isLockTimeout(err) && attempt < r.opt.Retries {
					if berr := r.backoff(ctx, attempt, m.DownFile); berr != nil {
						return res, berr
					}
					continue
				}
				if failed != nil {
					return res, &MigrationError{File: m.DownFile, Statement: failed.Index, Line: failed.Line, Col: failed.Col, Err: err}
				}
				return res, err
			}
		}
		r.opt.Observer.MigrationDone(appliedBelow(r.hist, rec.Version))
		if err := r.lock.appSession(ctx, true); err != nil {
			return res, err
		}
		r.opt.Logf("reverted %s: %d statements, %d rows, %s", m.Name, len(f.Statements), rows, time.Since(start).Round(time.Millisecond))
		res.Migrations = append(res.Migrations, MigrationResult{Name: m.Name, SHA256: hashHex(m.Down), Statements: len(f.Statements), Rows: rows, Duration: time.Since(start)})
	}
	return res, r.reload(ctx)
}

// DryRun runs the pending migrations up to to inside one transaction and
// rolls it back. Statements that cannot run in a transaction are not tried
// and are listed in Result.Skipped.
func (r *Runner) DryRun(ctx context.Context, to int64) (*Result, error) {
	res := &Result{}
	tx, err := r.lock.conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := r.setLockTimeout(ctx, true, tx); err != nil {
		return nil, err
	}
	for _, m := range Pending(r.dir, r.hist, to) {
		f, err := Parse(m.UpFile, m.Up)
		if err != nil {
			return res, err
		}
		mr := MigrationResult{Name: m.Name, SHA256: m.UpSHA}
		skipped := false
		for _, s := range f.Statements {
			if s.NonTx {
				res.Skipped = append(res.Skipped, fmt.Sprintf("%s:%d (%s)", m.UpFile, s.Line, kind(s.Node)))
				skipped = true
				continue
			}
			if skipped {
				// After a statement not tried, a failure may only mean
				// that this one needs it: try it under a savepoint.
				if _, err := tx.Exec(ctx, "SAVEPOINT pgphi_dry_run"); err != nil {
					return res, err
				}
			}
			tag, err := tx.Exec(ctx, s.SQL, pgx.QueryExecModeSimpleProtocol)
			if err != nil && skipped {
				if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT pgphi_dry_run"); rerr != nil {
					return res, rerr
				}
				res.Skipped = append(res.Skipped, fmt.Sprintf("%s:%d (failed with %s after a statement not tried; it may need it)", m.UpFile, s.Line, ErrorClass(err)))
				continue
			}
			if err != nil {
				return res, &MigrationError{File: m.UpFile, Statement: s.Index, Line: s.Line, Col: s.Col, Err: err}
			}
			mr.Statements++
			mr.Rows += rowsOf(tag)
		}
		res.Migrations = append(res.Migrations, mr)
	}
	return res, nil
}

func kind(n *pg_query.Node) string {
	switch {
	case n.GetIndexStmt() != nil:
		return "CREATE INDEX CONCURRENTLY"
	case n.GetDropStmt() != nil:
		return "DROP INDEX CONCURRENTLY"
	case n.GetReindexStmt() != nil:
		return "REINDEX"
	case n.GetVacuumStmt() != nil:
		return "VACUUM"
	case n.GetAlterEnumStmt() != nil:
		return "ALTER TYPE ... ADD VALUE used in the same file"
	}
	return "cannot run in a transaction"
}

// appliedBelow is the highest version below v that counts as applied (0:
// none): the version the database is at once v is reverted.
func appliedBelow(hist []Record, v int64) int64 {
	var best int64
	for _, h := range hist {
		if h.Applied() && h.Version < v && h.Version > best {
			best = h.Version
		}
	}
	return best
}
