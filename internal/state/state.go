// Package state owns pgphi's own schema in the target database (`pgphi`): its
// versioned SQL files and the code that brings a database up to date. Any
// number of pgphi processes may call Ensure at once; an advisory lock
// serializes them.
package state

import (
	"context"
	"embed"
	"errors"
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

// ErrOutdated is returned to a role that cannot upgrade an outdated schema.
var ErrOutdated = errors.New("state: outdated pgphi schema")

// Option changes how Ensure judges the schema it finds.
type Option func(*options)

type options struct{ dbaGroup string }

// WithDBAGroup names pgphi's dba group role when it is not DefaultDBAGroup.
func WithDBAGroup(name string) Option {
	return func(o *options) {
		if name != "" {
			o.dbaGroup = name
		}
	}
}

// Ensure creates the pgphi schema and applies any SQL file not yet applied,
// each in its own transaction. It returns the resulting schema version.
//
// It refuses (ErrUntrusted) a schema pgphi owned by a role other than a
// superuser, the dba group or a member of it, and any object in the schema
// not owned by the schema's owner. A role that may act as the owner creates
// every object as the owner (SET LOCAL ROLE) and, at every run, takes from
// PUBLIC every privilege on the schema's objects except USAGE on the schema
// and EXECUTE on PublicFunctions: an upgraded installation loses the grants
// earlier versions made. A new schema is created for the dba group when the
// connected role is a non-superuser member of it.
func Ensure(ctx context.Context, c Conn, opts ...Option) (int, error) {
	o := options{dbaGroup: DefaultDBAGroup}
	for _, f := range opts {
		f(&o)
	}
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
		if err := applyOne(ctx, c, v, string(body), o); err != nil {
			if errors.Is(err, ErrUntrusted) {
				return 0, err
			}
			return 0, fmt.Errorf("state: applying %s: %w", name, err)
		}
		version = v
	}
	if err := finish(ctx, c); err != nil {
		return 0, err
	}
	return version, nil
}

// finish checks who owns what in the schema and, where the connected role
// may act as its owner, locks PUBLIC out.
func finish(ctx context.Context, c Conn) error {
	tx, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT pg_catalog.pg_advisory_xact_lock($1)", advisoryKey); err != nil {
		return err
	}
	if err := CheckOwnership(ctx, tx); err != nil {
		return err
	}
	_, canAct, err := Owner(ctx, tx)
	if err != nil {
		return err
	}
	if canAct {
		if err := actAsOwner(ctx, tx); err != nil {
			return err
		}
		if err := lockDown(ctx, tx); err != nil {
			return fmt.Errorf("state: %w", err)
		}
	}
	return tx.Commit(ctx)
}

// actAsOwner makes the rest of the transaction run as the schema's owner
// when the connected role is a member of it, so objects it creates belong
// to the owner.
func actAsOwner(ctx context.Context, tx pgx.Tx) error {
	owner, canAct, err := Owner(ctx, tx)
	if err != nil || !canAct {
		return err
	}
	var self bool
	if err := tx.QueryRow(ctx, "SELECT current_user = $1", owner).Scan(&self); err != nil || self {
		return err
	}
	_, err = tx.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{owner}.Sanitize())
	return err
}

func applyOne(ctx context.Context, c Conn, version int, body string, o options) error {
	tx, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT pg_catalog.pg_advisory_xact_lock($1)", advisoryKey); err != nil {
		return err
	}
	if err := checkSchemaOwner(ctx, tx, o.dbaGroup); err != nil {
		return err
	}
	var exists, member, super bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgphi'),
		EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1 AND pg_catalog.pg_has_role(current_user, oid, 'MEMBER')),
		(SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)`, o.dbaGroup).Scan(&exists, &member, &super); err != nil {
		return err
	}
	if !exists {
		create := "CREATE SCHEMA pgphi"
		if member && !super {
			create += " AUTHORIZATION " + pgx.Identifier{o.dbaGroup}.Sanitize()
		}
		if _, err := tx.Exec(ctx, create); err != nil {
			return err
		}
	}
	if _, canAct, err := Owner(ctx, tx); err != nil {
		return err
	} else if !canAct {
		// Roles that cannot act as the owner (healthcare_admin,
		// audit_officer) work with the state a dba set up.
		var done bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pgphi.schema_version WHERE version = $1)", version).Scan(&done); err != nil {
			return err
		}
		if !done {
			return fmt.Errorf("%w: schema pgphi is older than this pgphi (version %d missing): a member of %s upgrades it by running pgphi", ErrOutdated, version, o.dbaGroup)
		}
		return tx.Commit(ctx)
	}
	if err := actAsOwner(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS pgphi.schema_version (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
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
