package compliance

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/policy"
)

// proposedPins are the pins cfg proposes: environment, approval policy
// (default: production needs a dba and a healthcare_admin), signers, role
// names, allow_superuser, the audit public key and the columns whose
// search_options accept leakage below the budget.
func proposedPins(cfg *config.Config) (policy.Pins, error) {
	p := policy.Pins{Environment: cfg.Environment, AllowSuperuser: cfg.SuperuserAllowed(), AuditPublicKey: cfg.Audit.PublicKey,
		BackupRecipients: cfg.Backup.AgeRecipients}
	if cfg.Backup.MaxAge > 0 {
		p.BackupMaxAge = cfg.Backup.MaxAge.String()
	}
	fail := func(err error) (policy.Pins, error) {
		return policy.Pins{}, usage(fmt.Errorf("%s: %w", cfg.Path, err))
	}
	var err error
	p.Approvals = policy.DefaultRequirements()
	if cfg.Approvals.Require != nil {
		if p.Approvals, err = policy.ParseRequirements(cfg.Approvals.Require); err != nil {
			return fail(err)
		}
	}
	if p.Roles, err = policy.ParseRoleNames(cfg.Access.Roles); err != nil {
		return fail(err)
	}
	if cfg.Approvals.Signers != "" {
		signers, err := policy.LoadSigners(cfg.Resolve(cfg.Approvals.Signers))
		if err != nil {
			return policy.Pins{}, usage(err)
		}
		p.Signers = policy.PinSigners(signers)
	}
	for _, t := range cfg.Tables {
		for _, c := range t.Columns {
			if why := c.SearchOptions.AcceptLeakage; why != "" {
				if p.AcceptLeakage == nil {
					p.AcceptLeakage = map[string]string{}
				}
				p.AcceptLeakage[t.QualifiedName()+"."+c.Name] = why
			}
		}
	}
	if _, _, err := p.Encode(); err != nil {
		return fail(err)
	}
	return p, nil
}

// refuseOutsider refuses a role that is a member of no pgphi group (or
// cannot read the pins at all) and records the refusal through
// pgphi.audit_refusal, the one audit function every role may execute.
func (w *Wrapper) refuseOutsider(ctx context.Context, s *Session, command string, names policy.RoleNames, perr error) error {
	err := fmt.Errorf("%w: %s needs a member of a pgphi group (%s, %s or %s); connected as database role %s, a member of none",
		policy.ErrAccessDenied, command, names.Group(policy.DBA), names.Group(policy.HealthcareAdmin), names.Group(policy.AuditOfficer), s.Executor)
	if perr != nil {
		err = fmt.Errorf("%w: connected as database role %s, which may not read the pinned security policy of pgphi (a dba grants the pgphi groups with `pgphi roles init`)",
			policy.ErrAccessDenied, s.Executor)
	}
	if aerr := audit.AppendRefusal(ctx, s.Pool, command); aerr != nil {
		return refused(errors.Join(err, fmt.Errorf("the refusal could not be audited: %w", aerr)))
	}
	w.audited("refused", "policy: access denied")
	return refused(err)
}

// reconcilePins sets the session's pins: the pinned ones; on the first run
// by a dba, the config's proposal, pinned now; without a config and with
// nothing pinned, the defaults (nothing is pinned). A config that proposes
// other pins is refused (unless spec.MismatchOK), and so is any run against
// pinned production that did not connect under production's TLS policy.
func (w *Wrapper) reconcilePins(ctx context.Context, s *Session, spec Spec) error {
	pinned, err := policy.LoadPins(ctx, s.Pool)
	if errors.Is(err, policy.ErrPinsUnreadable) {
		return refused(err)
	}
	if err != nil {
		return err
	}
	if pinned == nil {
		if s.Proposed == nil {
			d := policy.DefaultPins()
			s.Pins = &d
			return nil
		}
		// The first run of a dba pins what the config proposes.
		if _, err := policy.CheckAccess(ctx, s.Pool, s.Proposed.Roles, "pins set", s.Proposed.AllowSuperuser); err != nil {
			return refused(fmt.Errorf("nothing is pinned yet, and only a dba pins the security policy (at roles init or its first run): %w", err))
		}
		if err := policy.PinInitial(ctx, s.Pool, *s.Proposed); err != nil {
			return err
		}
		if pinned, err = policy.LoadPins(ctx, s.Pool); err != nil {
			return err
		}
		if pinned == nil {
			return errors.New("the pins vanished after pinning")
		}
		w.Logf("pinned the security policy %s from %s (environment, approvals, signers, role names, allow_superuser, audit key): `pgphi pins show`", pinned.ID, s.Cfg.Path)
	}
	s.Pinned, s.Pins = pinned, &pinned.Pins
	proposedEnv := "none (no config file)"
	if s.Proposed != nil {
		proposedEnv = s.Proposed.Environment
	}
	if config.IsProductionEnvironment(pinned.Environment) && (s.Proposed == nil || !config.IsProductionEnvironment(s.Proposed.Environment)) {
		s.Pool.Close()
		return refused(fmt.Errorf("%w (pins %s): the pinned environment is production, but this run connected under the TLS policy of environment %s: refused and disconnected; run with a config that says environment: production",
			policy.ErrPinsMismatch, pinned.ID, proposedEnv))
	}
	if s.Proposed != nil {
		if d := policy.Diff(pinned.Pins, *s.Proposed); len(d) > 0 {
			if !spec.MismatchOK {
				return policy.MismatchError(pinned, d)
			}
		}
	}
	// Where the config and the pins overlap, the pins are what counts.
	s.Cfg.Environment = pinned.Environment
	return nil
}
