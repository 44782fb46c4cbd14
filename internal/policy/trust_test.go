package policy

import (
	"strings"
	"testing"

	"github.com/pgphi/pgphi/internal/pgtest"
)

// Facts that gate or evidence decisions (verifications, checks, flags) are
// written only through pgphi's definer functions, which record the real
// caller: no pgphi role, application role or outsider can write them
// directly, pass another role's name, or finish another role's verification.
func TestFactsAreWrittenOnlyThroughPgphi(t *testing.T) {
	ctx := testContext(t)
	dbURL, pool := setup(t)
	a := pgtest.NewActors(t, dbURL)
	if _, err := InitRoles(ctx, pool, DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	direct := []string{
		"INSERT INTO pgphi.verifications (plan_id, started_at, ok, rows_checked, values_checked, mismatches, pending, write_counter, snapshot_xmin, recorded_by) VALUES ('p', now(), true, 9, 9, 0, 0, 0, 999999999, 'x')",
		"UPDATE pgphi.verifications SET ok = true",
		"INSERT INTO pgphi.checks (plan_id, ok, items) VALUES ('p', true, '{}')",
		"UPDATE pgphi.flags SET enabled = false WHERE name = 'require_encryption'",
		"DELETE FROM pgphi.verifications",
	}
	for _, role := range []string{a.HealthcareAdmin, a.AuditOfficer, a.AppOwner, a.AppWriter, a.Outsider} {
		c := a.Connect(t, role)
		for _, sql := range direct {
			if _, err := c.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("%s: %s: %v (want permission denied)", role, sql, err)
			}
		}
	}
	for _, role := range []string{a.AuditOfficer, a.AppOwner, a.AppWriter, a.Outsider, a.HealthcareAdmin} {
		c := a.Connect(t, role)
		if _, err := c.Exec(ctx, "SELECT pgphi.flag_set('require_encryption', false)"); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s switched a flag: %v", role, err)
		}
	}
	for _, role := range []string{a.AuditOfficer, a.AppOwner, a.Outsider} {
		c := a.Connect(t, role)
		if _, err := c.Exec(ctx, "SELECT pgphi.verification_begin('p')"); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s began a verification: %v", role, err)
		}
	}

	// The dba begins a verification; a healthcare_admin cannot finish it.
	dba := a.Connect(t, a.DBA)
	var id int64
	if err := dba.QueryRow(ctx, "SELECT pgphi.verification_begin('p')").Scan(&id); err != nil {
		t.Fatal(err)
	}
	ha := a.Connect(t, a.HealthcareAdmin)
	if _, err := ha.Exec(ctx, "SELECT pgphi.verification_finish($1, true, 1, 1, 0, 0)", id); err == nil {
		t.Fatal("a healthcare_admin finished the dba's verification")
	}
	// Its own is recorded under its own login, whatever it claims.
	var own int64
	if err := ha.QueryRow(ctx, "SELECT pgphi.verification_begin('p')").Scan(&own); err != nil {
		t.Fatal(err)
	}
	if _, err := ha.Exec(ctx, "SELECT pgphi.verification_finish($1, false, 1, 1, 1, 0)", own); err != nil {
		t.Fatal(err)
	}
	if _, err := ha.Exec(ctx, "SELECT pgphi.verification_finish($1, true, 1, 1, 0, 0)", own); err == nil {
		t.Fatal("a finished verification was finished again")
	}
	var by string
	if err := pool.QueryRow(ctx, "SELECT recorded_by FROM pgphi.verifications WHERE id = $1", own).Scan(&by); err != nil || by != a.HealthcareAdmin {
		t.Fatalf("recorded_by = %q (%v), want %s", by, err, a.HealthcareAdmin)
	}
	// SET ROLE to the group: the record names the role in use.
	if _, err := ha.Exec(ctx, "SET ROLE "+pgtest.GroupHealthcareAdmin); err != nil {
		t.Fatal(err)
	}
	if err := ha.QueryRow(ctx, "SELECT pgphi.verification_begin('p')").Scan(&own); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, "SELECT recorded_by FROM pgphi.verifications WHERE id = $1", own).Scan(&by); err != nil || by != pgtest.GroupHealthcareAdmin {
		t.Fatalf("recorded_by under SET ROLE = %q (%v)", by, err)
	}
	// The dba sets a flag; the record names the dba's login, not a string it chose.
	if _, err := dba.Exec(ctx, "SELECT pgphi.flag_set('use_encrypted_search', true)"); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, "SELECT updated_by FROM pgphi.flags WHERE name = 'use_encrypted_search'").Scan(&by); err != nil || by != a.DBA {
		t.Fatalf("updated_by = %q (%v), want %s", by, err, a.DBA)
	}
	// Audit tables: append-only for the dba too.
	for _, sql := range []string{"DELETE FROM pgphi.audit_log", "TRUNCATE pgphi.audit_log", "UPDATE pgphi.audit_checkpoints SET hash = ''"} {
		if _, err := dba.Exec(ctx, sql); err == nil {
			t.Errorf("dba: %s succeeded", sql)
		}
	}
}
