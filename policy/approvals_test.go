package policy

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

type approvalEnv struct {
	t    *testing.T
	ctx  context.Context
	pool *pgxpool.Pool
	f    *fixture
}

// approve signs with the key loaded from k's file, as `pgphi approve` does.
func (e *approvalEnv) approve(k *testKey, planID, environment string) (*Approval, error) {
	e.t.Helper()
	priv, err := LoadPrivateKey(k.path)
	if err != nil {
		e.t.Fatal(err)
	}
	return Record(e.ctx, e.pool, e.f.signers, planID, environment, Sign(priv, planID, environment), priv.Public().(ed25519.PublicKey))
}

func (e *approvalEnv) mustApprove(k *testKey, planID, environment string) *Approval {
	e.t.Helper()
	a, err := e.approve(k, planID, environment)
	if err != nil {
		e.t.Fatalf("%s approving %s in %s: %v", k.name, planID, environment, err)
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

func names(as []Approval) string {
	var s []string
	for _, a := range as {
		s = append(s, a.Signer)
	}
	return strings.Join(s, ",")
}

func TestApprovals(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	_, pool := setup(t)
	f := newFixture(t)
	e := &approvalEnv{t, ctx, pool, f}
	check := func(signers []Signer, req Requirements, planID, environment, executor string) ([]Approval, error) {
		return Check(ctx, pool, signers, req, planID, environment, executor)
	}
	const A = "plan-A"

	// Nothing recorded at all.
	_, err := check(f.signers, prodPolicy, A, "production", "alice")
	wantErr(t, err, ErrApprovalRequired,
		"approval required: plan id plan-A in environment production: has no approvals; needs 1 approval by dba, has 0; needs 1 approval by healthcare_admin, has 0")
	// An environment absent from the policy requires nothing.
	if got, err := check(f.signers, prodPolicy, A, "development", "alice"); err != nil || got != nil {
		t.Fatalf("development: %v, %v", got, err)
	}
	if got, err := check(f.signers, Requirements{"production": {DBA: 0}}, A, "production", "alice"); err != nil || got != nil {
		t.Fatalf("zero counts: %v, %v", got, err)
	}

	// alice (dba, PKCS#8 key) approves.
	a := e.mustApprove(f.alice, A, "production")
	if a.Signer != "alice" || a.Role != DBA || a.Fingerprint != Fingerprint(f.alice.pub) || a.SignedAt.IsZero() ||
		a.PlanID != A || a.Environment != "production" || len(a.Signature) != ed25519.SignatureSize {
		t.Fatalf("recorded %+v", a)
	}

	// Role count not met, and the executor is the only approver.
	_, err = check(f.signers, prodPolicy, A, "production", "alice")
	wantErr(t, err, ErrApprovalRequired, "needs 1 approval by healthcare_admin, has 0", "the executor alice cannot be the only approver")
	if strings.Contains(err.Error(), "by dba") {
		t.Errorf("dba requirement reported although met: %v", err)
	}

	// Self-approval only, with a policy alice alone would satisfy.
	dbaOnly := Requirements{"production": {DBA: 1}}
	for _, executor := range []string{"alice", "Alice"} {
		_, err = check(f.signers, dbaOnly, A, "production", executor)
		wantErr(t, err, ErrApprovalRequired, "the executor "+executor+" cannot be the only approver")
		if strings.Contains(err.Error(), "needs") {
			t.Errorf("counts reported although met: %v", err)
		}
	}
	if got, err := check(f.signers, dbaOnly, A, "production", "ops"); err != nil || names(got) != "alice" {
		t.Fatalf("another executor: %v, %v", names(got), err)
	}
	_, err = check(f.signers, dbaOnly, A, "production", "")
	wantErr(t, err, ErrApprovalRequired, "the executor is unknown")

	// Wrong plan id.
	_, err = check(f.signers, prodPolicy, "plan-B", "production", "ops")
	wantErr(t, err, ErrApprovalRequired, "plan id plan-B in environment production: has no approvals (approvals exist for other plan ids); needs 1 approval by dba, has 0")

	// Wrong environment.
	_, err = check(f.signers, Requirements{"staging": {DBA: 1}}, A, "staging", "ops")
	wantErr(t, err, ErrApprovalRequired, "plan id plan-A in environment staging: has no approvals for this environment (approvals exist for environment production); needs 1 approval by dba, has 0")

	// Refused recordings: nothing is stored.
	bobPriv, err := LoadPrivateKey(f.bob.path) // OpenSSH key
	if err != nil {
		t.Fatal(err)
	}
	record := func(sig []byte, pub ed25519.PublicKey, planID, environment string) error {
		_, err := Record(ctx, pool, f.signers, planID, environment, sig, pub)
		return err
	}
	tampered := Sign(bobPriv, A, "production")
	tampered[10] ^= 1
	wantErr(t, record(tampered, f.bob.pub, A, "production"), ErrApprovalRejected, "does not verify with the key of bob")
	wantErr(t, record(Sign(bobPriv, A, "staging"), f.bob.pub, A, "production"), ErrApprovalRejected, "does not verify", "environment production")
	wantErr(t, record(Sign(bobPriv, "plan-B", "production"), f.bob.pub, A, "production"), ErrApprovalRejected, "does not verify", "plan id plan-A")
	wantErr(t, record(Sign(f.mallo.priv, A, "production"), f.mallo.pub, A, "production"), ErrApprovalRejected,
		"key "+Fingerprint(f.mallo.pub)+" is not in the allowed signers file")
	// mallory signs and claims bob's key: the approver is identified by key.
	wantErr(t, record(Sign(f.mallo.priv, A, "production"), f.bob.pub, A, "production"), ErrApprovalRejected, "does not verify with the key of bob")
	wantErr(t, record(Sign(bobPriv, A, "production")[:40], f.bob.pub, A, "production"), ErrApprovalRejected, "does not verify")
	wantErr(t, record(Sign(bobPriv, "x\ny", "production"), f.bob.pub, "x\ny", "production"), ErrApprovalRejected, "invalid plan id")
	wantErr(t, record(Sign(bobPriv, A, ""), f.bob.pub, A, ""), ErrApprovalRejected, "empty environment")
	if all, err := List(ctx, pool, ""); err != nil || names(all) != "alice" {
		t.Fatalf("after refusals: %s, %v", names(all), err)
	}
	_, err = check(f.signers, prodPolicy, "x\ny", "production", "ops")
	wantErr(t, err, ErrApprovalRequired, "invalid plan id")

	// bob (healthcare_admin, OpenSSH key) approves: the success path.
	b := e.mustApprove(f.bob, A, "production")
	for _, executor := range []string{"alice", "bob", "carol", "ops"} {
		got, err := check(f.signers, prodPolicy, A, "production", executor)
		if err != nil || names(got) != "alice,bob" {
			t.Fatalf("executor %s: %s, %v", executor, names(got), err)
		}
	}
	// Recording the same approval again returns the stored one.
	again := e.mustApprove(f.bob, A, "production")
	if !again.SignedAt.Equal(b.SignedAt) || again.Signer != "bob" || again.Role != HealthcareAdmin {
		t.Fatalf("re-recorded: %+v, first %+v", again, b)
	}
	// One key approves a plan id for one environment.
	_, err = e.approve(f.bob, A, "staging")
	wantErr(t, err, ErrApprovalRejected, "already approved plan id plan-A for environment production")

	// Counts are of distinct signers: bob's second key does not make two.
	twoHA := Requirements{"production": {HealthcareAdmin: 2}}
	e.mustApprove(f.bob2, A, "production")
	_, err = check(f.signers, twoHA, A, "production", "ops")
	wantErr(t, err, ErrApprovalRequired, "needs 2 approvals by healthcare_admin, has 1")
	e.mustApprove(f.carol, A, "production")
	if got, err := check(f.signers, twoHA, A, "production", "ops"); err != nil || names(got) != "alice,bob,bob,carol" {
		t.Fatalf("two healthcare_admin approvers: %s, %v", names(got), err)
	}

	// A signer removed from the file no longer counts.
	lines := func(ks ...*testKey) []string {
		var s []string
		for _, k := range ks {
			s = append(s, signerLine(k))
		}
		return s
	}
	noBob := writeSigners(t, f.signersPath, lines(f.alice, f.carol)...)
	_, err = check(noBob, twoHA, A, "production", "ops")
	wantErr(t, err, ErrApprovalRequired, "needs 2 approvals by healthcare_admin, has 1",
		"the approval by bob ("+Fingerprint(f.bob.pub)+") does not count: the key is no longer in the signers file")
	onlyAlice := writeSigners(t, f.signersPath, lines(f.alice)...)
	_, err = check(onlyAlice, prodPolicy, A, "production", "ops")
	wantErr(t, err, ErrApprovalRequired, "needs 1 approval by healthcare_admin, has 0")
	// A signer whose role changed no longer counts for the old role.
	bobAsDBA := *f.bob
	bobAsDBA.role = DBA
	reroled := writeSigners(t, f.signersPath, lines(f.alice, &bobAsDBA)...)
	_, err = check(reroled, prodPolicy, A, "production", "ops")
	wantErr(t, err, ErrApprovalRequired, "needs 1 approval by healthcare_admin, has 0",
		"the approval by bob ("+Fingerprint(f.bob.pub)+") does not count: recorded as healthcare_admin, the signers file now says dba")
	if got, err := check(reroled, dbaOnly, A, "production", "ops"); err != nil || names(got) != "alice" {
		t.Fatalf("dba count with a re-roled signer: %s, %v", names(got), err)
	}

	// A stored signature altered in the database refuses the plan.
	if _, err := pool.Exec(ctx, `UPDATE pgphi.approvals SET signature = set_byte(signature, 5, get_byte(signature, 5) # 1)
		WHERE plan_id = $1 AND fingerprint = $2`, A, Fingerprint(f.bob.pub)); err != nil {
		t.Fatal(err)
	}
	_, err = check(f.signers, prodPolicy, A, "production", "ops")
	wantErr(t, err, ErrApprovalRequired, "bad signature by bob ("+Fingerprint(f.bob.pub)+")", "pgphi.approvals was altered")
	_, err = e.approve(f.bob, A, "production")
	wantErr(t, err, ErrApprovalRejected, "a different signature is stored for bob")
	// A row copied by hand to another plan id does not verify either.
	if _, err := pool.Exec(ctx, `INSERT INTO pgphi.approvals (plan_id, environment, signer, role, fingerprint, signature)
		SELECT 'plan-C', environment, signer, role, fingerprint, signature FROM pgphi.approvals WHERE plan_id = $1`, A); err != nil {
		t.Fatal(err)
	}
	_, err = check(f.signers, dbaOnly, "plan-C", "production", "ops")
	wantErr(t, err, ErrApprovalRequired, "bad signature by alice")
	// A row inserted by hand with a claimed role but no valid signature.
	if _, err := pool.Exec(ctx, `INSERT INTO pgphi.approvals (plan_id, environment, signer, role, fingerprint, signature)
		VALUES ('plan-D', 'production', 'carol', 'healthcare_admin', $1, $2)`, Fingerprint(f.carol.pub), make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	_, err = check(f.signers, Requirements{"production": {HealthcareAdmin: 1}}, "plan-D", "production", "ops")
	wantErr(t, err, ErrApprovalRequired, "bad signature by carol")

	if all, err := List(ctx, pool, A); err != nil || len(all) != 4 {
		t.Fatalf("List(%s): %d, %v", A, len(all), err)
	}
	if all, err := List(ctx, pool, ""); err != nil || len(all) != 9 { // 4 for plan-A, 4 copied to plan-C, 1 for plan-D
		t.Fatalf("List(all): %d, %v", len(all), err)
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
