package policy

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/pgtest"
)

type approvalEnv struct {
	t    *testing.T
	ctx  context.Context
	pool *pgxpool.Pool
	f    *fixture
}

// target is plan planID for command in environment of the database of q,
// expiring in a day.
func target(t *testing.T, ctx context.Context, q Querier, planID, command, environment string) Target {
	t.Helper()
	sysid, db, err := DatabaseIdentity(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	return Target{PlanID: planID, Command: command, Environment: environment, SystemIdentifier: sysid, Database: db,
		Expires: time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)}
}

// approve signs with the key loaded from k's file, as `pgphi approve` does.
func (e *approvalEnv) approve(k *testKey, tg Target) (*Approval, error) {
	e.t.Helper()
	priv, err := LoadPrivateKey(k.path)
	if err != nil {
		e.t.Fatal(err)
	}
	return Record(e.ctx, e.pool, e.f.signers, tg, Sign(priv, tg), priv.Public().(ed25519.PublicKey))
}

func (e *approvalEnv) mustApprove(k *testKey, tg Target) *Approval {
	e.t.Helper()
	a, err := e.approve(k, tg)
	if err != nil {
		e.t.Fatalf("%s approving %+v: %v", k.name, tg, err)
	}
	return a
}

func wantErr(t *testing.T, err, sentinel error, wants ...string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want %v", err, sentinel)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q\ndoes not say %q", err, w)
		}
	}
}

func names(r *Result) string {
	if r == nil {
		return ""
	}
	var s []string
	for _, a := range r.Valid {
		s = append(s, a.Signer)
	}
	return strings.Join(s, ",")
}

// recordRaw calls pgphi.approval_record directly, as an attacker with
// EXECUTE on it would, with any fields and signature.
func recordRaw(ctx context.Context, q Querier, tg Target, signer string, role Role, fp string, sig []byte) error {
	var at time.Time
	return q.QueryRow(ctx, `SELECT pgphi.approval_record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		tg.PlanID, tg.Command, tg.Environment, tg.SystemIdentifier, tg.Database, tg.Expires, signer, string(role), fp, sig).Scan(&at)
}

func TestApprovals(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	_, pool := setup(t)
	f := newFixture(t)
	e := &approvalEnv{t, ctx, pool, f}
	const A = "plan-A"
	tA := target(t, ctx, pool, A, "apply", "production")
	check := func(signers []Signer, req Requirements, want Target, executor string) (*Result, error) {
		return Check(ctx, pool, signers, req, want, executor)
	}

	// Nothing recorded at all.
	_, err := check(f.signers, prodPolicy, tA, "alice")
	wantErr(t, err, ErrApprovalRequired,
		"approval required: apply of plan id plan-A in environment production: has no approvals; needs 1 approval by dba, has 0; needs 1 approval by healthcare_admin, has 0")
	// An environment absent from the policy requires nothing.
	dev := tA
	dev.Environment = "development"
	if got, err := check(f.signers, prodPolicy, dev, "alice"); err != nil || names(got) != "" {
		t.Fatalf("development: %v, %v", got, err)
	}
	if got, err := check(f.signers, Requirements{"production": {DBA: 0}}, tA, "alice"); err != nil || names(got) != "" {
		t.Fatalf("zero counts: %v, %v", got, err)
	}

	// alice (dba, PKCS#8 key, database role alice) approves.
	a := e.mustApprove(f.alice, tA)
	if a.Signer != "alice" || a.Role != DBA || a.Fingerprint != Fingerprint(f.alice.pub) || a.SignedAt.IsZero() ||
		a.PlanID != A || a.Environment != "production" || a.Command != "apply" || len(a.Signature) != ed25519.SignatureSize {
		t.Fatalf("recorded %+v", a)
	}

	// Role count not met, and the executor is the only approver.
	_, err = check(f.signers, prodPolicy, tA, "alice")
	wantErr(t, err, ErrApprovalRequired, "needs 1 approval by healthcare_admin, has 0", "the executor (database role alice) cannot be the only approver")
	if strings.Contains(err.Error(), "by dba") {
		t.Errorf("dba requirement reported although met: %v", err)
	}
	// Self-approval only, with a policy alice alone would satisfy: the
	// executor is the connected database role, matched to the approver's
	// pinned database role.
	dbaOnly := Requirements{"production": {DBA: 1}}
	_, err = check(f.signers, dbaOnly, tA, "alice")
	wantErr(t, err, ErrApprovalRequired, "the executor (database role alice) cannot be the only approver")
	if strings.Contains(err.Error(), "needs") {
		t.Errorf("counts reported although met: %v", err)
	}
	if got, err := check(f.signers, dbaOnly, tA, "ops"); err != nil || names(got) != "alice" {
		t.Fatalf("another executor: %v, %v", names(got), err)
	}
	_, err = check(f.signers, dbaOnly, tA, "")
	wantErr(t, err, ErrApprovalRequired, "the executor's database role is unknown")

	// Another plan id, command, environment: the approval does not count.
	tB := tA
	tB.PlanID = "plan-B"
	_, err = check(f.signers, prodPolicy, tB, "ops")
	wantErr(t, err, ErrApprovalRequired, "plan id plan-B in environment production: has no approvals (approvals exist for other plan ids); needs 1 approval by dba, has 0")
	for _, c := range []string{"cleanup", "rollback", "pins"} {
		other := tA
		other.Command = c
		_, err = check(f.signers, dbaOnly, other, "ops")
		wantErr(t, err, ErrApprovalRequired, "needs 1 approval by dba, has 0", "it approves apply, not "+c)
	}
	staging := tA
	staging.Environment = "staging"
	_, err = check(f.signers, Requirements{"staging": {DBA: 1}}, staging, "ops")
	wantErr(t, err, ErrApprovalRequired, "needs 1 approval by dba, has 0", "it is for environment production")

	// Refused recordings: nothing is stored.
	bobPriv, err := LoadPrivateKey(f.bob.path) // OpenSSH key
	if err != nil {
		t.Fatal(err)
	}
	record := func(sig []byte, pub ed25519.PublicKey, tg Target) error {
		_, err := Record(ctx, pool, f.signers, tg, sig, pub)
		return err
	}
	tampered := Sign(bobPriv, tA)
	tampered[10] ^= 1
	wantErr(t, record(tampered, f.bob.pub, tA), ErrApprovalRejected, "does not verify with the key of bob")
	wantErr(t, record(Sign(bobPriv, staging), f.bob.pub, tA), ErrApprovalRejected, "does not verify")
	wantErr(t, record(Sign(f.mallo.priv, tA), f.mallo.pub, tA), ErrApprovalRejected,
		"key "+Fingerprint(f.mallo.pub)+" is not a pinned signer's")
	// mallory signs and claims bob's key: the approver is identified by key.
	wantErr(t, record(Sign(f.mallo.priv, tA), f.bob.pub, tA), ErrApprovalRejected, "does not verify with the key of bob")
	wantErr(t, record(Sign(bobPriv, tA)[:40], f.bob.pub, tA), ErrApprovalRejected, "does not verify")
	bad := tA
	bad.PlanID = "x\ny"
	wantErr(t, record(Sign(bobPriv, bad), f.bob.pub, bad), ErrApprovalRejected, "invalid plan id")
	bad = tA
	bad.Command = "search"
	wantErr(t, record(Sign(bobPriv, bad), f.bob.pub, bad), ErrApprovalRejected, "command search cannot be approved")
	bad = tA
	bad.Database = "elsewhere"
	wantErr(t, record(Sign(bobPriv, bad), f.bob.pub, bad), ErrApprovalRejected, "the approval is for database elsewhere")
	bad = tA
	bad.SystemIdentifier = "1234"
	wantErr(t, record(Sign(bobPriv, bad), f.bob.pub, bad), ErrApprovalRejected, "of cluster 1234, not this one")
	bad = tA
	bad.Expires = time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	wantErr(t, record(Sign(bobPriv, bad), f.bob.pub, bad), ErrApprovalRejected, "the approval expired")
	bad.Expires = time.Now().Add(MaxExpiry + time.Hour).UTC().Truncate(time.Second)
	wantErr(t, record(Sign(bobPriv, bad), f.bob.pub, bad), ErrApprovalRejected, "at most 720h0m0s")
	if all, err := List(ctx, pool, ""); err != nil || len(all) != 1 {
		t.Fatalf("after refusals: %d rows, %v", len(all), err)
	}

	// bob (healthcare_admin, OpenSSH key) approves: the success path.
	b := e.mustApprove(f.bob, tA)
	for _, executor := range []string{"alice", "bob", "carol", "ops"} {
		got, err := check(f.signers, prodPolicy, tA, executor)
		if err != nil || names(got) != "alice,bob" {
			t.Fatalf("executor %s: %s, %v", executor, names(got), err)
		}
	}
	// Recording the same approval again returns the stored one.
	again := e.mustApprove(f.bob, tA)
	if !again.SignedAt.Equal(b.SignedAt) {
		t.Fatalf("re-recorded: %+v, first %+v", again, b)
	}

	// Counts are of distinct signers: bob's second key does not make two.
	twoHA := Requirements{"production": {HealthcareAdmin: 2}}
	e.mustApprove(f.bob2, tA)
	_, err = check(f.signers, twoHA, tA, "ops")
	wantErr(t, err, ErrApprovalRequired, "needs 2 approvals by healthcare_admin, has 1")
	e.mustApprove(f.carol, tA)
	if got, err := check(f.signers, twoHA, tA, "ops"); err != nil || names(got) != "alice,bob,bob,carol" {
		t.Fatalf("two healthcare_admin approvers: %s, %v", names(got), err)
	}

	// A signer no longer pinned no longer counts; a re-roled one counts for
	// its pinned role only.
	var noBob, bobAsDBA []Signer
	for _, s := range f.signers {
		if s.Name != "bob" {
			noBob = append(noBob, s)
		} else {
			s.Role = DBA
		}
		bobAsDBA = append(bobAsDBA, s)
	}
	_, err = check(noBob, twoHA, tA, "ops")
	wantErr(t, err, ErrApprovalRequired, "needs 2 approvals by healthcare_admin, has 1",
		"ignored the approval row by bob ("+Fingerprint(f.bob.pub)+"): the key is not a pinned signer's")
	_, err = check(bobAsDBA, twoHA, tA, "ops")
	wantErr(t, err, ErrApprovalRequired, "needs 2 approvals by healthcare_admin, has 1")

	// A stored signature altered in the database is ignored and reported;
	// bob's other key still counts for bob, and nothing else is blocked.
	if _, err := pool.Exec(ctx, `UPDATE pgphi.approvals SET signature = set_byte(signature, 5, get_byte(signature, 5) # 1)
		WHERE plan_id = $1 AND fingerprint = $2`, A, Fingerprint(f.bob.pub)); err != nil {
		t.Fatal(err)
	}
	got, err := check(f.signers, prodPolicy, tA, "ops")
	if err != nil || names(got) != "alice,bob,carol" || !strings.Contains(strings.Join(got.Ignored, "\n"), "by bob ("+Fingerprint(f.bob.pub)+"): bad signature") {
		t.Fatalf("after tampering with one of bob's rows: %s, ignored %v, %v", names(got), got, err)
	}
	// bob's own key approves again: a second row beside the bad one.
	e.mustApprove(f.bob, tA)
	if all, err := List(ctx, pool, A); err != nil || len(all) != 5 {
		t.Fatalf("rows of %s: %d, %v", A, len(all), err)
	}

	// Rows nobody signed for this target: a copy to another plan id, a
	// version 1 row, a garbage signature, another cluster, an expired one.
	if _, err := pool.Exec(ctx, `INSERT INTO pgphi.approvals (plan_id, environment, signer, role, fingerprint, signature, signed_at, recorded_by,
			version, command, system_identifier, database_name, expires_at)
		SELECT 'plan-C', environment, signer, role, fingerprint, signature, signed_at, recorded_by,
			version, command, system_identifier, database_name, expires_at FROM pgphi.approvals WHERE plan_id = $1`, A); err != nil {
		t.Fatal(err)
	}
	tC := tA
	tC.PlanID = "plan-C"
	_, err = check(f.signers, dbaOnly, tC, "ops")
	wantErr(t, err, ErrApprovalRequired, "needs 1 approval by dba, has 0", "by alice ("+Fingerprint(f.alice.pub)+"): bad signature")
	if _, err := pool.Exec(ctx, `INSERT INTO pgphi.approvals (plan_id, environment, signer, role, fingerprint, signature, signed_at, recorded_by)
		VALUES ('plan-D', 'production', 'carol', 'healthcare_admin', $1, $2, now(), 'x')`, Fingerprint(f.carol.pub), make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	tD := tA
	tD.PlanID = "plan-D"
	haOnly := Requirements{"production": {HealthcareAdmin: 1}}
	_, err = check(f.signers, haOnly, tD, "ops")
	wantErr(t, err, ErrApprovalRequired, "recorded by an earlier pgphi")
	if err := recordRaw(ctx, pool, tD, "carol", HealthcareAdmin, Fingerprint(f.carol.pub), append(make([]byte, 63), 7)); err != nil {
		t.Fatal(err)
	}
	other := tD
	other.SystemIdentifier = "1"
	carolPriv, _ := LoadPrivateKey(f.carol.path)
	if err := recordRaw(ctx, pool, other, "carol", HealthcareAdmin, Fingerprint(f.carol.pub), Sign(carolPriv, other)); err != nil {
		t.Fatal(err)
	}
	expired := tD
	expired.Expires = time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	if err := recordRaw(ctx, pool, expired, "carol", HealthcareAdmin, Fingerprint(f.carol.pub), Sign(carolPriv, expired)); err != nil {
		t.Fatal(err)
	}
	_, err = check(f.signers, haOnly, tD, "ops")
	wantErr(t, err, ErrApprovalRequired, "needs 1 approval by healthcare_admin, has 0", "bad signature", "it is for another database", "it expired at")
	// carol's real approval counts beside all of them.
	e.mustApprove(f.carol, tD)
	if got, err := check(f.signers, haOnly, tD, "ops"); err != nil || names(got) != "carol" || len(got.Ignored) != 4 {
		t.Fatalf("carol's approval beside four bad rows: %s, %+v, %v", names(got), got, err)
	}
}

func TestRequirements(t *testing.T) {
	req, err := ParseRequirements(map[string]map[string]int{"production": {"dba": 1, "healthcare_admin": 2}})
	if err != nil || req["production"][HealthcareAdmin] != 2 {
		t.Fatalf("%v, %v", req, err)
	}
	if _, err := ParseRequirements(map[string]map[string]int{"production": {"admin": 1}}); err == nil {
		t.Fatal("unknown role accepted")
	}
	if _, err := ParseRequirements(map[string]map[string]int{"production": {"dba": -1}}); err == nil {
		t.Fatal("negative count accepted")
	}
	if err := DefaultRequirements().Validate(); err != nil {
		t.Fatal(err)
	}
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("%s: got %v, want permission denied (42501)", what, err)
	}
}

// Approvals are written only
// through pgphi.approval_record; a healthcare_admin member can neither write
// a row directly nor block a plan with a bad row; the executor is the
// connected database role, not a name from a file.
func TestApprovalAttacks(t *testing.T) {
	ctx := testContext(t)
	u, pool := setup(t)
	actors := pgtest.NewActors(t, u)
	if _, err := InitRoles(ctx, pool, DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	f.alice.dbRole, f.bob.dbRole = actors.DBA, actors.HealthcareAdmin
	f.signers = writeSigners(t, f.signersPath, signerLine(f.alice), signerLine(f.bob), signerLine(f.carol))
	ha, ao, out, dba := poolAs(t, u, actors.HealthcareAdmin), poolAs(t, u, actors.AuditOfficer), poolAs(t, u, actors.Outsider), poolAs(t, u, actors.DBA)
	tA := target(t, ctx, ha, "plan-A", "apply", "production")

	// Direct writes are refused for every role but the schema's owner (the
	// dba group after roles init: its residual power is documented).
	for who, p := range map[string]*pgxpool.Pool{"healthcare_admin": ha, "audit_officer": ao, "outsider": out} {
		_, err := p.Exec(ctx, `INSERT INTO pgphi.approvals (plan_id, environment, signer, role, fingerprint, signature, signed_at, recorded_by,
				version, command, system_identifier, database_name, expires_at)
			VALUES ('plan-A', 'production', 'bob', 'healthcare_admin', $1, $2, now(), 'x', 2, 'apply', $3, $4, now() + interval '1 day')`,
			Fingerprint(f.bob.pub), make([]byte, 64), tA.SystemIdentifier, tA.Database)
		wantDenied(t, who+" INSERT into pgphi.approvals", err)
		_, err = p.Exec(ctx, `DELETE FROM pgphi.approvals`)
		wantDenied(t, who+" DELETE FROM pgphi.approvals", err)
	}
	// The audit officer and the outsider may not record approvals at all.
	wantDenied(t, "audit_officer approval_record", recordRaw(ctx, ao, tA, "bob", HealthcareAdmin, Fingerprint(f.bob.pub), make([]byte, 64)))
	wantDenied(t, "outsider approval_record", recordRaw(ctx, out, tA, "bob", HealthcareAdmin, Fingerprint(f.bob.pub), make([]byte, 64)))

	// The healthcare_admin member records garbage rows through the function
	// in the name of alice and bob, before and after their real approvals.
	for _, s := range []*testKey{f.alice, f.bob} {
		if err := recordRaw(ctx, ha, tA, s.name, s.role, Fingerprint(s.pub), make([]byte, 64)); err != nil {
			t.Fatalf("approval_record as healthcare_admin: %v", err)
		}
	}
	var recordedBy string
	if err := pool.QueryRow(ctx, `SELECT recorded_by FROM pgphi.approvals WHERE signer = 'bob'`).Scan(&recordedBy); err != nil || recordedBy != actors.HealthcareAdmin {
		t.Fatalf("recorded_by = %q, %v; want the calling role %s", recordedBy, err, actors.HealthcareAdmin)
	}
	approve := func(p *pgxpool.Pool, k *testKey, tg Target) {
		t.Helper()
		if _, err := Record(ctx, p, f.signers, tg, Sign(k.priv, tg), k.pub); err != nil {
			t.Fatalf("%s approving: %v", k.name, err)
		}
	}
	approve(dba, f.alice, tA)
	approve(ha, f.bob, tA)
	if err := recordRaw(ctx, ha, tA, "alice", DBA, Fingerprint(f.alice.pub), append(make([]byte, 63), 1)); err != nil {
		t.Fatal(err)
	}
	got, err := Check(ctx, dba, f.signers, prodPolicy, tA, "ops")
	if err != nil || names(got) != "alice,bob" || len(got.Ignored) != 3 {
		t.Fatalf("real approvals beside garbage rows: %s, %+v, %v", names(got), got, err)
	}

	// The executor is the connected database role: the dba member who is
	// alice may not be the only approver of a plan.
	dbaOnly := Requirements{"production": {DBA: 1}}
	var executor string
	if err := dba.QueryRow(ctx, "SELECT current_user").Scan(&executor); err != nil {
		t.Fatal(err)
	}
	tB := target(t, ctx, dba, "plan-B", "cleanup", "production")
	approve(dba, f.alice, tB)
	_, err = Check(ctx, dba, f.signers, dbaOnly, tB, executor)
	wantErr(t, err, ErrApprovalRequired, "the executor (database role "+actors.DBA+") cannot be the only approver")
	// Variant: the healthcare_admin member executing what only bob approved.
	tC := target(t, ctx, ha, "plan-C", "rollback", "production")
	approve(ha, f.bob, tC)
	_, err = Check(ctx, ha, f.signers, Requirements{"production": {HealthcareAdmin: 1}}, tC, actors.HealthcareAdmin)
	wantErr(t, err, ErrApprovalRequired, "the executor (database role "+actors.HealthcareAdmin+") cannot be the only approver")
	// carol (no relation to the executor) approves too: now it passes.
	approve(ha, f.carol, tB)
	if _, err := Check(ctx, dba, f.signers, dbaOnly, tB, executor); err != nil {
		t.Fatalf("with carol's approval too: %v", err)
	}
}
