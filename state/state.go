// Package state owns pgphi's own schema in the target database (`pgphi`): its
// versioned SQL files and the code that brings a database up to date. Any
// number of pgphi processes may call Ensure at once; an advisory lock
// serializes them.
package state

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed sql/*.sql
var files embed.FS

// Schema is the name of pgphi's schema.
const Schema = "pgphi"

// advisoryKey serializes schema changes made by concurrent pgphi processes.
const advisoryKey = 0x70677068 // "pgph"

// Conn is what Ensure needs: a *pgx.Conn or a pooled connection.
type Conn interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Ensure creates the pgphi schema and applies any SQL file not yet applied,
// each in its own transaction. It returns the resulting schema version.
func Ensure(ctx context.Context, c Conn) (int, error) {
	names, err := fs.Glob(files, "sql/*.sql")
	if err != nil {
		return 0, err
	}
	sort.Strings(names)
	version := 0
	for _, name := range names {
		v, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, "sql/"), "_", 2)[0])
		if err != nil {
			return 0, fmt.Errorf("state: bad migration file name %s", name)
		}
		body, err := files.ReadFile(name)
		if err != nil {
			return 0, err
		}
		if err := applyOne(ctx, c, v, string(body)); err != nil {
			return 0, fmt.Errorf("state: applying %s: %w", name, err)
		}
		version = v
	}
	return version, nil
}

func applyOne(ctx context.Context, c Conn, version int, body string) error {
	tx, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", advisoryKey); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS pgphi;
		CREATE TABLE IF NOT EXISTS pgphi.schema_version (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	var done bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pgphi.schema_version WHERE version = $1)", version).Scan(&done); err != nil {
		return err
	}
	if done {
		return tx.Commit(ctx)
	}
	if _, err := tx.Exec(ctx, body); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO pgphi.schema_version (version) VALUES ($1)", version); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Exists reports whether the pgphi schema has been created in the database.
func Exists(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, "SELECT to_regclass('pgphi.schema_version') IS NOT NULL").Scan(&ok)
	return ok, err
}
