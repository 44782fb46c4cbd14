package state_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/state"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func ensure(ctx context.Context, t *testing.T, conn *pgx.Conn) error {
	t.Helper()
	_, err := state.Ensure(ctx, conn)
	return err
}

func exec(ctx context.Context, t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// A schema pgphi that someone else created before pgphi ran is refused,
// naming its owner; pgphi neither adopts it nor calls anything in it. The
// review's attacker replaced a function the trigger called and dropped the
// audit table.
func TestSchemaCreatedByAnotherRoleIsRefused(t *testing.T) {
	ctx := ctxFor(t)
	db := pgtest.NewDatabase(t)
	a := pgtest.NewActors(t, db)
	for _, attacker := range []string{a.AppOwner, a.Outsider} {
		t.Run(attacker[:strings.LastIndexByte(attacker, '_')], func(t *testing.T) {
			su := pgtest.Connect(t, db)
			exec(ctx, t, su, "DROP SCHEMA IF EXISTS pgphi CASCADE")
			exec(ctx, t, su, "GRANT CREATE ON DATABASE "+pgx.Identifier{dbName(ctx, t, su)}.Sanitize()+" TO "+pgx.Identifier{attacker}.Sanitize())
			evil := a.Connect(t, attacker)
			exec(ctx, t, evil, `CREATE SCHEMA pgphi;
				CREATE FUNCTION pgphi.flag(text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
				GRANT USAGE ON SCHEMA pgphi TO PUBLIC`)
			for _, victim := range []string{a.DBA, ""} {
				conn := su
				if victim != "" {
					conn = a.Connect(t, victim)
				}
				err := ensure(ctx, t, conn)
				if !errors.Is(err, state.ErrUntrusted) || !strings.Contains(err.Error(), attacker) {
					t.Fatalf("Ensure as %q with a schema pgphi owned by %s: %v (want ErrUntrusted naming the owner)", victim, attacker, err)
				}
			}
			// Nothing was created in it.
			var n int
			if err := su.QueryRow(ctx, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgphi'").Scan(&n); err != nil || n != 0 {
				t.Fatalf("pgphi created %d relations in a foreign schema (err %v)", n, err)
			}
		})
	}
}

func dbName(ctx context.Context, t *testing.T, c *pgx.Conn) string {
	var s string
	if err := c.QueryRow(ctx, "SELECT current_database()").Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// An object in pgphi's schema owned by anyone but the schema's owner is
// refused at every run: a function, a table.
func TestForeignObjectInTheSchemaIsRefused(t *testing.T) {
	ctx := ctxFor(t)
	db := pgtest.NewDatabase(t)
	a := pgtest.NewActors(t, db)
	su := pgtest.Connect(t, db)
	if err := ensure(ctx, t, su); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ create, owner, name string }{
		{"CREATE FUNCTION pgphi.count_write_helper() RETURNS int LANGUAGE sql AS 'SELECT 1'", "FUNCTION pgphi.count_write_helper()", "count_write_helper"},
		{"CREATE TABLE pgphi.audit_log_shadow (x int)", "TABLE pgphi.audit_log_shadow", "audit_log_shadow"},
	} {
		exec(ctx, t, su, c.create)
		exec(ctx, t, su, "ALTER "+c.owner+" OWNER TO "+pgx.Identifier{a.AppOwner}.Sanitize())
		err := ensure(ctx, t, su)
		if !errors.Is(err, state.ErrUntrusted) || !strings.Contains(err.Error(), c.name) || !strings.Contains(err.Error(), a.AppOwner) {
			t.Fatalf("foreign %s: %v", c.name, err)
		}
		exec(ctx, t, su, "DROP "+c.owner)
	}
	if err := ensure(ctx, t, su); err != nil {
		t.Fatalf("after removing the foreign objects: %v", err)
	}
}

// Every run takes from PUBLIC what a function created in the schema gets by
// default (EXECUTE): only pgphi.flag stays executable by every role.
func TestPublicIsLockedOutAtEveryRun(t *testing.T) {
	ctx := ctxFor(t)
	db := pgtest.NewDatabase(t)
	a := pgtest.NewActors(t, db)
	su := pgtest.Connect(t, db)
	if err := ensure(ctx, t, su); err != nil {
		t.Fatal(err)
	}
	// An earlier version (or a careless dba) left a function executable by PUBLIC.
	exec(ctx, t, su, "CREATE FUNCTION pgphi.leftover() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'")
	if err := ensure(ctx, t, su); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{a.Outsider, a.AppWriter, a.AppOwner} {
		c := a.Connect(t, role)
		if _, err := c.Exec(ctx, "SELECT pgphi.leftover()"); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("%s executed a pgphi function not on the PUBLIC list: %v", role, err)
		}
		var on bool
		if err := c.QueryRow(ctx, "SELECT pgphi.flag('require_encryption')").Scan(&on); err != nil {
			t.Fatalf("%s cannot read a flag: %v", role, err)
		}
		for _, sql := range []string{
			"UPDATE pgphi.flags SET enabled = true",
			"SELECT pgphi.flag_set('require_encryption', false)",
			"INSERT INTO pgphi.verifications (plan_id, started_at, ok, rows_checked, values_checked, mismatches, pending, write_counter) VALUES ('p', now(), true, 1, 1, 0, 0, 0)",
			"SELECT pgphi.verification_begin('p')",
			"SELECT nextval('pgphi.write_seq')",
		} {
			if _, err := c.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "permission denied") {
				t.Fatalf("%s: %s: %v", role, sql, err)
			}
		}
	}
}

// An installation upgraded from a version that granted writes on facts
// (INSERT on verifications, checks and the audit trail to
// healthcare_admin), or a hand that granted one since, loses them at the
// next run: facts are written only through pgphi's definer functions.
func TestEveryRunRevokesDirectWritesOnFacts(t *testing.T) {
	ctx := ctxFor(t)
	db := pgtest.NewDatabase(t)
	a := pgtest.NewActors(t, db)
	su := pgtest.Connect(t, db)
	if err := ensure(ctx, t, su); err != nil {
		t.Fatal(err)
	}
	grants := []struct{ table, priv, role string }{
		{"verifications", "INSERT", pgtest.GroupHealthcareAdmin},
		{"checks", "INSERT", pgtest.GroupHealthcareAdmin},
		{"audit_log", "INSERT", pgtest.GroupAuditOfficer},
		{"flags", "UPDATE", a.AppWriter},
		{"approvals", "DELETE", a.Outsider},
	}
	for _, g := range grants {
		exec(ctx, t, su, "GRANT "+g.priv+" ON pgphi."+g.table+" TO "+pgx.Identifier{g.role}.Sanitize())
	}
	if err := ensure(ctx, t, su); err != nil {
		t.Fatal(err)
	}
	for _, g := range grants {
		var has bool
		if err := su.QueryRow(ctx, "SELECT has_table_privilege($1, $2, $3)", g.role, "pgphi."+g.table, g.priv).Scan(&has); err != nil || has {
			t.Errorf("%s keeps %s on pgphi.%s after a run (err %v)", g.role, g.priv, g.table, err)
		}
	}
	// Reading stays as granted.
	exec(ctx, t, su, "GRANT SELECT ON pgphi.verifications TO "+pgtest.GroupHealthcareAdmin)
	if err := ensure(ctx, t, su); err != nil {
		t.Fatal(err)
	}
	var has bool
	if err := su.QueryRow(ctx, "SELECT has_table_privilege($1, 'pgphi.verifications', 'SELECT')", pgtest.GroupHealthcareAdmin).Scan(&has); err != nil || !has {
		t.Fatalf("SELECT was revoked too (err %v)", err)
	}
}

// The per-table trigger function of earlier versions was SECURITY DEFINER:
// the next run makes it run as the writer, before apply replaces its body.
func TestEveryRunTurnsOldDefinerTriggerFunctionsIntoInvokers(t *testing.T) {
	ctx := ctxFor(t)
	db := pgtest.NewDatabase(t)
	su := pgtest.Connect(t, db)
	if err := ensure(ctx, t, su); err != nil {
		t.Fatal(err)
	}
	exec(ctx, t, su, `CREATE FUNCTION pgphi.mark_public_patient_0a1b2c3d() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
		SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN NEW; END $$`)
	if err := ensure(ctx, t, su); err != nil {
		t.Fatal(err)
	}
	var definer, public bool
	if err := su.QueryRow(ctx, `SELECT prosecdef, has_function_privilege('public', oid, 'EXECUTE') FROM pg_proc
		WHERE proname = 'mark_public_patient_0a1b2c3d'`).Scan(&definer, &public); err != nil || definer || public {
		t.Fatalf("old trigger function after a run: definer %v, executable by PUBLIC %v (err %v)", definer, public, err)
	}
}
