package migrate

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/jackc/pgx/v5"
)

// ErrForeignHistory wraps refusals to adopt another tool's history as it is
// (a dirty golang-migrate version, a failed Flyway row, a version that does
// not agree with the one asked for).
var ErrForeignHistory = errors.New("cannot adopt the existing migration history")

// Foreign is the history another tool left in the database.
type Foreign struct {
	Tool    string // golang-migrate or flyway
	Version int64
}

// ForeignHistory reads golang-migrate's schema_migrations and Flyway's
// flyway_schema_history, where the search path finds them. A dirty
// golang-migrate version or a failed Flyway migration is refused with
// what to do instead: pgphi does not guess which half of a failed
// migration ran.
func (r *Runner) ForeignHistory(ctx context.Context) ([]Foreign, error) {
	conn := r.lock.conn
	var out []Foreign
	var gm, fw bool
	if err := conn.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass('schema_migrations') AND attname = 'dirty'),
		pg_catalog.to_regclass('flyway_schema_history') IS NOT NULL`).Scan(&gm, &fw); err != nil {
		return nil, err
	}
	if gm {
		var v *int64
		var dirty bool
		err := conn.QueryRow(ctx, "SELECT version, dirty FROM schema_migrations ORDER BY version DESC LIMIT 1").Scan(&v, &dirty)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("reading golang-migrate's schema_migrations: %w", err)
		}
		if err == nil && v != nil {
			if dirty {
				return nil, fmt.Errorf("%w: golang-migrate's schema_migrations says version %d is dirty (it failed halfway): bring the schema to what %d leaves by hand, clear the dirty flag with golang-migrate, then baseline", ErrForeignHistory, *v, *v)
			}
			out = append(out, Foreign{Tool: "golang-migrate", Version: *v})
		}
	}
	if fw {
		var failed int
		var max *string
		if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE NOT success),
			(SELECT version FROM flyway_schema_history WHERE success AND version IS NOT NULL ORDER BY installed_rank DESC LIMIT 1)
			FROM flyway_schema_history`).Scan(&failed, &max); err != nil {
			return nil, fmt.Errorf("reading Flyway's flyway_schema_history: %w", err)
		}
		if failed > 0 {
			return nil, fmt.Errorf("%w: flyway_schema_history records %d failed migrations: repair them with Flyway first, then baseline", ErrForeignHistory, failed)
		}
		if max != nil {
			n, ok := new(big.Int).SetString(*max, 10)
			if !ok || !n.IsInt64() {
				return nil, fmt.Errorf("%w: Flyway's latest version %s is not a whole number; pgphi's versions are the numbers of NNN_name.up.sql", ErrForeignHistory, *max)
			}
			out = append(out, Foreign{Tool: "flyway", Version: n.Int64()})
		}
	}
	return out, nil
}

// Baseline adopts a database whose migrations up to version n ran
// elsewhere: every migration file up to n with no history yet is recorded
// as baseline, with its current hash. A golang-migrate or Flyway history in
// the database must agree with n; its tool is recorded as the source.
func (r *Runner) Baseline(ctx context.Context, n int64) ([]string, error) {
	foreign, err := r.ForeignHistory(ctx)
	if err != nil {
		return nil, err
	}
	source := "baseline"
	for _, f := range foreign {
		if f.Version != n {
			return nil, fmt.Errorf("%w: baseline %d, but %s's history ends at version %d", ErrForeignHistory, n, f.Tool, f.Version)
		}
		source = f.Tool
	}
	if len(foreign) == 0 && r.dir.Find(n) == nil {
		return nil, fmt.Errorf("%w: no migration file has version %d", ErrDir, n)
	}
	hv := byVersion(r.hist)
	var done []string
	for _, m := range r.dir.Migrations {
		if m.Version > n {
			break
		}
		if rec := hv[m.Version]; rec != nil && rec.State != "reverted" {
			if rec.Applied() {
				continue
			}
			return done, fmt.Errorf("%w: %s has a %s run in pgphi's history: finish that run first", ErrForeignHistory, m.Name, rec.State)
		}
		if _, err := r.lock.conn.Exec(ctx, "SELECT pgphi.migration_baseline($1, $2, $3, $4, $5)", m.Version, m.Name, m.UpSHA, source, r.opt.Actor); err != nil {
			return done, err
		}
		done = append(done, m.Name)
	}
	return done, r.reload(ctx)
}
