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
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// CanonicalSettings are set on every pgphi session. Values are read as
// PostgreSQL's text output under these settings (see docs/FORMAT.md).
var CanonicalSettings = map[string]string{
	"TimeZone":           "UTC",
	"DateStyle":          "ISO, YMD",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
	"application_name":   "pgphi",
}

// ErrConnect wraps every failure to reach the database (exit code 3).
var ErrConnect = errors.New("cannot connect to the database")

// Resolve picks the connection string: flag, else config, else $DATABASE_URL,
// else "" (libpq PG* environment variables).
func Resolve(flag, fromConfig string) string {
	switch {
	case flag != "":
		return flag
	case fromConfig != "":
		return os.ExpandEnv(fromConfig)
	default:
		return os.Getenv("DATABASE_URL")
	}
}

// Open connects a pool of up to maxConns connections and checks it with a ping.
func Open(ctx context.Context, connString string, maxConns int) (*pgxpool.Pool, error) {
	cfg, err := poolConfig(connString, maxConns)
	if err != nil {
		return nil, err
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
