package dbconn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrPooler is returned by DetectPooler when the connection goes through a
// pooler that hands a session's statements to different server sessions
// (PgBouncer in transaction or statement pooling mode).
var ErrPooler = errors.New("the connection goes through a transaction-pooling proxy (PgBouncer pool_mode transaction or statement)")

// poolerAdvice is what to do about it.
const poolerAdvice = "session settings (the canonical text output, search_path, the session role) and advisory locks would be lost or shared between transactions; connect pgphi to PostgreSQL directly, or through a pool in session mode (pool_mode = session)"

// DetectPooler checks that each connection of pool is a server session of
// its own: pgphi relies on session settings (the canonical text output,
// search_path, the session role) and on session advisory locks, which a
// transaction pooler loses between transactions or hands to other clients.
//
// On one acquired connection it sets a session variable to a random value
// and reads the backend's process id; then, several times, it reads both
// again on that connection (each statement its own transaction) and on a
// second connection of the pool. The same backend behind both connections,
// another backend behind one connection, the setting lost, or the setting
// seen by the other connection means a pooler sits in between. A server
// whose server_version names PgBouncer is refused in any mode, since its
// mode can change under pgphi. The probes use the simple protocol (a
// transaction pooler also breaks prepared statements). The error wraps
// ErrPooler and says what to do.
func DetectPooler(ctx context.Context, pool *pgxpool.Pool) error {
	a, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConnect, err)
	}
	defer a.Release()
	if v := a.Conn().PgConn().ParameterStatus("server_version"); strings.Contains(strings.ToLower(v), "bouncer") {
		return fmt.Errorf("%w: the server reports version %s: %s", ErrPooler, v, poolerAdvice)
	}
	// A pool of one connection cannot lend a second: then only the
	// single-connection checks run.
	var b *pgxpool.Conn
	if pool.Config().MaxConns >= 2 {
		if b, err = pool.Acquire(ctx); err != nil {
			return fmt.Errorf("%w: %v", ErrConnect, err)
		}
		defer b.Release()
	}
	var raw [8]byte
	_, _ = rand.Read(raw[:])
	probe := hex.EncodeToString(raw[:])
	simple := pgx.QueryExecModeSimpleProtocol
	read := func(c *pgxpool.Conn) (pid int, setting string, err error) {
		var s *string
		err = c.QueryRow(ctx, "SELECT pg_catalog.pg_backend_pid(), pg_catalog.current_setting('pgphi.session_probe', true)", simple).Scan(&pid, &s)
		if s != nil {
			setting = *s
		}
		return pid, setting, err
	}
	var pidA int
	if err := a.QueryRow(ctx, "SELECT pg_catalog.pg_backend_pid(), pg_catalog.set_config('pgphi.session_probe', $1, false)", simple, probe).Scan(&pidA, new(string)); err != nil {
		return fmt.Errorf("checking for a connection pooler: %w", err)
	}
	defer func() { _, _ = a.Exec(context.WithoutCancel(ctx), "RESET pgphi.session_probe", simple) }()
	for range 3 {
		pidB, seenB := 0, ""
		if b != nil {
			if pidB, seenB, err = read(b); err != nil {
				return fmt.Errorf("checking for a connection pooler: %w", err)
			}
		}
		pid, seen, err := read(a)
		if err != nil {
			return fmt.Errorf("checking for a connection pooler: %w", err)
		}
		switch {
		case b != nil && (pidB == pidA || seenB == probe):
			return fmt.Errorf("%w: two connections reached the same server session: %s", ErrPooler, poolerAdvice)
		case pid != pidA || seen != probe:
			return fmt.Errorf("%w: two statements of one connection ran in different server sessions: %s", ErrPooler, poolerAdvice)
		}
	}
	return nil
}
