package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/state"
)

func TestAllowed(t *testing.T) {
	all := []Role{DBA, HealthcareAdmin, AuditOfficer}
	cases := map[string][]Role{
		"init": all, "plan": all, "status": all, "flags": all, "check": {DBA, HealthcareAdmin},
		"keys": {DBA}, "keys rotate": {DBA}, "apply": {DBA}, "cleanup": {DBA}, "rollback": {DBA},
		"migrate up": {DBA}, "roles init": {DBA}, "flags set": {DBA}, "flags  set use_encrypted_search on": {DBA},
		"approve": {DBA, HealthcareAdmin}, "search": {DBA, HealthcareAdmin}, "verify": {DBA, HealthcareAdmin},
		"audit": {AuditOfficer, DBA}, "audit export": {AuditOfficer, DBA}, "report": {AuditOfficer, DBA},
		"serve": {HealthcareAdmin, DBA}, "serve token create": {DBA}, "serve decrypt": {DBA, HealthcareAdmin}, "serve search": {DBA, HealthcareAdmin},
		"": nil, "nonsense": nil, "setflags": nil,
	}
	for cmd, want := range cases {
		if got := Allowed(cmd); !slices.Equal(got, want) {
			t.Errorf("Allowed(%q) = %v, want %v", cmd, got, want)
		}
	}
	// The result is a copy.
	Allowed("apply")[0] = AuditOfficer
	if Allowed("apply")[0] != DBA {
		t.Fatal("Allowed returned the table itself")
	}
}

func TestRoleNames(t *testing.T) {
	if err := DefaultRoleNames().Validate(); err != nil {
		t.Fatal(err)
	}
	if g := (RoleNames{}).Group(AuditOfficer); g != "pgphi_audit_officer" {
		t.Fatalf("default group = %q", g)
	}
	if err := (RoleNames{DBA: "x", HealthcareAdmin: "x"}).Validate(); err == nil || !strings.Contains(err.Error(), "both map") {
		t.Fatalf("duplicate group: %v", err)
	}
	if err := (RoleNames{"root": "x"}).Validate(); err == nil || !strings.Contains(err.Error(), "unknown role") {
		t.Fatalf("unknown role: %v", err)
	}
	if _, err := ParseRole("admin"); err == nil {
		t.Fatal("ParseRole accepted admin")
	}
}

func hasPriv(t *testing.T, pool *pgxpool.Pool, fn, role, object, priv string) bool {
	t.Helper()
	var ok bool
	if err := pool.QueryRow(testContext(t), "SELECT "+fn+"($1, $2, $3)", role, object, priv).Scan(&ok); err != nil {
		t.Fatalf("%s(%s, %s, %s): %v", fn, role, object, priv, err)
	}
	return ok
}

func TestInitRolesIdempotentAndGrants(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	_, pool := setup(t)
	names := uniqueNames(t, pool)

	// A table pgphi's state may not have yet: its grants are skipped, and a
	// later run grants them.
	if _, err := pool.Exec(ctx, "ALTER TABLE pgphi.approvals RENAME TO approvals_later"); err != nil {
		t.Fatal(err)
	}
	out1, err := InitRoles(ctx, pool, names)
	if err != nil {
		t.Fatal(err)
	}
	text1 := strings.Join(out1, "\n")
	for _, r := range Roles() {
		if !strings.Contains(text1, "created group role "+names[r]+" (NOLOGIN)") {
			t.Errorf("first run does not say it created %s:\n%s", names[r], text1)
		}
	}
	if !strings.Contains(text1, "pgphi.approvals") || !strings.Contains(text1, "does not exist yet") {
		t.Errorf("first run does not report the missing table:\n%s", text1)
	}
	if hasPriv(t, pool, "has_table_privilege", names[HealthcareAdmin], "pgphi.approvals_later", "INSERT") {
		t.Fatal("granted on a table that was reported missing")
	}
	if _, err := pool.Exec(ctx, "ALTER TABLE pgphi.approvals_later RENAME TO approvals"); err != nil {
		t.Fatal(err)
	}
	// A protected application table recorded by apply.
	if _, err := pool.Exec(ctx, `CREATE TABLE public.patient (uid text PRIMARY KEY, first_name text);
		INSERT INTO pgphi.protected_columns (table_name, column_name, encrypted_column, original_type, class, plan_id)
		VALUES ('public.patient', 'first_name', 'first_name_encrypted', 'text', 'pii', 'p1')`); err != nil {
		t.Fatal(err)
	}

	out2, err := InitRoles(ctx, pool, names)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	text2 := strings.Join(out2, "\n")
	if strings.Contains(text2, "created") || strings.Contains(text2, "skipped") {
		t.Errorf("second run created or skipped something:\n%s", text2)
	}
	for _, r := range Roles() {
		if !strings.Contains(text2, "group role "+names[r]+" for "+string(r)+" exists") {
			t.Errorf("second run does not say %s exists:\n%s", names[r], text2)
		}
		var login bool
		if err := pool.QueryRow(ctx, "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", names[r]).Scan(&login); err != nil || login {
			t.Errorf("%s: login=%v err=%v, want a NOLOGIN role", names[r], login, err)
		}
	}
	if _, err := InitRoles(ctx, pool, names); err != nil {
		t.Fatalf("third run: %v", err)
	}

	dba, ha, ao := names[DBA], names[HealthcareAdmin], names[AuditOfficer]
	var db string
	if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		fn, role, object, priv string
		want                   bool
	}{
		{"has_schema_privilege", dba, "pgphi", "CREATE", true},
		{"has_database_privilege", dba, db, "CREATE", true},
		{"has_database_privilege", ha, db, "CONNECT", true},
		{"has_schema_privilege", ha, "pgphi", "USAGE", true},
		{"has_schema_privilege", ha, "pgphi", "CREATE", false},
		{"has_schema_privilege", ao, "pgphi", "USAGE", true},
		{"has_table_privilege", dba, "pgphi.plans", "INSERT", true},
		{"has_table_privilege", dba, "pgphi.data_keys", "UPDATE", true},
		{"has_table_privilege", dba, "pgphi.audit_log", "INSERT", true},
		{"has_table_privilege", dba, "pgphi.audit_log", "UPDATE", false},
		{"has_table_privilege", dba, "pgphi.audit_log", "DELETE", false},
		{"has_table_privilege", dba, "public.patient", "UPDATE", true},
		{"has_table_privilege", dba, "public.patient", "TRIGGER", true},
		{"has_sequence_privilege", dba, "pgphi.write_seq", "USAGE", true},
		{"has_table_privilege", ha, "pgphi.plans", "SELECT", true},
		{"has_table_privilege", ha, "pgphi.kek", "SELECT", true},
		{"has_table_privilege", ha, "pgphi.data_keys", "SELECT", true},
		{"has_table_privilege", ha, "pgphi.flags", "SELECT", true},
		{"has_table_privilege", ha, "pgphi.blind_indexes", "SELECT", true},
		{"has_table_privilege", ha, "pgphi.protected_columns", "SELECT", true},
		{"has_table_privilege", ha, "pgphi.approvals", "INSERT", false},
		{"has_table_privilege", ha, "pgphi.audit_log", "INSERT", false},
		{"has_table_privilege", ha, "pgphi.verifications", "INSERT", false},
		{"has_function_privilege", ha, "pgphi.verification_begin(text)", "EXECUTE", true},
		{"has_function_privilege", ao, "pgphi.verification_begin(text)", "EXECUTE", false},
		{"has_function_privilege", ha, "pgphi.flag_set(text,boolean)", "EXECUTE", false},
		{"has_function_privilege", dba, "pgphi.flag_set(text,boolean)", "EXECUTE", true},
		{"has_function_privilege", "public", "pgphi.flag(text)", "EXECUTE", true},
		{"has_function_privilege", "public", "pgphi.count_write()", "EXECUTE", false},
		{"has_table_privilege", ha, "pgphi.checks", "INSERT", false},
		{"has_sequence_privilege", ha, "pgphi.checks_id_seq", "USAGE", false},
		{"has_table_privilege", ao, "pgphi.checks", "SELECT", true},
		{"has_table_privilege", ao, "pgphi.checks", "INSERT", false},
		{"has_sequence_privilege", ha, "pgphi.verifications_id_seq", "USAGE", false},
		{"has_table_privilege", ha, "public.patient", "SELECT", true},
		{"has_table_privilege", ha, "public.patient", "UPDATE", false},
		{"has_table_privilege", ha, "pgphi.plans", "UPDATE", false},
		{"has_table_privilege", ha, "pgphi.flags", "UPDATE", false},
		{"has_table_privilege", ha, "pgphi.data_keys", "INSERT", false},
		{"has_table_privilege", ao, "pgphi.audit_log", "SELECT", true},
		{"has_table_privilege", ao, "pgphi.audit_log", "INSERT", false},
		{"has_table_privilege", ao, "pgphi.audit_checkpoints", "INSERT", false},
		{"has_table_privilege", ao, "pgphi.audit_checkpoints", "SELECT", true},
		{"has_table_privilege", ao, "pgphi.approvals", "SELECT", true},
		{"has_table_privilege", ao, "pgphi.plans", "SELECT", true},
		{"has_table_privilege", ao, "pgphi.verifications", "SELECT", true},
		{"has_table_privilege", ao, "pgphi.approvals", "INSERT", false},
		{"has_table_privilege", ao, "pgphi.kek", "SELECT", false},
		{"has_table_privilege", ao, "pgphi.data_keys", "SELECT", false},
		{"has_table_privilege", ao, "public.patient", "SELECT", false},
		{"has_table_privilege", ao, "pgphi.flags", "UPDATE", false},
	}
	for _, c := range checks {
		if got := hasPriv(t, pool, c.fn, c.role, c.object, c.priv); got != c.want {
			t.Errorf("%s(%s, %s, %s) = %v, want %v", c.fn, c.role, c.object, c.priv, got, c.want)
		}
	}
}

func TestInitRolesNeedsSchema(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	_, pool := setup(t)
	names := uniqueNames(t, pool)
	if _, err := pool.Exec(ctx, "DROP SCHEMA pgphi CASCADE"); err != nil {
		t.Fatal(err)
	}
	if _, err := InitRoles(ctx, pool, names); err == nil || !strings.Contains(err.Error(), "schema pgphi does not exist") {
		t.Fatalf("err = %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", names[DBA]).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a failed InitRoles left roles behind (n=%d, err=%v)", n, err)
	}
}

func TestCheckAccess(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dbURL, pool := setup(t)
	dbaUser, haUser, aoUser, nobody, nested := loginName("dba_user"), loginName("ha_user"), loginName("ao_user"), loginName("nobody"), loginName("nested")
	names := uniqueNames(t, pool, dbaUser, haUser, aoUser, nobody, nested)
	if _, err := InitRoles(ctx, pool, names); err != nil {
		t.Fatal(err)
	}
	id := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	for _, s := range []string{
		"CREATE ROLE " + id(dbaUser) + " LOGIN IN ROLE " + id(names[DBA]),
		"CREATE ROLE " + id(haUser) + " LOGIN IN ROLE " + id(names[HealthcareAdmin]),
		"CREATE ROLE " + id(aoUser) + " LOGIN IN ROLE " + id(names[AuditOfficer]),
		"CREATE ROLE " + id(nobody) + " LOGIN",
		// Membership through another role counts.
		"CREATE ROLE " + id(nested) + " LOGIN IN ROLE " + id(dbaUser),
	} {
		if _, err := pool.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	type want struct {
		cmd  string
		role Role // "" = denied
	}
	cases := map[string][]want{
		dbaUser: {{"apply", DBA}, {"cleanup", DBA}, {"audit", DBA}, {"approve", DBA}, {"flags set", DBA}, {"status", DBA}, {"unknown", ""}},
		nested:  {{"apply", DBA}, {"roles init", DBA}},
		haUser:  {{"approve", HealthcareAdmin}, {"search", HealthcareAdmin}, {"verify", HealthcareAdmin}, {"status", HealthcareAdmin}, {"flags", HealthcareAdmin}, {"apply", ""}, {"flags set", ""}, {"audit", ""}, {"keys", ""}},
		aoUser:  {{"audit", AuditOfficer}, {"report", AuditOfficer}, {"plan", AuditOfficer}, {"apply", ""}, {"approve", ""}, {"search", ""}, {"rollback", ""}},
		nobody:  nil,
	}
	for cmd := range allowed {
		cases[nobody] = append(cases[nobody], want{cmd, ""})
	}
	for user, ws := range cases {
		p := poolAs(t, dbURL, user)
		for _, w := range ws {
			// allowSuperuser is irrelevant for ordinary roles.
			for _, su := range []bool{false, true} {
				got, err := CheckAccess(ctx, p, names, w.cmd, su)
				if w.role != "" {
					if err != nil || got != w.role {
						t.Errorf("%s %q: got %q, %v; want %s", user, w.cmd, got, err, w.role)
					}
					continue
				}
				if !errors.Is(err, ErrAccessDenied) || got != "" {
					t.Errorf("%s %q: got %q, %v; want access denied", user, w.cmd, got, err)
					continue
				}
				msg := err.Error()
				if !strings.Contains(msg, w.cmd) || !strings.Contains(msg, user) {
					t.Errorf("%s %q: denial does not name command and role: %s", user, w.cmd, msg)
				}
				for _, r := range Allowed(w.cmd) {
					if !strings.Contains(msg, string(r)) || !strings.Contains(msg, names[r]) {
						t.Errorf("%s %q: denial does not name allowed role %s: %s", user, w.cmd, r, msg)
					}
				}
			}
		}
	}
	// Exact wording of one denial.
	_, err := CheckAccess(ctx, poolAs(t, dbURL, aoUser), names, "apply", false)
	if want := `access denied: apply needs role dba (member of ` + names[DBA] + `); connected as database role ` + aoUser; err == nil || err.Error() != want {
		t.Errorf("denial = %v\nwant     %s", err, want)
	}

	// The superuser (the test harness's connection).
	if _, err := CheckAccess(ctx, pool, names, "apply", false); !errors.Is(err, ErrAccessDenied) {
		t.Errorf("superuser without allowSuperuser: %v", err)
	}
	if r, err := CheckAccess(ctx, pool, names, "apply", true); err != nil || r != DBA {
		t.Errorf("superuser with allowSuperuser: %q, %v", r, err)
	}
	if r, err := CheckAccess(ctx, pool, names, "audit", true); err != nil || r != AuditOfficer {
		t.Errorf("superuser audit: %q, %v", r, err)
	}
	if _, err := CheckAccess(ctx, pool, names, "nonsense", true); !errors.Is(err, ErrAccessDenied) {
		t.Errorf("superuser, unknown command: %v", err)
	}
}

// TestGrantsSuffice runs the package's own queries as members of each group:
// the grants of InitRoles are enough for approve (healthcare_admin), approval
// checks (dba) and reading approvals (audit_officer), and an audit officer
// cannot read wrapped keys.
func TestGrantsSuffice(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dbURL, pool := setup(t)
	dbaUser, haUser, aoUser := loginName("dba_user"), loginName("ha_user"), loginName("ao_user")
	names := uniqueNames(t, pool, dbaUser, haUser, aoUser)
	if _, err := InitRoles(ctx, pool, names); err != nil {
		t.Fatal(err)
	}
	id := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	for _, s := range []string{
		"CREATE ROLE " + id(dbaUser) + " LOGIN IN ROLE " + id(names[DBA]),
		"CREATE ROLE " + id(haUser) + " LOGIN IN ROLE " + id(names[HealthcareAdmin]),
		"CREATE ROLE " + id(aoUser) + " LOGIN IN ROLE " + id(names[AuditOfficer]),
	} {
		if _, err := pool.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	fx := newFixture(t)
	haPool, dbaPool, aoPool := poolAs(t, dbURL, haUser), poolAs(t, dbURL, dbaUser), poolAs(t, dbURL, aoUser)

	// A dba member can bring pgphi's (up to date) schema up to date.
	conn, err := dbaPool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = state.Ensure(ctx, conn, state.WithDBAGroup(names[DBA]))
	conn.Release()
	if err != nil {
		t.Fatalf("state.Ensure as dba member: %v", err)
	}

	t1 := target(t, ctx, haPool, "plan-1", "apply", "production")
	for _, k := range []*testKey{fx.alice, fx.bob} {
		if _, err := Record(ctx, haPool, fx.signers, t1, Sign(k.priv, t1), k.pub); err != nil {
			t.Fatalf("Record as healthcare_admin member: %v", err)
		}
	}
	// Recording again (idempotent path reads the stored row).
	if _, err := Record(ctx, haPool, fx.signers, t1, Sign(fx.bob.priv, t1), fx.bob.pub); err != nil {
		t.Fatalf("Record again as healthcare_admin member: %v", err)
	}
	if got, err := Check(ctx, dbaPool, fx.signers, prodPolicy, t1, "alice"); err != nil || len(got.Valid) != 2 {
		t.Fatalf("Check as dba member: %v, %v", got, err)
	}
	t2 := t1
	t2.PlanID = "plan-2"
	if _, err := Check(ctx, dbaPool, fx.signers, prodPolicy, t2, "alice"); !errors.Is(err, ErrApprovalRequired) {
		t.Fatalf("Check of another plan as dba member: %v", err)
	}
	if got, err := List(ctx, aoPool, "plan-1"); err != nil || len(got) != 2 {
		t.Fatalf("List as audit_officer member: %d, %v", len(got), err)
	}
	if _, err := aoPool.Exec(ctx, "SELECT * FROM pgphi.data_keys"); err == nil {
		t.Fatal("audit_officer member can read pgphi.data_keys")
	}
	if _, err := aoPool.Exec(ctx, "DELETE FROM pgphi.approvals"); err == nil {
		t.Fatal("audit_officer member can delete approvals")
	}
	if _, err := haPool.Exec(ctx, "UPDATE pgphi.approvals SET role = 'dba'"); err == nil {
		t.Fatal("healthcare_admin member can update approvals")
	}
}

func TestParseRoleNames(t *testing.T) {
	n, err := ParseRoleNames(map[string]string{"dba": "lab_dba"})
	if err != nil || n.Group(DBA) != "lab_dba" || n.Group(AuditOfficer) != "pgphi_audit_officer" {
		t.Fatalf("%v, %v", n, err)
	}
	for _, bad := range []map[string]string{{"admin": "x"}, {"dba": ""}, {"dba": "x", "audit_officer": "x"}} {
		if _, err := ParseRoleNames(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
