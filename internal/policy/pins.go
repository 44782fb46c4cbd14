package policy

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/crypto/ssh"
)

// Querier runs queries: a *pgxpool.Pool, *pgx.Conn or pgx.Tx satisfies it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Pins are the security decisions pgphi takes from the database, never from
// the operator's YAML: the YAML only proposes them. They are pinned at the
// first `roles init` or first run by a dba ([PinInitial]) and change only
// through `pgphi pins set --from-config`, a change approved under the
// current pins ([Replace]).
type Pins struct {
	Environment    string         `json:"environment"`
	Approvals      Requirements   `json:"approvals"`
	Signers        []PinnedSigner `json:"signers"`
	Roles          RoleNames      `json:"roles"`
	AllowSuperuser bool           `json:"allow_superuser"`
	// AuditPublicKey is the auditor's "ssh-ed25519 AAAA..." key that
	// checkpoints are verified with ("" when none), and its fingerprint.
	AuditPublicKey      string `json:"audit_public_key"`
	AuditKeyFingerprint string `json:"audit_key_fingerprint"`
	// AcceptLeakage maps "schema.table.column" to the reason that column's
	// blind index may stay below 2 distinct values per term or term array
	// (search_options.accept_leakage proposes it). Omitted when empty, so
	// the ids of pins without it are unchanged.
	AcceptLeakage map[string]string `json:"accept_leakage,omitempty"`
	// BackupMaxAge is how recent a verified backup production requires, as
	// a Go duration ("" means the default, 24h, and is how 24h is stored:
	// pins written before this field keep their id).
	BackupMaxAge string `json:"backup_max_age,omitempty"`
	// BackupRecipients are the age X25519 recipients backups taken with
	// the age format are encrypted to (sorted).
	BackupRecipients []string `json:"backup_recipients,omitempty"`
}

// DefaultBackupMaxAge is the pinned BackupMaxAge when none is given.
const DefaultBackupMaxAge = 24 * time.Hour

// MaxBackupAge returns BackupMaxAge as a duration (the default when unset
// or invalid).
func (p Pins) MaxBackupAge() time.Duration {
	if d, err := time.ParseDuration(p.BackupMaxAge); err == nil && d > 0 {
		return d
	}
	return DefaultBackupMaxAge
}

// MaxLeakageReason is the longest accept_leakage reason.
const MaxLeakageReason = 500

// PinnedSigner is one approver as pinned: the signers file's line.
type PinnedSigner struct {
	Name        string `json:"name"`
	Role        Role   `json:"role"`
	DBRole      string `json:"db_role"`
	Fingerprint string `json:"fingerprint"`
	Key         string `json:"key"` // "ssh-ed25519 AAAA..."
}

// PinSigners converts signers file entries to pinned signers.
func PinSigners(signers []Signer) []PinnedSigner {
	out := make([]PinnedSigner, 0, len(signers))
	for _, s := range signers {
		out = append(out, PinnedSigner{Name: s.Name, Role: s.Role, DBRole: s.DBRole, Fingerprint: s.Fingerprint, Key: AuthorizedKey(s.Key)})
	}
	return out
}

// SignerList returns the pinned signers as Signers (keys parsed); entries
// whose key does not parse or does not match its fingerprint are left out.
func (p Pins) SignerList() []Signer {
	var out []Signer
	for _, ps := range p.Signers {
		pub, err := ParseAuthorizedKey(ps.Key)
		if err != nil || Fingerprint(pub) != ps.Fingerprint {
			continue
		}
		out = append(out, Signer{Name: ps.Name, Role: ps.Role, DBRole: ps.DBRole, Key: pub, Fingerprint: ps.Fingerprint})
	}
	return out
}

// ParseAuthorizedKey parses "ssh-ed25519 AAAA... [comment]".
func ParseAuthorizedKey(s string) (ed25519.PublicKey, error) {
	f := strings.Fields(s)
	if len(f) < 2 || f[0] != ssh.KeyAlgoED25519 {
		return nil, errors.New("not an ssh-ed25519 public key")
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return nil, errors.New("not an ssh-ed25519 public key")
	}
	pk, err := ssh.ParsePublicKey(blob)
	if err != nil || pk.Type() != ssh.KeyAlgoED25519 {
		return nil, errors.New("not an ssh-ed25519 public key")
	}
	cpk, ok := pk.(ssh.CryptoPublicKey)
	if !ok {
		return nil, errors.New("not an ssh-ed25519 public key")
	}
	pub, ok := cpk.CryptoPublicKey().(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("not an ssh-ed25519 public key")
	}
	return pub, nil
}

// Normalize puts p in canonical form: zero counts and empty environments
// dropped, every pgphi role named, signers sorted, the audit key rendered
// without comment and its fingerprint computed. It fails on invalid role
// names, requirements or keys.
func (p Pins) Normalize() (Pins, error) {
	n := Pins{Environment: p.Environment, AllowSuperuser: p.AllowSuperuser, Approvals: Requirements{}, Roles: RoleNames{}, Signers: []PinnedSigner{}}
	if p.Environment == "" {
		return Pins{}, errors.New("policy: pins: empty environment")
	}
	if err := p.Approvals.Validate(); err != nil {
		return Pins{}, fmt.Errorf("policy: pins: %w", err)
	}
	for env, roles := range p.Approvals {
		for r, c := range roles {
			if c > 0 {
				if n.Approvals[env] == nil {
					n.Approvals[env] = map[Role]int{}
				}
				n.Approvals[env][r] = c
			}
		}
	}
	if err := p.Roles.Validate(); err != nil {
		return Pins{}, err
	}
	for _, r := range Roles() {
		n.Roles[r] = p.Roles.Group(r)
	}
	seen := map[string]bool{}
	for _, s := range p.Signers {
		pub, err := ParseAuthorizedKey(s.Key)
		if err != nil {
			return Pins{}, fmt.Errorf("policy: pins: signer %s: %w", s.Name, err)
		}
		if !s.Role.Valid() {
			return Pins{}, fmt.Errorf("policy: pins: signer %s: %w", s.Name, errUnknownRole(s.Role))
		}
		fp := Fingerprint(pub)
		if seen[fp] {
			return Pins{}, fmt.Errorf("policy: pins: key %s is listed twice", fp)
		}
		seen[fp] = true
		if s.DBRole == "" {
			s.DBRole = NoDBRole
		}
		n.Signers = append(n.Signers, PinnedSigner{Name: s.Name, Role: s.Role, DBRole: s.DBRole, Fingerprint: fp, Key: AuthorizedKey(pub)})
	}
	sort.Slice(n.Signers, func(i, j int) bool { return n.Signers[i].Fingerprint < n.Signers[j].Fingerprint })
	if p.BackupMaxAge != "" {
		d, err := time.ParseDuration(p.BackupMaxAge)
		if err != nil || d <= 0 {
			return Pins{}, fmt.Errorf("policy: pins: backup max age %q is not a positive duration", p.BackupMaxAge)
		}
		if d != DefaultBackupMaxAge {
			n.BackupMaxAge = d.String()
		}
	}
	for _, r := range p.BackupRecipients {
		if _, err := age.ParseX25519Recipient(r); err != nil {
			return Pins{}, fmt.Errorf("policy: pins: backup recipient %q is not an age X25519 recipient", r)
		}
		if !slices.Contains(n.BackupRecipients, r) {
			n.BackupRecipients = append(n.BackupRecipients, r)
		}
	}
	slices.Sort(n.BackupRecipients)
	for col, why := range p.AcceptLeakage {
		if strings.TrimSpace(col) == "" || strings.TrimSpace(why) == "" || len(why) > MaxLeakageReason {
			return Pins{}, fmt.Errorf("policy: pins: accept_leakage of %q needs a column and a reason of at most %d characters", col, MaxLeakageReason)
		}
		if n.AcceptLeakage == nil {
			n.AcceptLeakage = map[string]string{}
		}
		n.AcceptLeakage[col] = why
	}
	if p.AuditPublicKey != "" {
		pub, err := ParseAuthorizedKey(p.AuditPublicKey)
		if err != nil {
			return Pins{}, fmt.Errorf("policy: pins: audit public key: %w", err)
		}
		n.AuditPublicKey, n.AuditKeyFingerprint = AuthorizedKey(pub), Fingerprint(pub)
	}
	return n, nil
}

// Encode returns the canonical JSON of p (normalized) and its id: "pins-"
// and the first 24 hex digits of the SHA-256 of that JSON, as the database
// computes it.
func (p Pins) Encode() (body []byte, id string, err error) {
	n, err := p.Normalize()
	if err != nil {
		return nil, "", err
	}
	body, err = json.Marshal(n)
	if err != nil {
		return nil, "", fmt.Errorf("policy: pins: %w", err)
	}
	sum := sha256.Sum256(body)
	return body, "pins-" + hex.EncodeToString(sum[:])[:24], nil
}

// ID returns the id of p (see Encode), or "" if p is invalid.
func (p Pins) ID() string {
	_, id, _ := p.Encode()
	return id
}

// Pinned is the current version of the pins in the database.
type Pinned struct {
	Pins
	Seq      int64
	ID       string
	PinnedAt time.Time
	PinnedBy string
}

// ErrPinsMismatch wraps the refusal of a command whose configuration
// proposes pins other than the pinned ones.
var ErrPinsMismatch = errors.New("the configuration differs from the pinned security policy")

// ErrPinsUnreadable wraps a failure to read the pins for lack of privilege:
// the connected role is not a member of a pgphi group that roles init set up.
var ErrPinsUnreadable = errors.New("cannot read pgphi's pinned security policy")

// LoadPins returns the current pins, or nil when nothing is pinned (or the
// table does not exist yet). A role without SELECT on pgphi.pins gets an
// error wrapping ErrPinsUnreadable. A stored document that does not decode
// or whose id does not match is an error, not "nothing pinned".
func LoadPins(ctx context.Context, q Querier) (*Pinned, error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT pg_catalog.to_regclass('pgphi.pins') IS NOT NULL").Scan(&exists); err != nil {
		return nil, fmt.Errorf("policy: reading pins: %w", err)
	}
	if !exists {
		return nil, nil
	}
	var p Pinned
	var body string
	err := q.QueryRow(ctx, `SELECT seq, pins_id, body, pinned_at, pinned_by FROM pgphi.pins ORDER BY seq DESC LIMIT 1`).
		Scan(&p.Seq, &p.ID, &body, &p.PinnedAt, &p.PinnedBy)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		return nil, fmt.Errorf("%w: permission denied for pgphi.pins", ErrPinsUnreadable)
	case err != nil:
		return nil, fmt.Errorf("policy: reading pins: %w", err)
	}
	if err := json.Unmarshal([]byte(body), &p.Pins); err != nil {
		return nil, fmt.Errorf("policy: pins #%d do not decode: %w", p.Seq, err)
	}
	sum := sha256.Sum256([]byte(body))
	if id := "pins-" + hex.EncodeToString(sum[:])[:24]; id != p.ID {
		return nil, fmt.Errorf("policy: pins #%d: stored id %s does not match its document (%s)", p.Seq, p.ID, id)
	}
	if p.Approvals == nil {
		p.Approvals = Requirements{}
	}
	return &p, nil
}

// PinInitial pins proposed when nothing is pinned yet (through the definer
// function pgphi.pins_initial, which only a dba may execute and which refuses
// once anything is pinned). When pins exist already it returns nil if they
// equal proposed, else an error wrapping ErrPinsMismatch naming what
// differs. `roles init` and the first run by a dba call it.
func PinInitial(ctx context.Context, q Querier, proposed Pins) error {
	body, _, err := proposed.Encode()
	if err != nil {
		return err
	}
	cur, err := LoadPins(ctx, q)
	if err != nil {
		return err
	}
	if cur == nil {
		var id string
		err = q.QueryRow(ctx, "SELECT pgphi.pins_initial($1)", string(body)).Scan(&id)
		var pgErr *pgconn.PgError
		if err == nil {
			return nil
		}
		if !(errors.As(err, &pgErr) && pgErr.Code == "55000") {
			return fmt.Errorf("policy: pinning: %w", err)
		}
		// Another process pinned first: compare with what it pinned.
		if cur, err = LoadPins(ctx, q); err != nil {
			return err
		}
		if cur == nil {
			return errors.New("policy: pinning: pins vanished")
		}
	}
	if d := Diff(cur.Pins, proposed); len(d) > 0 {
		return MismatchError(cur, d)
	}
	return nil
}

// MismatchError is the refusal of a configuration that differs from cur in
// d (from Diff): it names each pin and says how to change them.
func MismatchError(cur *Pinned, d []string) error {
	return fmt.Errorf("%w (pins %s): %s; the configuration only proposes these: see `pgphi pins show`, and change them with "+
		"`pgphi pins set --from-config` (a dba, with approvals of the proposed pins id under the current pins), or put the pinned values back in the configuration",
		ErrPinsMismatch, cur.ID, strings.Join(d, "; "))
}

// Diff names every pin that differs between pinned and proposed, one
// phrase each (names, roles and fingerprints only). Empty means equal.
func Diff(pinned, proposed Pins) []string {
	a, errA := pinned.Normalize()
	b, errB := proposed.Normalize()
	if errA != nil || errB != nil {
		return []string{"the pins cannot be compared: " + errors.Join(errA, errB).Error()}
	}
	var d []string
	if a.Environment != b.Environment {
		d = append(d, fmt.Sprintf("environment: pinned %s, the configuration says %s", a.Environment, b.Environment))
	}
	if !equalRequirements(a.Approvals, b.Approvals) {
		d = append(d, fmt.Sprintf("approval policy (approvals.require): pinned %s, the configuration says %s", describeRequirements(a.Approvals), describeRequirements(b.Approvals)))
	}
	if s := diffSigners(a.Signers, b.Signers); s != "" {
		d = append(d, "signers (approvals.signers): "+s)
	}
	for _, r := range Roles() {
		if a.Roles[r] != b.Roles[r] {
			d = append(d, fmt.Sprintf("role names (access.roles.%s): pinned %s, the configuration says %s", r, a.Roles[r], b.Roles[r]))
		}
	}
	if a.AllowSuperuser != b.AllowSuperuser {
		d = append(d, fmt.Sprintf("access.allow_superuser: pinned %v, the configuration says %v", a.AllowSuperuser, b.AllowSuperuser))
	}
	for _, col := range leakageColumns(a.AcceptLeakage, b.AcceptLeakage) {
		pa, inA := a.AcceptLeakage[col]
		pb, inB := b.AcceptLeakage[col]
		switch {
		case !inA:
			d = append(d, fmt.Sprintf("accept_leakage of %s: not pinned, the configuration proposes it", col))
		case !inB:
			d = append(d, fmt.Sprintf("accept_leakage of %s: pinned, the configuration no longer proposes it", col))
		case pa != pb:
			d = append(d, fmt.Sprintf("accept_leakage of %s: the configuration gives another reason than the pinned one", col))
		}
	}
	if a.AuditKeyFingerprint != b.AuditKeyFingerprint {
		d = append(d, fmt.Sprintf("audit.public_key: pinned %s, the configuration says %s", orNone(a.AuditKeyFingerprint), orNone(b.AuditKeyFingerprint)))
	}
	if a.MaxBackupAge() != b.MaxBackupAge() {
		d = append(d, fmt.Sprintf("backup.max_age: pinned %s, the configuration says %s", a.MaxBackupAge(), b.MaxBackupAge()))
	}
	if !slices.Equal(a.BackupRecipients, b.BackupRecipients) {
		d = append(d, fmt.Sprintf("backup.age_recipients: pinned %s, the configuration says %s",
			orNone(strings.Join(a.BackupRecipients, " ")), orNone(strings.Join(b.BackupRecipients, " "))))
	}
	return d
}

// leakageColumns lists the columns of either map, sorted.
func leakageColumns(a, b map[string]string) []string {
	var out []string
	for c := range a {
		out = append(out, c)
	}
	for c := range b {
		if _, ok := a[c]; !ok {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func equalRequirements(a, b Requirements) bool {
	if len(a) != len(b) {
		return false
	}
	for env, ra := range a {
		rb, ok := b[env]
		if !ok || len(ra) != len(rb) {
			return false
		}
		for r, n := range ra {
			if rb[r] != n {
				return false
			}
		}
	}
	return true
}

func describeRequirements(req Requirements) string {
	if len(req) == 0 {
		return "no approvals anywhere"
	}
	envs := make([]string, 0, len(req))
	for env := range req {
		envs = append(envs, env)
	}
	sort.Strings(envs)
	var parts []string
	for _, env := range envs {
		var rs []string
		for _, r := range Roles() {
			if n := req[env][r]; n > 0 {
				rs = append(rs, fmt.Sprintf("%d %s", n, r))
			}
		}
		parts = append(parts, env+": "+strings.Join(rs, " + "))
	}
	return "(" + strings.Join(parts, "; ") + ")"
}

func diffSigners(a, b []PinnedSigner) string {
	byFP := func(l []PinnedSigner) map[string]PinnedSigner {
		m := map[string]PinnedSigner{}
		for _, s := range l {
			m[s.Fingerprint] = s
		}
		return m
	}
	ma, mb := byFP(a), byFP(b)
	var added, removed, changed []string
	for fp, s := range mb {
		if o, ok := ma[fp]; !ok {
			added = append(added, fmt.Sprintf("%s (%s, %s)", s.Name, s.Role, fp))
		} else if o != s {
			changed = append(changed, fmt.Sprintf("%s (%s): pinned %s/%s/%s, the configuration says %s/%s/%s", s.Name, fp, o.Name, o.Role, o.DBRole, s.Name, s.Role, s.DBRole))
		}
	}
	for fp, s := range ma {
		if _, ok := mb[fp]; !ok {
			removed = append(removed, fmt.Sprintf("%s (%s, %s)", s.Name, s.Role, fp))
		}
	}
	var parts []string
	for _, x := range []struct {
		what string
		l    []string
	}{{"the configuration adds ", added}, {"the configuration removes ", removed}, {"changed ", changed}} {
		if len(x.l) > 0 {
			slices.Sort(x.l)
			parts = append(parts, x.what+strings.Join(x.l, ", "))
		}
	}
	return strings.Join(parts, "; ")
}

// Replace stores proposed as the new pins after cur (through the definer
// function pgphi.pins_replace, which only a dba may execute). The caller
// must have checked the approvals of proposed's id for command "pins" under
// cur first ([Check]); the dba, who administers pgphi's schema, is trusted
// with that order (THREAT-MODEL.md). It returns the new id.
func Replace(ctx context.Context, q Querier, cur *Pinned, proposed Pins) (string, error) {
	body, _, err := proposed.Encode()
	if err != nil {
		return "", err
	}
	var id string
	if err := q.QueryRow(ctx, "SELECT pgphi.pins_replace($1, $2)", cur.Seq, string(body)).Scan(&id); err != nil {
		return "", fmt.Errorf("policy: replacing pins: %w", err)
	}
	return id, nil
}

// Describe renders p for people, one "name: value" line each.
func (p Pins) Describe() []string {
	n, err := p.Normalize()
	if err != nil {
		return []string{"invalid pins: " + err.Error()}
	}
	out := []string{
		"environment: " + n.Environment,
		"approval policy: " + describeRequirements(n.Approvals),
	}
	for _, r := range Roles() {
		out = append(out, fmt.Sprintf("role %s: group %s", r, n.Roles[r]))
	}
	out = append(out, fmt.Sprintf("allow_superuser: %v", n.AllowSuperuser), "audit public key: "+orNone(n.AuditKeyFingerprint))
	for _, col := range leakageColumns(n.AcceptLeakage, nil) {
		out = append(out, fmt.Sprintf("accept_leakage %s: %s", col, n.AcceptLeakage[col]))
	}
	if len(n.Signers) == 0 {
		out = append(out, "signers: none")
	}
	for _, s := range n.Signers {
		out = append(out, fmt.Sprintf("signer %s: %s, database role %s, key %s", s.Name, s.Role, s.DBRole, s.Fingerprint))
	}
	return out
}

// MemberOfAny reports whether the connected role (current_user) is a
// superuser or a member, directly or through other roles, of the group role
// of any pgphi role in names.
func MemberOfAny(ctx context.Context, q Querier, names RoleNames) (bool, error) {
	groups := make([]string, 0, 3)
	for _, r := range Roles() {
		groups = append(groups, names.Group(r))
	}
	var ok bool
	err := q.QueryRow(ctx, `SELECT COALESCE((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false)
		OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = ANY($1) AND pg_catalog.pg_has_role(current_user, oid, 'MEMBER'))`, groups).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("policy: checking membership: %w", err)
	}
	return ok, nil
}

// DefaultPins are the pins in force when nothing is pinned and no
// configuration proposes any: development, the default approval policy and
// role names, superuser allowed, no signers, no audit key.
func DefaultPins() Pins {
	return Pins{Environment: "development", Approvals: DefaultRequirements(), Roles: DefaultRoleNames(), AllowSuperuser: true, Signers: []PinnedSigner{}}
}
