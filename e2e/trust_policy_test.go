package e2e

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/policy"
)

// The security policy, approvals and the access check, attacked through the binary
// with separate login roles (pgtest.NewActors): the security policy is
// pinned in the database and the YAML only proposes it; approvals bind
// plan, command, environment, database and expiry and are written only
// through pgphi; every command, config file or not, goes through the role
// check and the audit trail.

// tpSigners writes the allowed signers file: alice (dba) logs in as the
// dba member, bob (healthcare_admin) as the healthcare_admin member, carol
// (healthcare_admin) never logs in.
func tpSigners(t *testing.T, f *fixture, a *pgtest.Actors) map[string]string {
	t.Helper()
	keys := map[string]string{}
	var b strings.Builder
	for _, s := range []struct{ name, role, db string }{
		{"alice", "dba", a.DBA}, {"bob", "healthcare_admin", a.HealthcareAdmin}, {"carol", "healthcare_admin", "-"},
	} {
		path, pub := complKey(t, f.dir, s.name)
		keys[s.name] = path
		b.WriteString(s.name + " " + s.role + " " + s.db + " " + authorizedKey(pub) + "\n")
	}
	writeFile(t, filepath.Join(f.dir, "allowed_signers"), b.String())
	return keys
}

// tpFixture is a database with the compliance tests' patient table owned by
// the application owner, the actors, roles init and keys init run by the
// superuser with header's config (which pins it).
func tpFixture(t *testing.T, header string) (*fixture, *pgtest.Actors, map[string]string) {
	t.Helper()
	f := newFixture(t, "")
	a := pgtest.NewActors(t, f.url)
	keys := tpSigners(t, f, a)
	f.writeConfig(complYAML(header, ""))
	complCreatePatient(f, 40, 0)
	f.exec(`ALTER TABLE patient OWNER TO ` + a.AppOwner)
	complExpect(t, f.run("roles", "init"), 0, "pinned the security policy")
	complExpect(t, f.run("keys", "init"), 0)
	return f, a, keys
}

func tpAs(f *fixture, a *pgtest.Actors, role string, args ...string) result {
	f.t.Helper()
	return complRun(f, a.URL(role), args...)
}

// tpRecords are the audit records of the fixture's table.
func tpRecords(t *testing.T, f *fixture) []audit.Record {
	t.Helper()
	return complTableRecords(t, f)
}

func tpHasRefusal(t *testing.T, f *fixture, command, dbRole string) bool {
	t.Helper()
	for _, r := range tpRecords(t, f) {
		if r.Event == audit.EventRefused && r.Command == command && r.Actor.DBRole == dbRole {
			return true
		}
	}
	return false
}

var pinsIDRe = regexp.MustCompile(`the config \(.*\) proposes (pins-[0-9a-f]{24})`)

// `environment: prod` ran apply with no approvals (TLS treated
// it as production, approvals did not). Unknown environments are now
// configuration errors, before anything connects.
func TestTrustUnknownEnvironment(t *testing.T) {
	t.Parallel()
	f := newFixture(t, complYAML("environment: prod\n", ""))
	complCreatePatient(f, 10, 0)
	complExpect(t, f.run("apply"), 2, `pgphi.yaml:2: unknown environment "prod" (did you mean "production"?)`, "fix: use one of development, test, staging, production")
	if n := complEncryptedColumns(t, f); n != 0 {
		t.Fatalf("apply with environment prod added %d ciphertext columns", n)
	}
	// Variant: a case variant of production.
	f.writeConfig(complYAML("environment: PRODUCTION\n", ""))
	complExpect(t, f.run("flags"), 2, `unknown environment "PRODUCTION" (did you mean "production"?)`)
}

// after the first run pins the policy, a YAML that changes the
// approval policy, the signers, the environment, the role names or
// allow_superuser is refused (exit 4, audited), naming the pin; the change
// goes through `pins set --from-config`, approved under the current pins.
func TestTrustPinsRefuseYAMLChanges(t *testing.T) {
	base := "environment: staging\napprovals:\n  signers: allowed_signers\n  require:\n    staging: { dba: 1, healthcare_admin: 1 }\n"
	f, a, keys := tpFixture(t, base)
	complExpect(t, tpAs(f, a, a.DBA, "plan"), 0)
	complExpect(t, tpAs(f, a, a.HealthcareAdmin, "pins", "show"), 0, "environment: staging", "signer alice: dba, database role "+a.DBA)

	cases := []struct{ name, yaml, says string }{
		{"approvals", "environment: staging\napprovals:\n  signers: allowed_signers\n  require:\n    staging: { dba: 1 }\n", "approval policy (approvals.require)"},
		{"no approvals", "environment: staging\napprovals:\n  signers: allowed_signers\n  require: {}\n", "approval policy"},
		{"signers", "environment: staging\napprovals:\n  signers: fewer_signers\n  require:\n    staging: { dba: 1, healthcare_admin: 1 }\n", "signers (approvals.signers): the configuration removes bob"},
		{"environment", "environment: development\napprovals:\n  signers: allowed_signers\n  require:\n    staging: { dba: 1, healthcare_admin: 1 }\n", "environment: pinned staging, the configuration says development"},
		{"role names", base + "access:\n  roles: { healthcare_admin: " + a.Outsider + " }\n", "role names (access.roles.healthcare_admin): pinned pgphi_healthcare_admin"},
		{"allow_superuser", base + "access: { allow_superuser: false }\n", "access.allow_superuser: pinned true, the configuration says false"},
		{"audit key", base + "audit:\n  public_key: " + authorizedKey(mustPub(t, keys["carol"])) + "\n", "audit.public_key: pinned none"},
	}
	lines := strings.Split(strings.TrimSpace(readFile(t, filepath.Join(f.dir, "allowed_signers"))), "\n")
	writeFile(t, filepath.Join(f.dir, "fewer_signers"), lines[0]+"\n"+lines[2]+"\n")
	for _, c := range cases {
		f.writeConfig(complYAML(c.yaml, ""))
		for _, role := range []string{a.DBA, a.HealthcareAdmin} {
			r := tpAs(f, a, role, "status")
			complExpect(t, r, 4, "differs from the pinned security policy", c.says, "pgphi pins set --from-config")
			complAssertRefused(t, f, "status", "pins")
		}
		// The superuser too (it passes the role check only as pinned).
		complExpect(t, f.run("apply"), 4, c.says)
		if n := complEncryptedColumns(t, f); n != 0 {
			t.Fatalf("%s: apply under a changed YAML added %d ciphertext columns", c.name, n)
		}
	}
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.pins`); n != 1 {
		t.Fatalf("%d pin versions after refused runs, want 1", n)
	}

	// The change, done properly: pins show names the proposed id; pins set
	// needs approvals of it for command pins under the current pins.
	f.writeConfig(complYAML(cases[0].yaml, ""))
	show := tpAs(f, a, a.AuditOfficer, "pins", "show")
	complExpect(t, show, 0, "approval policy")
	m := pinsIDRe.FindStringSubmatch(show.stdout)
	if m == nil {
		t.Fatalf("pins show does not name the proposed pins id:\n%s", show)
	}
	id := m[1]
	complExpect(t, tpAs(f, a, a.HealthcareAdmin, "pins", "set", "--from-config"), 4, "access denied")
	complExpect(t, tpAs(f, a, a.DBA, "pins", "set", "--from-config"), 4, "approval required", "pins of plan id "+id, "needs 1 approval by dba, has 0")
	complAssertRefused(t, f, "pins set", "approval")
	complExpect(t, tpAs(f, a, a.DBA, "approve", id, "--command", "pins", "--key", keys["alice"]), 0, "approved "+id)
	// alice alone: the dba member executing is alice, the only approver.
	complExpect(t, tpAs(f, a, a.DBA, "pins", "set", "--from-config"), 4, "needs 1 approval by healthcare_admin")
	complExpect(t, tpAs(f, a, a.HealthcareAdmin, "approve", id, "--command", "pins", "--key", keys["bob"]), 0)
	complExpect(t, tpAs(f, a, a.DBA, "pins", "set", "--from-config"), 0, "pinned "+id)
	complExpect(t, tpAs(f, a, a.DBA, "plan"), 0)
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.pins`); n != 2 {
		t.Fatalf("%d pin versions after pins set, want 2", n)
	}
}

// Findings 5 and 14: approvals bind command, database and expiry; the
// executor is the connected database role; a healthcare_admin member can
// neither write an approval row directly nor block a plan with a bad one.
func TestTrustApprovalsBind(t *testing.T) {
	header := "environment: production\naccess: { allow_superuser: true }\napprovals:\n  signers: allowed_signers\n  require:\n    production: { dba: 1, healthcare_admin: 1 }\n"
	f, a, keys := tpFixture(t, header)
	plan := complPlanID(f)

	// Approvals of another command count for nothing.
	complExpect(t, tpAs(f, a, a.DBA, "approve", plan, "--command", "cleanup", "--key", keys["alice"]), 0)
	complExpect(t, tpAs(f, a, a.HealthcareAdmin, "approve", plan, "--command", "cleanup", "--key", keys["bob"]), 0)
	complExpect(t, tpAs(f, a, a.DBA, "apply"), 4, "approval required", "apply of plan id "+plan, "it approves cleanup, not apply")
	complAssertRefused(t, f, "apply", "approval")

	// An expired approval counts for nothing.
	complExpect(t, tpAs(f, a, a.HealthcareAdmin, "approve", plan, "--command", "apply", "--expires", "2s", "--key", keys["bob"]), 0)
	complExpect(t, tpAs(f, a, a.DBA, "approve", plan, "--command", "apply", "--key", keys["alice"]), 0)
	time.Sleep(3 * time.Second)
	complExpect(t, tpAs(f, a, a.DBA, "apply"), 4, "needs 1 approval by healthcare_admin, has 0", "it expired at")
	complExpect(t, tpAs(f, a, a.HealthcareAdmin, "approve", plan, "--command", "apply", "--expires", "800h", "--key", keys["bob"]), 2, "at most 720h")

	// The healthcare_admin member tries to write approval rows itself.
	ha := a.Connect(t, a.HealthcareAdmin)
	ctx := context.Background()
	if _, err := ha.Exec(ctx, `INSERT INTO pgphi.approvals (plan_id, environment, signer, role, fingerprint, signature, signed_at, recorded_by)
		VALUES ($1, 'production', 'bob', 'healthcare_admin', 'SHA256:x', $2, now(), 'x')`, plan, make([]byte, 64)); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("healthcare_admin member INSERT into pgphi.approvals: %v, want permission denied", err)
	}
	// ... and records garbage through the function, in alice's and bob's
	// names: ignored, reported, and it blocks nothing.
	var sysid, db string
	if err := ha.QueryRow(ctx, `SELECT (SELECT system_identifier::text FROM pg_control_system()), current_database()`).Scan(&sysid, &db); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct{ name, role, key string }{{"alice", "dba", keys["alice"]}, {"bob", "healthcare_admin", keys["bob"]}} {
		if _, err := ha.Exec(ctx, `SELECT pgphi.approval_record($1, 'apply', 'production', $2, $3, now() + interval '1 day', $4, $5, $6, $7)`,
			plan, sysid, db, s.name, s.role, fingerprintOf(t, s.key), append(make([]byte, 63), 9)); err != nil {
			t.Fatalf("approval_record as healthcare_admin member: %v", err)
		}
	}
	complExpect(t, tpAs(f, a, a.HealthcareAdmin, "approve", plan, "--command", "apply", "--key", keys["bob"]), 0)
	kbRecordVerifiedBackup(f)
	r := tpAs(f, a, a.DBA, "apply")
	complExpect(t, r, 0, "applied "+plan, "bad signature")
	if rec := complLastRecord(t, f); rec.Command != "apply" || rec.Event != audit.EventSuccess || rec.Actor.DBRole != a.DBA {
		t.Errorf("last audit record: %s %s by %q, want apply success by %s", rec.Command, rec.Event, rec.Actor.DBRole, a.DBA)
	}
}

// the executor is the connected database role, matched to the
// approvers' pinned database roles (not `actor:` from the YAML); and an
// approval recorded for one database does not count in another.
func TestTrustSelfApprovalAndOtherDatabase(t *testing.T) {
	header := "environment: production\nactor: somebody-else\naccess: { allow_superuser: true }\napprovals:\n  signers: allowed_signers\n  require:\n    production: { dba: 1 }\n"
	f, a, keys := tpFixture(t, header)
	plan := complPlanID(f)
	complExpect(t, tpAs(f, a, a.DBA, "approve", plan, "--command", "apply", "--key", keys["alice"]), 0)
	complExpect(t, tpAs(f, a, a.DBA, "apply"), 4, "the executor (database role "+a.DBA+") cannot be the only approver")
	complAssertRefused(t, f, "apply", "approval")
	// Variant: the superuser executes; alice's approval is someone else's.
	kbRecordVerifiedBackup(f)
	complExpect(t, f.run("apply"), 0, "applied "+plan)

	// A second database with the same plan: alice's approval row copied
	// from the first (a replay from staging to production) is ignored.
	g := newFixture(t, "")
	g.dir = f.dir
	g.config = f.config
	complCreatePatient(g, 40, 0)
	complExpect(t, g.run("roles", "init"), 0)
	complExpect(t, g.run("keys", "init"), 0)
	if p2 := complPlanID(g); p2 != plan {
		t.Fatalf("the second database's plan is %s, want %s", p2, plan)
	}
	rows := complQueryLines(t, f.conn(), `SELECT format('(%L,%L,%L,%L,%L,%L,%L::timestamptz,%L,%L,%L,%L,%L::timestamptz,%L::bytea)',
		plan_id, environment, signer, role, fingerprint, recorded_by, signed_at, version, command, system_identifier, database_name, expires_at, signature) FROM pgphi.approvals`)
	g.exec(`INSERT INTO pgphi.approvals (plan_id, environment, signer, role, fingerprint, recorded_by, signed_at, version, command, system_identifier, database_name, expires_at, signature) VALUES ` +
		strings.Join(strings.Split(strings.TrimSpace(rows), "\n"), ","))
	complExpect(t, g.run("apply"), 4, "needs 1 approval by dba, has 0", "it is for another database")
}

// with no config file, `flags set` ran with no role check and no
// audit record; outsiders failed with exit 1 and left no record. Now every
// role goes through the check and the audit trail, config or not.
func TestTrustNoConfigGuard(t *testing.T) {
	f, a, _ := tpFixture(t, "environment: test\n")
	noConfig := func(role string, args ...string) result {
		t.Helper()
		all := append([]string{"--database-url", a.URL(role)}, args...)
		out, errOut, code := runPgphi(t, f.env, all...)
		return result{args: all, stdout: out, stderr: errOut, code: code}
	}
	// The outsider: refused first, and the refusal is audited.
	complExpect(t, noConfig(a.Outsider, "flags", "set", "require_encryption", "on"), 4, "access denied", a.Outsider)
	if !tpHasRefusal(t, f, "flags set", a.Outsider) {
		t.Errorf("no refusal record of flags set by %s", a.Outsider)
	}
	// Variants: other commands, the application's writer and owner.
	for _, c := range []struct {
		role string
		args []string
	}{
		{a.Outsider, []string{"flags"}}, {a.Outsider, []string{"keys", "list"}}, {a.AppWriter, []string{"flags"}}, {a.AppOwner, []string{"flags", "set", "require_encryption", "off"}},
	} {
		complExpect(t, noConfig(c.role, c.args...), 4, "access denied")
	}
	if !tpHasRefusal(t, f, "flags set", a.AppOwner) {
		t.Errorf("no refusal record of flags set by the application owner")
	}
	// The healthcare_admin member may read the flags but not set them.
	complExpect(t, noConfig(a.HealthcareAdmin, "flags"), 0, "require_encryption")
	complExpect(t, noConfig(a.HealthcareAdmin, "flags", "set", "require_encryption", "on"), 4, "access denied")
	if rec := complLastRecord(t, f); rec.Event != audit.EventRefused || rec.Command != "flags set" || rec.Actor.DBRole != a.HealthcareAdmin {
		t.Errorf("last audit record: %s %s by %q, want flags set refused by %s", rec.Command, rec.Event, rec.Actor.DBRole, a.HealthcareAdmin)
	}
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.flags WHERE name = 'require_encryption' AND enabled`); n != 0 {
		t.Fatal("require_encryption was switched on by a refused role")
	}
	// The dba member may, and it is audited too.
	complExpect(t, noConfig(a.DBA, "flags", "set", "use_encrypted_search", "on"), 0)
	if rec := complLastRecord(t, f); rec.Event != audit.EventSuccess || rec.Command != "flags set" || rec.Actor.DBRole != a.DBA {
		t.Errorf("last audit record: %s %s by %q, want flags set success by %s", rec.Command, rec.Event, rec.Actor.DBRole, a.DBA)
	}
}

func authorizedKey(pub ed25519.PublicKey) string { return policy.AuthorizedKey(pub) }

func mustPub(t *testing.T, keyPath string) ed25519.PublicKey {
	t.Helper()
	k, err := policy.LoadPrivateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	return k.Public().(ed25519.PublicKey)
}

func fingerprintOf(t *testing.T, keyPath string) string {
	return policy.Fingerprint(mustPub(t, keyPath))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
