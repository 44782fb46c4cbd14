package engine

import (
	"fmt"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/hooks"
)

// ChildConn is how a PostgreSQL client program pgphi starts (pg_dump,
// pg_restore) reaches the database pgphi is connected to: the connection as
// arguments (host, port, user, database; never a password), and a minimal
// environment built from scratch (hooks.MinimalEnv: no PGPHI_*, no
// PGPASSWORD, no DATABASE_URL) with the TLS protection of pgphi's own
// connection and, when there is a password, PGPASSFILE naming a temporary
// password file of mode 0600. Close removes that file.
type ChildConn struct {
	Args []string
	Env  []string
	done func()
}

// Close removes the password file, if any.
func (c *ChildConn) Close() {
	if c.done != nil {
		c.done()
	}
}

// NewChildConn describes pool's connection for a child program, with the
// TLS settings t (paths resolved by resolve). A pinned server key cannot be
// expressed to libpq and is refused, as for pg_repack.
func NewChildConn(pool *pgxpool.Pool, t config.TLS, resolve func(string) string) (*ChildConn, error) {
	pc := pool.Config()
	cc := pc.ConnConfig
	tlsEnv, err := repackTLSEnv(&cc.Config, pc.ConnString(), t, resolve)
	if err != nil {
		return nil, err
	}
	c := &ChildConn{
		Args: []string{"-h", cc.Host, "-p", fmt.Sprint(cc.Port), "-U", cc.User, "-d", cc.Database},
		Env:  hooks.MinimalEnv(tlsEnv...),
	}
	if cc.Password == "" {
		return c, nil
	}
	if strings.ContainsAny(cc.Password, "\n\r") {
		return nil, fmt.Errorf("the database password contains a line break: it cannot be given to a child program in a password file")
	}
	f, err := os.CreateTemp("", "pgphi-pgpass-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("creating a password file: %w", err)
	}
	c.done = func() { os.Remove(f.Name()) }
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(cc.Password)
	_, werr := f.WriteString("*:*:*:*:" + esc + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(f.Name(), 0o600)
	}
	if werr != nil {
		c.Close()
		return nil, fmt.Errorf("writing a password file: %w", werr)
	}
	c.Env = append(c.Env, "PGPASSFILE="+f.Name())
	return c, nil
}
