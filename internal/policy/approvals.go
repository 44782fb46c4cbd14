package policy

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// MessagePrefix starts every signed approval message; it names the purpose
// and the format version, so an approval signature cannot be mistaken for a
// signature over anything else made with the same key. Version 1 messages
// (plan id and environment only) count for nothing any more.
const MessagePrefix = "pgphi-approval-v2\n"

// Commands an approval may be for.
var ApprovalCommands = []string{"apply", "cleanup", "rollback", "pins", "migrate"}

// DefaultExpiry and MaxExpiry bound how long an approval counts.
const (
	DefaultExpiry = 7 * 24 * time.Hour
	MaxExpiry     = 30 * 24 * time.Hour
)

// Target is what an approval approves: one plan id (or pins id), for one
// command, in one environment of one database (the cluster's system
// identifier and the database's name), until Expires.
type Target struct {
	PlanID           string
	Command          string
	Environment      string
	SystemIdentifier string
	Database         string
	Expires          time.Time // UTC, whole seconds
}

// Message returns the bytes an approver signs:
//
//	"pgphi-approval-v2\n" + plan id + "\n" + command + "\n" + environment + "\n" +
//	system identifier + "\n" + database + "\n" + expiry (RFC 3339, UTC, seconds) + "\n"
//
// No field contains a line break (Record and Check refuse them), so the
// encoding is unambiguous.
func Message(t Target) []byte {
	return []byte(MessagePrefix + t.PlanID + "\n" + t.Command + "\n" + t.Environment + "\n" +
		t.SystemIdentifier + "\n" + t.Database + "\n" + t.Expires.UTC().Truncate(time.Second).Format(time.RFC3339) + "\n")
}

// Sign signs the approval of t with key (Ed25519, deterministic).
func Sign(key ed25519.PrivateKey, t Target) []byte {
	return ed25519.Sign(key, Message(t))
}

// Verify reports whether sig is pub's approval of t.
func Verify(pub ed25519.PublicKey, t Target, sig []byte) bool {
	return len(pub) == ed25519.PublicKeySize && len(sig) == ed25519.SignatureSize &&
		ed25519.Verify(pub, Message(t), sig)
}

// DatabaseIdentity returns the cluster's system identifier
// (pg_control_system()) and the current database's name: what an approval
// binds besides plan, command and environment.
func DatabaseIdentity(ctx context.Context, q Querier) (systemIdentifier, database string, err error) {
	err = q.QueryRow(ctx, `SELECT (SELECT s.system_identifier::text FROM pg_catalog.pg_control_system() s), pg_catalog.current_database()::text`).Scan(&systemIdentifier, &database)
	if err != nil {
		return "", "", fmt.Errorf("policy: reading the database's identity: %w", err)
	}
	return systemIdentifier, database, nil
}

// Approval is one stored approval row.
type Approval struct {
	Target
	Version     int    // 2; rows of version 1 count for nothing
	Signer      string // name in the pinned signers (as of Check; as recorded for List)
	Role        Role
	Fingerprint string
	SignedAt    time.Time // when it was recorded (database clock)
	RecordedBy  string    // the database role that recorded it
	Signature   []byte
}

// ErrApprovalRequired wraps every refusal by Check: the approvals of a plan
// id do not satisfy the environment's requirements.
var ErrApprovalRequired = errors.New("approval required")

// ErrApprovalRejected wraps every refusal by Record: the signature does not
// verify, or the key is not a pinned signer's.
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

func checkField(what, v string) error {
	if v == "" {
		return fmt.Errorf("empty %s", what)
	}
	if len(v) > 200 || strings.IndexFunc(v, unicode.IsControl) >= 0 {
		return fmt.Errorf("invalid %s (control characters or longer than 200 bytes)", what)
	}
	return nil
}

func (t Target) check() error {
	for _, f := range []struct{ what, v string }{{"plan id", t.PlanID}, {"command", t.Command}, {"environment", t.Environment},
		{"system identifier", t.SystemIdentifier}, {"database name", t.Database}} {
		if err := checkField(f.what, f.v); err != nil {
			return err
		}
	}
	if !slices.Contains(ApprovalCommands, t.Command) {
		return fmt.Errorf("command %s cannot be approved (use %s)", t.Command, strings.Join(ApprovalCommands, ", "))
	}
	return nil
}

// Record stores an approval of t signed sig by pub, through the definer
// function pgphi.approval_record (which sets when and by whom it was
// recorded). The approver is the pinned signer whose key is pub: name and
// role come from the pins, never from the caller. It refuses (wrapping
// ErrApprovalRejected) a key that is not pinned, a signature that does not
// verify, an expiry in the past or more than MaxExpiry away (database
// clock), and a target that is not this database. Recording the same
// signature again returns the stored approval.
func Record(ctx context.Context, q Querier, signers []Signer, t Target, sig []byte, pub ed25519.PublicKey) (*Approval, error) {
	t.Expires = t.Expires.UTC().Truncate(time.Second)
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrApprovalRejected, err)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: not an Ed25519 public key", ErrApprovalRejected)
	}
	s, ok := signerByKey(signers, pub)
	if !ok {
		return nil, fmt.Errorf("%w: key %s is not a pinned signer's (see `pgphi pins show`)", ErrApprovalRejected, Fingerprint(pub))
	}
	if !Verify(pub, t, sig) {
		return nil, fmt.Errorf("%w: the signature does not verify with the key of %s (%s) for %s of %s",
			ErrApprovalRejected, s.Name, s.Fingerprint, t.Command, t.PlanID)
	}
	sysid, db, err := DatabaseIdentity(ctx, q)
	if err != nil {
		return nil, err
	}
	if sysid != t.SystemIdentifier || db != t.Database {
		return nil, fmt.Errorf("%w: the approval is for database %s of cluster %s, not this one (%s of cluster %s)", ErrApprovalRejected, t.Database, t.SystemIdentifier, db, sysid)
	}
	var now time.Time
	if err := q.QueryRow(ctx, "SELECT pg_catalog.clock_timestamp()").Scan(&now); err != nil {
		return nil, fmt.Errorf("policy: recording approval: %w", err)
	}
	if !t.Expires.After(now) {
		return nil, fmt.Errorf("%w: the approval expired at %s", ErrApprovalRejected, t.Expires.Format(time.RFC3339))
	}
	if t.Expires.Sub(now) > MaxExpiry {
		return nil, fmt.Errorf("%w: an approval may count for at most %s; this one expires at %s", ErrApprovalRejected, MaxExpiry, t.Expires.Format(time.RFC3339))
	}
	a := &Approval{Target: t, Version: 2, Signer: s.Name, Role: s.Role, Fingerprint: s.Fingerprint, Signature: slices.Clone(sig)}
	err = q.QueryRow(ctx, `SELECT pgphi.approval_record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		t.PlanID, t.Command, t.Environment, t.SystemIdentifier, t.Database, t.Expires, s.Name, string(s.Role), s.Fingerprint, sig).Scan(&a.SignedAt)
	if err != nil {
		return nil, fmt.Errorf("policy: recording approval: %w", err)
	}
	return a, nil
}

// List returns the stored approval rows of planID (of every plan id when
// planID is ""), oldest first, as recorded: List verifies nothing (Check
// does).
func List(ctx context.Context, q Querier, planID string) ([]Approval, error) {
	rows, err := q.Query(ctx, `SELECT plan_id, version, command, environment, system_identifier, database_name,
			COALESCE(expires_at, '-infinity'::timestamptz), signer, role, fingerprint, signed_at, COALESCE(recorded_by, ''), signature
		FROM pgphi.approvals WHERE $1 = '' OR plan_id = $1 ORDER BY signed_at, plan_id, signer, fingerprint, signature_hash`, planID)
	if err != nil {
		return nil, fmt.Errorf("policy: listing approvals: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Approval, error) {
		var a Approval
		var role string
		var exp pgtype.Timestamptz
		err := r.Scan(&a.PlanID, &a.Version, &a.Command, &a.Environment, &a.SystemIdentifier, &a.Database,
			&exp, &a.Signer, &role, &a.Fingerprint, &a.SignedAt, &a.RecordedBy, &a.Signature)
		a.Role = Role(role)
		if exp.Valid && exp.InfinityModifier == pgtype.Finite {
			a.Expires = exp.Time.UTC()
		}
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("policy: listing approvals: %w", err)
	}
	return out, nil
}

// Result is what Check found: the approvals that count and, one phrase
// each, the rows it ignored and why (bad signature, unknown signer,
// expired, another database, command or environment, version 1).
type Result struct {
	Valid   []Approval
	Ignored []string
}

// Check decides whether want (plan id, command, environment; the database's
// identity is read here) may be executed by executor, the connected
// database role. It returns the approvals that count, or an error wrapping
// ErrApprovalRequired that says what is missing. An approval row counts only
// when it is version 2, for exactly this target, unexpired (database clock),
// recorded at most MaxExpiry before its expiry, and its signature verifies
// with the key of a pinned signer; the signer's role is the pinned one. A
// row that fails is ignored and reported, never fatal: a key counts if any
// of its rows verifies, so a bad row written beside a good one blocks
// nothing. Each role's count in req[environment] must be met by distinct
// signer names. If the executor is the database role of one of the
// approvers, at least one approver with another database role must be
// present. An environment that requires nothing passes with no database
// access.
func Check(ctx context.Context, q Querier, signers []Signer, req Requirements, want Target, executor string) (*Result, error) {
	return CheckAt(ctx, q, signers, req, want, executor, time.Time{})
}

// CheckAt is Check as of the time at (zero: now, by the database clock):
// a report of a past run asks whether the approvals counted when it ran,
// since an approval expires after the run it covered.
func CheckAt(ctx context.Context, q Querier, signers []Signer, req Requirements, want Target, executor string, at time.Time) (*Result, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	need := req[want.Environment]
	required := false
	for _, n := range need {
		required = required || n > 0
	}
	if !required {
		return &Result{}, nil
	}
	sysid, db, err := DatabaseIdentity(ctx, q)
	if err != nil {
		return nil, err
	}
	want.SystemIdentifier, want.Database = sysid, db
	if err := want.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrApprovalRequired, err)
	}
	refuse := func(problems []string) error {
		return fmt.Errorf("%w: %s of plan id %s in environment %s: %s", ErrApprovalRequired, want.Command, want.PlanID, want.Environment, strings.Join(problems, "; "))
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
	all, err := List(ctx, q, want.PlanID)
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		var other bool
		if err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pgphi.approvals WHERE plan_id <> $1)", want.PlanID).Scan(&other); err != nil {
			return nil, fmt.Errorf("policy: checking approvals: %w", err)
		}
		first := "has no approvals"
		if other {
			first = "has no approvals (approvals exist for other plan ids)"
		}
		return nil, refuse(append([]string{first}, missing(nil)...))
	}
	now := at
	if now.IsZero() {
		if err := q.QueryRow(ctx, "SELECT pg_catalog.clock_timestamp()").Scan(&now); err != nil {
			return nil, fmt.Errorf("policy: checking approvals: %w", err)
		}
	}

	res := &Result{}
	ignore := func(a Approval, why string) {
		res.Ignored = append(res.Ignored, fmt.Sprintf("ignored the approval row by %s (%s): %s", a.Signer, a.Fingerprint, why))
	}
	counted := map[string]bool{} // fingerprints
	have := map[Role]map[string]bool{}
	approverRoles := map[string]bool{} // database roles of the counted approvers
	for _, a := range all {
		switch {
		case a.Version != 2:
			ignore(a, "recorded by an earlier pgphi (approvals are signed again after an upgrade)")
			continue
		case a.Command != want.Command:
			ignore(a, "it approves "+a.Command+", not "+want.Command)
			continue
		case a.Environment != want.Environment:
			ignore(a, "it is for environment "+a.Environment)
			continue
		case a.SystemIdentifier != want.SystemIdentifier || a.Database != want.Database:
			ignore(a, "it is for another database")
			continue
		}
		s, ok := signerByFingerprint(signers, a.Fingerprint)
		if !ok {
			ignore(a, "the key is not a pinned signer's")
			continue
		}
		if !Verify(s.Key, a.Target, a.Signature) {
			res.Ignored = append(res.Ignored, fmt.Sprintf("ignored the approval row by %s (%s): bad signature", s.Name, a.Fingerprint))
			continue
		}
		if !a.Expires.After(now) {
			ignore(a, "it expired at "+a.Expires.Format(time.RFC3339))
			continue
		}
		if a.Expires.Sub(a.SignedAt) > MaxExpiry+time.Hour {
			ignore(a, fmt.Sprintf("its expiry is more than %s after it was recorded", MaxExpiry))
			continue
		}
		if counted[a.Fingerprint] {
			continue
		}
		counted[a.Fingerprint] = true
		a.Signer, a.Role = s.Name, s.Role
		res.Valid = append(res.Valid, a)
		if have[s.Role] == nil {
			have[s.Role] = map[string]bool{}
		}
		have[s.Role][s.Name] = true
		approverRoles[s.DBRole] = true
	}
	problems := missing(have)
	switch {
	case executor == "":
		problems = append(problems, "the executor's database role is unknown, so pgphi cannot check that the executor is not the only approver")
	case len(res.Valid) > 0 && approverRoles[executor] && len(approverRoles) == 1:
		problems = append(problems, fmt.Sprintf("the executor (database role %s) cannot be the only approver: an approver with another database role must sign", executor))
	}
	if len(problems) > 0 {
		return res, refuse(append(problems, res.Ignored...))
	}
	return res, nil
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
