package migrate

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/dbconn"
)

// HistoryTable is the table the runner records to; the lock is keyed by it
// and the database, so runners of other databases or tools never collide.
const HistoryTable = "pgphi.migrations"

// ErrLocked is returned when another runner held the lock for the whole
// wait; the message names its pid, application_name and start time.
var ErrLocked = errors.New("another migration runner holds the lock")

// ErrPooler is returned when the connection does not keep its session
// between statements (a transaction-pooling proxy such as PgBouncer in
// transaction mode): advisory locks and session settings would not hold.
// It is dbconn.ErrPooler: apply, serve and migrate detect a pooler alike.
var ErrPooler = dbconn.ErrPooler

// lockConn is a dedicated connection, outside the pool, holding the runner's
// session advisory lock; the migrations run on it too, so they run only
// while the lock is held, and the lock goes when the connection does.
type lockConn struct {
	conn *pgx.Conn
	key  int64
}

func lockKey(database string) int64 {
	h := fnv.New64a()
	h.Write([]byte("pgphi migrate\x00" + database + "\x00" + HistoryTable))
	return int64(h.Sum64())
}

// acquireLock takes the runner lock on a connection of its own, retrying
// until wait has passed.
func acquireLock(ctx context.Context, pool *pgxpool.Pool, wait time.Duration, logf func(string, ...any)) (*lockConn, error) {
	if err := dbconn.DetectPooler(ctx, pool); err != nil {
		return nil, err
	}
	pc, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	conn := pc.Hijack()
	l := &lockConn{conn: conn}
	fail := func(err error) (*lockConn, error) {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	var db string
	var pid1 int32
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.current_database()::text, pg_catalog.pg_backend_pid()").Scan(&db, &pid1); err != nil {
		return fail(err)
	}
	if err := l.appSession(ctx, false); err != nil {
		return fail(err)
	}
	l.key = lockKey(db)
	deadline := time.Now().Add(wait)
	told := false
	for {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_try_advisory_lock($1)", l.key).Scan(&ok); err != nil {
			return fail(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			h := l.holder(ctx)
			return fail(fmt.Errorf("%w on database %s (%s) after waiting %s: %s", ErrLocked, db, HistoryTable, wait, h))
		}
		if !told {
			logf("waiting for the migration lock (held by %s), at most %s", l.holder(ctx), wait)
			told = true
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	// A transaction-pooling proxy hands each statement to any server
	// session: the lock taken above may belong to another one by now.
	var held bool
	var pid2 int32
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.pg_backend_pid(), EXISTS (SELECT 1 FROM pg_catalog.pg_locks
		WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND granted
		  AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1)`, l.hi(), l.lo()).Scan(&pid2, &held); err != nil {
		return fail(err)
	}
	if !held || pid1 != pid2 {
		return fail(fmt.Errorf("%w: the advisory lock pgphi took is not held by the session it talks to (a transaction-pooling proxy such as PgBouncer in transaction mode?); connect migrate directly to PostgreSQL or through a session-mode pool", ErrPooler))
	}
	return l, nil
}

// appSession sets the session migrations run in; with reset, it first
// undoes whatever the previous migration file SET (RESET ALL keeps the
// advisory lock), so no setting leaks from one file into the next.
//
// Migrations are the application's SQL: they run in the search path the
// role and database are configured with (ALTER ROLE / DATABASE ... SET
// search_path, else the server's default), not in pgphi's own.
func (l *lockConn) appSession(ctx context.Context, reset bool) error {
	if reset {
		if _, err := l.conn.Exec(ctx, "RESET ALL"); err != nil {
			return err
		}
	}
	_, err := l.conn.Exec(ctx, `SELECT pg_catalog.set_config('application_name', 'pgphi migrate', false),
		pg_catalog.set_config('search_path', COALESCE(
			(SELECT pg_catalog.substr(c, 13) FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) c
			  WHERE c LIKE 'search_path=%' AND s.setrole IN (0, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = pg_catalog.session_user()))
			    AND s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))
			  ORDER BY s.setrole = 0, s.setdatabase = 0 LIMIT 1),
			(SELECT boot_val FROM pg_catalog.pg_settings WHERE name = 'search_path')), false)`)
	return err
}

// stillHeld re-checks, before each unit of work, that the session the
// runner talks to holds the lock.
func (l *lockConn) stillHeld(ctx context.Context) error {
	var held bool
	if err := l.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks
		WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND granted
		  AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1)`, l.hi(), l.lo()).Scan(&held); err != nil {
		return err
	}
	if !held {
		return fmt.Errorf("%w: the runner's session no longer holds the migration lock", ErrPooler)
	}
	return nil
}

// holder describes the session holding the lock: pid, application_name and
// when it started (what the connected role may see of it).
func (l *lockConn) holder(ctx context.Context) string {
	var pid int32
	var app string
	var started *time.Time
	err := l.conn.QueryRow(ctx, `SELECT l.pid, COALESCE(a.application_name, ''), a.backend_start
		FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
		  AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1
		LIMIT 1`, l.hi(), l.lo()).Scan(&pid, &app, &started)
	if err != nil {
		return "a session that has since gone"
	}
	at := "unknown (not visible to this role)"
	if started != nil {
		at = started.UTC().Format(time.RFC3339)
	}
	if app == "" {
		app = "none"
	}
	return fmt.Sprintf("pid %d, application_name %s, started %s", pid, app, at)
}

// hi and lo are the halves of the key as pg_locks shows them (classid, objid).
func (l *lockConn) hi() int64 { return int64(uint64(l.key) >> 32) }
func (l *lockConn) lo() int64 { return int64(uint32(uint64(l.key))) }

func (l *lockConn) close(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	_, _ = l.conn.Exec(ctx, "SELECT pg_catalog.pg_advisory_unlock($1)", l.key)
	l.conn.Close(ctx)
}
