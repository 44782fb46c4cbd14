package policy

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// MessagePrefix starts every signed approval message; it names the purpose
// and the format version, so an approval signature cannot be mistaken for a
// signature over anything else made with the same key.
const MessagePrefix = "pgphi-approval-v1\n"

// Message returns the bytes an approver signs:
//
//	"pgphi-approval-v1\n" + planID + "\n" + environment + "\n"
//
// Plan ids and environments never contain line breaks (Record and Check
// refuse them), so the encoding is unambiguous.
func Message(planID, environment string) []byte {
	return []byte(MessagePrefix + planID + "\n" + environment + "\n")
}

// Sign signs the approval of planID in environment with key (Ed25519, which
// is deterministic: the same key, plan id and environment give the same
// signature).
func Sign(key ed25519.PrivateKey, planID, environment string) []byte {
	return ed25519.Sign(key, Message(planID, environment))
}

// Verify reports whether sig is pub's approval of planID in environment.
func Verify(pub ed25519.PublicKey, planID, environment string, sig []byte) bool {
	return len(pub) == ed25519.PublicKeySize && len(sig) == ed25519.SignatureSize &&
		ed25519.Verify(pub, Message(planID, environment), sig)
}

// Approval is one stored approval of a plan id.
type Approval struct {
	PlanID      string
	Environment string
	Signer      string // name in the signers file (as of Check; as recorded for List)
	Role        Role
	Fingerprint string
	SignedAt    time.Time // when it was recorded (database clock)
	Signature   []byte
}

// ErrApprovalRequired wraps every refusal by Check: the approvals of a plan
// id do not satisfy the environment's requirements.
var ErrApprovalRequired = errors.New("approval required")

// ErrApprovalRejected wraps every refusal by Record: the signature does not
// verify, or the key is not in the signers file.
var ErrApprovalRejected = errors.New("approval rejected")

// Requirements is the approval policy: per environment, how many distinct
// approvers of each role a plan id needs. An environment absent from the
// policy (or with all counts zero) requires nothing.
type Requirements map[string]map[Role]int

// ParseRequirements converts the configuration's environment -> role name ->
// count mapping, checking role names and counts.
func ParseRequirements(m map[string]map[string]int) (Requirements, error) {
	req := Requirements{}
	for env, roles := range m {
		req[env] = map[Role]int{}
		for name, n := range roles {
			r, err := ParseRole(name)
			if err != nil {
				return nil, fmt.Errorf("approval requirements for %s: %w", env, err)
			}
			req[env][r] = n
		}
	}
	return req, req.Validate()
}

// Validate checks that every role is known and every count is zero or more.
func (req Requirements) Validate() error {
	for env, roles := range req {
		for r, n := range roles {
			if !r.Valid() {
				return fmt.Errorf("approval requirements for %s: %w", env, errUnknownRole(r))
			}
			if n < 0 {
				return fmt.Errorf("approval requirements for %s: %s count %d is negative", env, r, n)
			}
		}
	}
	return nil
}

// DefaultRequirements is a starting policy: production needs one dba and one
// healthcare_admin approval; other environments need none.
func DefaultRequirements() Requirements {
	return Requirements{"production": {DBA: 1, HealthcareAdmin: 1}}
}

func checkIDs(planID, environment string) error {
	for _, f := range []struct{ what, v string }{{"plan id", planID}, {"environment", environment}} {
		if f.v == "" {
			return fmt.Errorf("empty %s", f.what)
		}
		if len(f.v) > 200 || strings.IndexFunc(f.v, unicode.IsControl) >= 0 {
			return fmt.Errorf("invalid %s (control characters or longer than 200 bytes)", f.what)
		}
	}
	return nil
}

// Record stores an approval of planID in environment after verifying sig
// with pub. The approver is the signers file entry whose key is pub: name
// and role come from the file, never from the caller. It refuses (wrapping
// ErrApprovalRejected) a key not in the file and a signature that does not
// verify. Recording the same approval again returns the stored one; one key
// approves a plan id for one environment only.
func Record(ctx context.Context, pool *pgxpool.Pool, signers []Signer, planID, environment string, sig []byte, pub ed25519.PublicKey) (*Approval, error) {
	if err := checkIDs(planID, environment); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrApprovalRejected, err)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: not an Ed25519 public key", ErrApprovalRejected)
	}
	s, ok := signerByKey(signers, pub)
	if !ok {
		return nil, fmt.Errorf("%w: key %s is not in the allowed signers file", ErrApprovalRejected, Fingerprint(pub))
	}
	if !Verify(pub, planID, environment, sig) {
		return nil, fmt.Errorf("%w: the signature does not verify with the key of %s (%s) for plan id %s in environment %s",
			ErrApprovalRejected, s.Name, s.Fingerprint, planID, environment)
	}
	fp := Fingerprint(pub)
	a := &Approval{PlanID: planID, Environment: environment, Signer: s.Name, Role: s.Role, Fingerprint: fp, Signature: slices.Clone(sig)}
	err := pool.QueryRow(ctx, `INSERT INTO pgphi.approvals (plan_id, environment, signer, role, fingerprint, signature)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (plan_id, fingerprint) DO NOTHING RETURNING signed_at`,
		planID, environment, s.Name, string(s.Role), fp, sig).Scan(&a.SignedAt)
	if err == nil {
		return a, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("policy: recording approval: %w", err)
	}
	// Already recorded for this plan id and key.
	var old Approval
	var role string
	err = pool.QueryRow(ctx, `SELECT environment, signer, role, signed_at, signature FROM pgphi.approvals
		WHERE plan_id = $1 AND fingerprint = $2`, planID, fp).Scan(&old.Environment, &old.Signer, &role, &old.SignedAt, &old.Signature)
	if err != nil {
		return nil, fmt.Errorf("policy: recording approval: %w", err)
	}
	if old.Environment != environment {
		return nil, fmt.Errorf("%w: the key of %s (%s) already approved plan id %s for environment %s; a key approves a plan id for one environment",
			ErrApprovalRejected, s.Name, fp, planID, old.Environment)
	}
	if !bytes.Equal(old.Signature, sig) {
		return nil, fmt.Errorf("%w: a different signature is stored for %s (%s) on plan id %s: the stored approval was altered; a dba must delete it before it can be recorded again",
			ErrApprovalRejected, s.Name, fp, planID)
	}
	old.PlanID, old.Role, old.Fingerprint = planID, Role(role), fp
	return &old, nil
}

// List returns the stored approvals of planID (of every plan id when planID
// is ""), oldest first, as recorded: List verifies nothing (Check does).
func List(ctx context.Context, pool *pgxpool.Pool, planID string) ([]Approval, error) {
	rows, err := pool.Query(ctx, `SELECT plan_id, environment, signer, role, fingerprint, signed_at, signature
		FROM pgphi.approvals WHERE $1 = '' OR plan_id = $1 ORDER BY signed_at, plan_id, signer, fingerprint`, planID)
	if err != nil {
		return nil, fmt.Errorf("policy: listing approvals: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Approval, error) {
		var a Approval
		var role string
		err := r.Scan(&a.PlanID, &a.Environment, &a.Signer, &role, &a.Fingerprint, &a.SignedAt, &a.Signature)
		a.Role = Role(role)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("policy: listing approvals: %w", err)
	}
	return out, nil
}

// Check decides whether planID may be executed in environment by executor
// (the OS user or configured actor running apply, cleanup or rollback). It
// returns the approvals that count, or an error wrapping
// ErrApprovalRequired that says what is missing. An approval counts only
// when its key is still in signers with the role it was recorded with (a
// removed or re-roled signer no longer counts) and its signature verifies;
// a signature that does not verify refuses the plan outright, because
// someone altered pgphi.approvals. Each role's count in req[environment] must
// be met by distinct signer names. If the executor is one of the approvers
// (names compared case-insensitively), at least one other approver must be
// present. An environment that requires nothing passes with no database
// access.
func Check(ctx context.Context, pool *pgxpool.Pool, signers []Signer, req Requirements, planID, environment, executor string) ([]Approval, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	need := req[environment]
	required := false
	for _, n := range need {
		required = required || n > 0
	}
	if !required {
		return nil, nil
	}
	if err := checkIDs(planID, environment); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrApprovalRequired, err)
	}
	refuse := func(problems []string) error {
		return fmt.Errorf("%w: plan id %s in environment %s: %s", ErrApprovalRequired, planID, environment, strings.Join(problems, "; "))
	}
	missing := func(have map[Role]map[string]bool) []string {
		var p []string
		for _, r := range Roles() {
			if n := need[r]; n > len(have[r]) {
				p = append(p, fmt.Sprintf("needs %d %s by %s, has %d", n, plural(n, "approval"), r, len(have[r])))
			}
		}
		return p
	}

	all, err := List(ctx, pool, planID)
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		var other bool
		if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pgphi.approvals WHERE plan_id <> $1)", planID).Scan(&other); err != nil {
			return nil, fmt.Errorf("policy: checking approvals: %w", err)
		}
		first := "has no approvals"
		if other {
			first = "has no approvals (approvals exist for other plan ids)"
		}
		return nil, refuse(append([]string{first}, missing(nil)...))
	}
	var forEnv []Approval
	var otherEnvs []string
	for _, a := range all {
		if a.Environment == environment {
			forEnv = append(forEnv, a)
		} else if !slices.Contains(otherEnvs, a.Environment) {
			otherEnvs = append(otherEnvs, a.Environment)
		}
	}
	if len(forEnv) == 0 {
		sort.Strings(otherEnvs)
		first := fmt.Sprintf("has no approvals for this environment (approvals exist for environment %s)", strings.Join(otherEnvs, ", "))
		return nil, refuse(append([]string{first}, missing(nil)...))
	}

	var valid []Approval
	var bad, notes []string
	have := map[Role]map[string]bool{}
	approvers := map[string]bool{}
	for _, a := range forEnv {
		s, ok := signerByFingerprint(signers, a.Fingerprint)
		if !ok {
			notes = append(notes, fmt.Sprintf("the approval by %s (%s) does not count: the key is no longer in the signers file", a.Signer, a.Fingerprint))
			continue
		}
		if !Verify(s.Key, planID, environment, a.Signature) {
			bad = append(bad, fmt.Sprintf("bad signature by %s (%s)", s.Name, a.Fingerprint))
			continue
		}
		if s.Role != a.Role {
			notes = append(notes, fmt.Sprintf("the approval by %s (%s) does not count: recorded as %s, the signers file now says %s", s.Name, a.Fingerprint, a.Role, s.Role))
			continue
		}
		a.Signer = s.Name
		valid = append(valid, a)
		if have[s.Role] == nil {
			have[s.Role] = map[string]bool{}
		}
		have[s.Role][s.Name] = true
		approvers[strings.ToLower(s.Name)] = true
	}
	if len(bad) > 0 {
		return nil, refuse(append(bad, "pgphi.approvals was altered; a dba must delete the altered rows and the approvers sign again"))
	}
	problems := missing(have)
	switch {
	case executor == "":
		problems = append(problems, "the executor is unknown, so pgphi cannot check that the executor is not the only approver")
	case approvers[strings.ToLower(executor)] && len(approvers) == 1:
		problems = append(problems, fmt.Sprintf("the executor %s cannot be the only approver: another approver must sign", executor))
	}
	if len(problems) > 0 {
		return nil, refuse(append(problems, notes...))
	}
	return valid, nil
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
