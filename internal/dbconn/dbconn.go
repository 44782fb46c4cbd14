// Package dbconn opens pgphi's connections: it resolves which database to use
// (flag, config, $DATABASE_URL, libpq PG* variables) and fixes the session
// settings that make PostgreSQL's text output canonical, because ciphertexts
// and verification depend on that text being the same on every run.
package dbconn

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// CanonicalSettings are set on every pgphi session. Values are read as
// PostgreSQL's text output under these settings (see docs/FORMAT.md).
//
// search_path is pinned to pg_catalog, pg_temp: no function, operator, type
// or table that another role created (an owner of schema public, say) can be
// picked up by name resolution inside pgphi's statements. pgphi qualifies its
// own objects (pgphi.x) and the application's tables (schema.table); pg_temp
// last keeps temporary tables reachable by their bare names, and functions
// and operators are never looked up there.
//
// row_security is off: a read that row-level security would filter fails
// instead of silently returning fewer rows. A verification that could not
// see every row must not pass, and cleanup must not drop what it did not
// verify; no policy expression (owner code) runs inside pgphi's statements.
var CanonicalSettings = map[string]string{
	"search_path":        "pg_catalog, pg_temp",
	"row_security":       "off",
	"TimeZone":           "UTC",
	"DateStyle":          "ISO, YMD",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
	"application_name":   "pgphi",
}

// ErrConnect wraps every failure to reach the database (exit code 3).
var ErrConnect = errors.New("cannot connect to the database")

// URLVariables are the only environment variables that database.url in the
// config may refer to, as ${NAME} or $NAME. Their values are inserted as
// they are: percent-encode special characters of a password in a URL.
var URLVariables = []string{"PGPHI_DB_HOST", "PGPHI_DB_PORT", "PGPHI_DB_NAME", "PGPHI_DB_USER", "PGPHI_DB_PASSWORD"}

// ErrURLVariable is wrapped by Resolve's error for a reference to an
// environment variable outside URLVariables (a configuration error).
var ErrURLVariable = errors.New("database.url refers to an environment variable pgphi does not expand")

// Resolve picks the connection string: flag, else config, else $DATABASE_URL,
// else "" (libpq PG* environment variables).
//
// In the config's URL only the variables of URLVariables are expanded; any
// other reference (${PGPHI_PASSPHRASE}, $HOME, $1, $$) is an error wrapping
// ErrURLVariable that names the variable, never its value: expanding any
// variable would let a config file send a secret of pgphi's environment to a
// server of its choice (as a host name, a user) or print it in an error. A
// literal "$" is written %24. The flag and $DATABASE_URL are used as given.
func Resolve(flag, fromConfig string) (string, error) {
	switch {
	case flag != "":
		return flag, nil
	case fromConfig != "":
		var refused []string
		out := os.Expand(fromConfig, func(name string) string {
			if slices.Contains(URLVariables, name) {
				return os.Getenv(name)
			}
			if !slices.Contains(refused, name) {
				refused = append(refused, name)
			}
			return ""
		})
		if len(refused) > 0 {
			return "", fmt.Errorf("%w: %s (only %s are expanded; write a literal $ as %%24)",
				ErrURLVariable, "$"+strings.Join(refused, ", $"), strings.Join(URLVariables, ", "))
		}
		return out, nil
	default:
		return os.Getenv("DATABASE_URL"), nil
	}
}

// Option changes a pool's configuration before it connects.
type Option func(*pgxpool.Config)

// SessionRole makes every session of the pool act as role from its start
// (the role setting in the startup packet, as SET ROLE would): a login that
// is a NOINHERIT member of role gets role's privileges only this way, and
// a transaction can still SET LOCAL ROLE to another role the login is a
// member of. The server refuses the connection when the login is not a
// member of role.
func SessionRole(role string) Option {
	return func(c *pgxpool.Config) {
		if role != "" {
			c.ConnConfig.RuntimeParams["role"] = role
		}
	}
}

// Open connects a pool of up to maxConns connections and checks it with a ping.
func Open(ctx context.Context, connString string, maxConns int, opts ...Option) (*pgxpool.Pool, error) {
	cfg, err := poolConfig(connString, maxConns)
	if err != nil {
		return nil, err
	}
	for _, o := range opts {
		o(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConnect, scrub(err, connString))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%w (%s): %v", ErrConnect, describe(cfg.ConnConfig), scrub(err, connString))
	}
	return pool, nil
}

// poolConfig parses a connection string and sets the canonical session
// settings and the pool size.
func poolConfig(connString string, maxConns int) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid connection string %s: %v", ErrConnect, Safe(connString), scrub(err, connString))
	}
	for k, v := range CanonicalSettings {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	return cfg, nil
}

// Conn opens a single connection with the canonical settings.
func Conn(ctx context.Context, connString string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid connection string %s: %v", ErrConnect, Safe(connString), scrub(err, connString))
	}
	for k, v := range CanonicalSettings {
		cfg.RuntimeParams[k] = v
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %v", ErrConnect, describe(cfg), scrub(err, connString))
	}
	return c, nil
}

func describe(c *pgx.ConnConfig) string {
	return fmt.Sprintf("host=%s port=%d database=%s user=%s", c.Host, c.Port, c.Database, c.User)
}

// Safe renders a connection string without its password, for messages.
func Safe(connString string) string {
	u, err := url.Parse(connString)
	if err != nil || u.Scheme == "" {
		return "(connection string)"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// scrub removes the connection string's password from an error message.
type scrubbed struct{ msg string }

func (s scrubbed) Error() string { return s.msg }

func scrub(err error, connString string) error {
	msg := err.Error()
	if u, perr := url.Parse(connString); perr == nil {
		if p, has := u.User.Password(); has && p != "" {
			msg = replaceAll(msg, p, "xxxxx")
		}
	}
	if p := os.Getenv("PGPASSWORD"); p != "" {
		msg = replaceAll(msg, p, "xxxxx")
	}
	return scrubbed{msg}
}

func replaceAll(s, old, new string) string { return strings.ReplaceAll(s, old, new) }
