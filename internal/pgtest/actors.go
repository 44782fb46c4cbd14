package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The group roles `pgphi roles init` creates under their default names.
// Attack tests use these names, as a real installation would.
const (
	GroupDBA             = "pgphi_dba"
	GroupHealthcareAdmin = "pgphi_healthcare_admin"
	GroupAuditOfficer    = "pgphi_audit_officer"
)

// Actors are the separate login roles of an attack test, none of them a
// superuser: a member of each pgphi group, the application's table owner,
// the application's writer and a role unrelated to both. The names are
// private to the test (roles are cluster-wide); the pgphi groups are the
// real ones, shared by every test of the cluster.
type Actors struct {
	DBA, HealthcareAdmin, AuditOfficer string // members of the pgphi groups
	AppOwner                           string // owns the application's tables
	AppWriter                          string // INSERT/UPDATE/SELECT on them, nothing else
	Outsider                           string // a login role with no grant at all

	db string // the test database's URL (superuser)
}

// NewActors creates the pgphi group roles if missing (NOLOGIN, default names)
// and six login roles for this test: members of each group, an application
// owner (with CREATE on schema public and on the database), an application
// writer and an outsider, all with CONNECT on the database of dbURL. Grants
// on pgphi's schema are left to `roles init` (policy.InitRoles), which the
// test runs itself. The login roles are dropped at cleanup.
func NewActors(t testing.TB, dbURL string) *Actors {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("pgtest: actors: %v", err)
	}
	defer conn.Close(ctx)
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	sfx := "_" + hex.EncodeToString(rnd[:])
	a := &Actors{
		DBA: "dba" + sfx, HealthcareAdmin: "ha" + sfx, AuditOfficer: "ao" + sfx,
		AppOwner: "app_owner" + sfx, AppWriter: "app_writer" + sfx, Outsider: "outsider" + sfx,
		db: dbURL,
	}
	var dbName string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		t.Fatalf("pgtest: actors: %v", err)
	}
	q := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	stmts := []string{
		// Group roles are shared by every test of the cluster: create them
		// once, serialized across databases by a session advisory lock in
		// this database's connection (CREATE ROLE is cluster-wide).
		"SELECT pg_advisory_lock(7067707400)",
		`DO $$ BEGIN
			IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgphi_dba') THEN CREATE ROLE pgphi_dba NOLOGIN; END IF;
			IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgphi_healthcare_admin') THEN CREATE ROLE pgphi_healthcare_admin NOLOGIN; END IF;
			IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgphi_audit_officer') THEN CREATE ROLE pgphi_audit_officer NOLOGIN; END IF;
		END $$`,
		"SELECT pg_advisory_unlock(7067707400)",
	}
	for _, r := range []string{a.DBA, a.HealthcareAdmin, a.AuditOfficer, a.AppOwner, a.AppWriter, a.Outsider} {
		stmts = append(stmts, "CREATE ROLE "+q(r)+" LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB",
			"GRANT CONNECT, TEMPORARY ON DATABASE "+q(dbName)+" TO "+q(r))
	}
	stmts = append(stmts,
		"GRANT "+GroupDBA+" TO "+q(a.DBA),
		"GRANT "+GroupHealthcareAdmin+" TO "+q(a.HealthcareAdmin),
		"GRANT "+GroupAuditOfficer+" TO "+q(a.AuditOfficer),
		"GRANT CREATE ON DATABASE "+q(dbName)+" TO "+q(a.AppOwner),
		"GRANT CREATE, USAGE ON SCHEMA public TO "+q(a.AppOwner),
		// The dba works on application tables as a member of their owner
		// (the arrangement README.md describes).
		"GRANT "+q(a.AppOwner)+" TO "+GroupDBA,
	)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("pgtest: actors: %s: %v", s, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		adm, err := pgx.Connect(ctx, admin(t))
		if err != nil {
			return
		}
		defer adm.Close(ctx)
		// The database is dropped by NewDatabase's cleanup (registered
		// earlier, so it runs later): drop what the roles own there first.
		c2, err := pgx.Connect(ctx, dbURL)
		if err == nil {
			for _, r := range []string{a.DBA, a.HealthcareAdmin, a.AuditOfficer, a.AppOwner, a.AppWriter, a.Outsider} {
				_, _ = c2.Exec(ctx, "DROP OWNED BY "+q(r)+" CASCADE")
			}
			c2.Close(ctx)
		}
		for _, r := range []string{a.DBA, a.HealthcareAdmin, a.AuditOfficer, a.AppOwner, a.AppWriter, a.Outsider} {
			_, _ = adm.Exec(ctx, "DROP ROLE IF EXISTS "+q(r))
		}
	})
	return a
}

// URL is the test database's URL with user role (the cluster trusts local
// connections, so no password).
func (a *Actors) URL(role string) string {
	u, _ := url.Parse(a.db)
	u.User = url.User(role)
	return u.String()
}

// Connect opens a connection as role, closed at cleanup.
func (a *Actors) Connect(t testing.TB, role string) *pgx.Conn {
	t.Helper()
	return Connect(t, a.URL(role))
}
