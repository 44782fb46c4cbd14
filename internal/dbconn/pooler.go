package dbconn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrPooler is returned by DetectPooler when the connection goes through a
// pooler that hands a session's statements to different server sessions
// (PgBouncer in transaction or statement pooling mode).
var ErrPooler = errors.New("the connection goes through a transaction-pooling proxy (PgBouncer pool_mode transaction or statement)")

// DetectPooler checks that one connection of pool is one server session:
// pgphi relies on session settings (the canonical text output, search_path,
// the session role) and on session advisory locks, which a transaction
// pooler silently loses between transactions. On one acquired connection it
// sets a session variable to a random value and reads the backend's process
// id, then, in later statements (each its own transaction), reads both
// again: a different process id or a lost setting means the statements ran
// on different server sessions. A server that names itself PgBouncer in
// its server_version is refused as well, in any mode, since its mode can
// change under pgphi. The error wraps ErrPooler and says what to do.
func DetectPooler(ctx context.Context, pool *pgxpool.Pool) error {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConnect, err)
	}
	defer c.Release()
	if v := c.Conn().PgConn().ParameterStatus("server_version"); strings.Contains(strings.ToLower(v), "bouncer") {
		return fmt.Errorf("%w: the server reports version %s; connect pgphi to PostgreSQL directly (or through a pool in session mode)", ErrPooler, v)
	}
	var raw [8]byte
	_, _ = rand.Read(raw[:])
	probe := hex.EncodeToString(raw[:])
	var pid1 int
	if err := c.QueryRow(ctx, "SELECT pg_catalog.pg_backend_pid(), pg_catalog.set_config('pgphi.session_probe', $1, false)", probe).Scan(&pid1, new(string)); err != nil {
		return fmt.Errorf("checking for a connection pooler: %w", err)
	}
	for range 3 {
		var pid int
		var got *string
		if err := c.QueryRow(ctx, "SELECT pg_catalog.pg_backend_pid(), pg_catalog.current_setting('pgphi.session_probe', true)").Scan(&pid, &got); err != nil {
			return fmt.Errorf("checking for a connection pooler: %w", err)
		}
		if pid != pid1 || got == nil || *got != probe {
			return fmt.Errorf("%w: two statements of one session ran in different server sessions, so session settings, the session role and advisory locks would be lost between transactions; connect pgphi to PostgreSQL directly, or through a pool in session mode (pool_mode = session)", ErrPooler)
		}
	}
	// Leave the session as it was found.
	_, _ = c.Exec(ctx, "RESET pgphi.session_probe")
	return nil
}
