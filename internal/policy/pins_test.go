package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/pgtest"
)

func testPins(f *fixture) Pins {
	return Pins{Environment: "production", Approvals: DefaultRequirements(), Roles: DefaultRoleNames(),
		Signers: PinSigners(f.signers), AuditPublicKey: AuthorizedKey(f.carol.pub) + " auditor@x"}
}

func TestPinsDiffAndEncode(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := testPins(f)
	_, id, err := p.Encode()
	if err != nil || !strings.HasPrefix(id, "pins-") || len(id) != 29 {
		t.Fatalf("Encode: %q, %v", id, err)
	}
	// Canonical: zero counts, comments and signer order do not change the id.
	q := p
	q.Approvals = Requirements{"production": {DBA: 1, HealthcareAdmin: 1, AuditOfficer: 0}, "staging": {DBA: 0}}
	q.AuditPublicKey = AuthorizedKey(f.carol.pub)
	q.Signers = append([]PinnedSigner{}, p.Signers...)
	q.Signers[0], q.Signers[1] = q.Signers[1], q.Signers[0]
	if q.ID() != id || len(Diff(p, q)) != 0 {
		t.Fatalf("equivalent pins differ: %s vs %s: %v", q.ID(), id, Diff(p, q))
	}
	for _, c := range []struct {
		change func(*Pins)
		want   string
	}{
		{func(x *Pins) { x.Environment = "staging" }, "environment: pinned production, the configuration says staging"},
		{func(x *Pins) { x.Approvals = Requirements{"production": {DBA: 1}} }, "approval policy (approvals.require)"},
		{func(x *Pins) { x.Approvals = Requirements{} }, "no approvals anywhere"},
		{func(x *Pins) { x.Signers = PinSigners(append(f.signers[:0:0], f.signers[0])) }, "signers (approvals.signers): the configuration removes bob"},
		{func(x *Pins) {
			s := append([]Signer{}, f.signers...)
			s = append(s, Signer{Name: "mallory", Role: DBA, DBRole: "mallory", Key: f.mallo.pub, Fingerprint: Fingerprint(f.mallo.pub)})
			x.Signers = PinSigners(s)
		}, "the configuration adds mallory (dba"},
		{func(x *Pins) {
			s := append([]Signer{}, f.signers...)
			s[0].DBRole = "postgres"
			x.Signers = PinSigners(s)
		}, "changed alice"},
		{func(x *Pins) { x.Roles = RoleNames{DBA: "my_dba"} }, "role names (access.roles.dba): pinned pgphi_dba, the configuration says my_dba"},
		{func(x *Pins) { x.AllowSuperuser = true }, "access.allow_superuser: pinned false, the configuration says true"},
		{func(x *Pins) { x.AuditPublicKey = "" }, "audit.public_key: pinned " + Fingerprint(f.carol.pub) + ", the configuration says none"},
	} {
		x := p
		c.change(&x)
		d := strings.Join(Diff(p, x), "\n")
		if !strings.Contains(d, c.want) {
			t.Errorf("diff %q does not say %q", d, c.want)
		}
		if x.ID() == id {
			t.Errorf("changed pins (%s) keep the id", c.want)
		}
	}
}

// the security policy lives in the database. Only a dba pins
// and replaces it, through definer functions; no other role writes it, and
// the first pins cannot be overwritten by a second "initial" pinning.
func TestPinsAttacks(t *testing.T) {
	ctx := testContext(t)
	u, pool := setup(t)
	actors := pgtest.NewActors(t, u)
	if _, err := InitRoles(ctx, pool, DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	p := testPins(f)
	ha, ao, out, dba := poolAs(t, u, actors.HealthcareAdmin), poolAs(t, u, actors.AuditOfficer), poolAs(t, u, actors.Outsider), poolAs(t, u, actors.DBA)

	// Before anything is pinned, a healthcare_admin member cannot pin its
	// own policy (say: no approvals, itself as signer).
	weak := p
	weak.Approvals = Requirements{}
	for who, q := range map[string]*pgxpool.Pool{"healthcare_admin": ha, "audit_officer": ao} {
		wantDenied(t, who+" PinInitial", errors.Unwrap(PinInitial(ctx, q, weak)))
	}
	if err := PinInitial(ctx, out, weak); !errors.Is(err, ErrPinsUnreadable) {
		t.Errorf("outsider PinInitial: %v", err)
	}
	if got, err := LoadPins(ctx, pool); err != nil || got != nil {
		t.Fatalf("pinned by a non-dba: %+v, %v", got, err)
	}
	// The dba member pins.
	if err := PinInitial(ctx, dba, p); err != nil {
		t.Fatalf("PinInitial as dba member: %v", err)
	}
	cur, err := LoadPins(ctx, ha)
	if err != nil || cur == nil || cur.ID != p.ID() || cur.Seq != 1 || cur.PinnedBy != actors.DBA || cur.Environment != "production" {
		t.Fatalf("LoadPins as healthcare_admin: %+v, %v", cur, err)
	}
	if _, err := LoadPins(ctx, ao); err != nil {
		t.Fatalf("LoadPins as audit_officer: %v", err)
	}
	if _, err := LoadPins(ctx, out); !errors.Is(err, ErrPinsUnreadable) {
		t.Fatalf("LoadPins as outsider: %v, want ErrPinsUnreadable", err)
	}
	// Same pins again: fine; other pins: a mismatch, and nothing changes,
	// even for the dba (pins_initial refuses once anything is pinned).
	if err := PinInitial(ctx, dba, p); err != nil {
		t.Fatalf("PinInitial again with the same pins: %v", err)
	}
	err = PinInitial(ctx, dba, weak)
	if !errors.Is(err, ErrPinsMismatch) || !strings.Contains(err.Error(), "approval policy") || !strings.Contains(err.Error(), "pgphi pins set --from-config") {
		t.Fatalf("PinInitial with other pins: %v", err)
	}
	body, _, _ := weak.Encode()
	var id string
	if err := dba.QueryRow(ctx, "SELECT pgphi.pins_initial($1)", string(body)).Scan(&id); err == nil || !strings.Contains(err.Error(), "already pinned") {
		t.Fatalf("pins_initial over existing pins: %q, %v", id, err)
	}
	// Direct writes and the definer functions are refused to the others.
	for who, q := range map[string]*pgxpool.Pool{"healthcare_admin": ha, "audit_officer": ao, "outsider": out} {
		_, err := q.Exec(ctx, `INSERT INTO pgphi.pins (seq, pins_id, body, pinned_at, pinned_by) VALUES (2, 'pins-x', $1, now(), 'x')`, string(body))
		wantDenied(t, who+" INSERT into pgphi.pins", err)
		_, err = q.Exec(ctx, `UPDATE pgphi.pins SET body = $1`, string(body))
		wantDenied(t, who+" UPDATE pgphi.pins", err)
		_, err = q.Exec(ctx, `DELETE FROM pgphi.pins`)
		wantDenied(t, who+" DELETE FROM pgphi.pins", err)
		_, err = Replace(ctx, q, cur, weak)
		wantDenied(t, who+" pins_replace", errors.Unwrap(err))
	}
	// The dba replaces (after the approvals the CLI checks); a stale
	// version is refused.
	newID, err := Replace(ctx, dba, cur, weak)
	if err != nil || newID != weak.ID() {
		t.Fatalf("Replace as dba: %q, %v", newID, err)
	}
	if _, err := Replace(ctx, dba, cur, p); err == nil || !strings.Contains(err.Error(), "changed meanwhile") {
		t.Fatalf("Replace of a stale version: %v", err)
	}
	now, err := LoadPins(ctx, ao)
	if err != nil || now.Seq != 2 || now.ID != weak.ID() || len(now.Approvals) != 0 {
		t.Fatalf("after Replace: %+v, %v", now, err)
	}
	// A stored document edited by the owner no longer matches its id:
	// LoadPins fails rather than trusting it.
	if _, err := pool.Exec(ctx, `UPDATE pgphi.pins SET body = replace(body, '"allow_superuser":false', '"allow_superuser":true') WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPins(ctx, ha); err == nil || !strings.Contains(err.Error(), "does not match its document") {
		t.Fatalf("edited pins: %v", err)
	}
}

// The acceptance of search leakage is part of the pins: a proposal that
// adds, drops or rewords it differs from the pinned policy; pins without it
// keep their ids; a reason is required.
func TestPinsAcceptLeakage(t *testing.T) {
	base := DefaultPins()
	body, id, err := base.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(body), "accept_leakage") {
		t.Fatalf("pins without an acceptance mention it: %s", body)
	}
	empty := base
	empty.AcceptLeakage = map[string]string{}
	if empty.ID() != id {
		t.Fatalf("an empty acceptance changed the pins id")
	}
	withIt := base
	withIt.AcceptLeakage = map[string]string{"public.patient.last_name": "speed"}
	if withIt.ID() == id {
		t.Fatalf("an acceptance did not change the pins id")
	}
	for _, c := range []struct {
		pinned, proposed Pins
		says             string
	}{
		{base, withIt, "accept_leakage of public.patient.last_name: not pinned, the configuration proposes it"},
		{withIt, base, "accept_leakage of public.patient.last_name: pinned, the configuration no longer proposes it"},
		{withIt, Pins{Environment: base.Environment, Approvals: base.Approvals, Roles: base.Roles, AllowSuperuser: true,
			AcceptLeakage: map[string]string{"public.patient.last_name": "other"}}, "gives another reason"},
	} {
		d := Diff(c.pinned, c.proposed)
		if len(d) != 1 || !strings.Contains(d[0], c.says) {
			t.Errorf("Diff = %q, want one difference saying %q", d, c.says)
		}
	}
	if d := Diff(withIt, withIt); len(d) != 0 {
		t.Errorf("equal pins differ: %q", d)
	}
	for _, why := range []string{"", "  ", strings.Repeat("x", MaxLeakageReason+1)} {
		bad := base
		bad.AcceptLeakage = map[string]string{"public.patient.last_name": why}
		if _, _, err := bad.Encode(); err == nil {
			t.Errorf("reason of %d characters accepted", len(why))
		}
	}
	if got := withIt.Describe(); !slices.Contains(got, "accept_leakage public.patient.last_name: speed") {
		t.Errorf("Describe does not show the acceptance: %q", got)
	}
}
