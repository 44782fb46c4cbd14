package compliance

import (
	"context"
	"fmt"

	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/hooks"
	"github.com/pgphi/pgphi/internal/policy"
)

func (w *Wrapper) runValidation(ctx context.Context, s *Session) error {
	res, err := engine.Validate(ctx, s.Pool, s.Cfg, s.Plan)
	if err != nil {
		return err
	}
	for _, v := range res.Violations {
		w.Logf("validation: %s.%s %s: %d rows violate it", v.Table, v.Column, v.Rule, v.Rows)
	}
	if len(res.Violations) > 0 && s.Cfg.ValidationFails() {
		return fmt.Errorf("%w: %d rules violated (validation.on_violation: fail)", errValidation, len(res.Violations))
	}
	return nil
}

func hookConfig(cfg *config.Config) hooks.Config {
	// hooks.Run resolves a relative hook path against Dir, the config
	// file's directory, and never searches PATH.
	hc := hooks.Config{Hooks: map[hooks.Phase][]string{}, Timeout: cfg.Hooks.Timeout, Dir: cfg.Resolve(".")}
	for phase, cmds := range cfg.Hooks.Phases {
		hc.Hooks[hooks.Phase(phase)] = append(hc.Hooks[hooks.Phase(phase)], cmds...)
	}
	return hc
}

// CheckApprovals checks the approvals of id for command under the pins:
// their requirements for the pinned environment, their signers, and the
// connected database role as the executor.
func (w *Wrapper) CheckApprovals(ctx context.Context, s *Session, id, command string) error {
	_, err := w.ApprovalResult(ctx, s, id, command)
	return err
}

// ApprovalResult is CheckApprovals with what it found: the approvals that
// counted and the rows it ignored (bad signature, expired, another target).
func (w *Wrapper) ApprovalResult(ctx context.Context, s *Session, id, command string) (*policy.Result, error) {
	p := s.Pins
	if len(p.Approvals[p.Environment]) == 0 {
		return &policy.Result{}, nil
	}
	signers := p.SignerList()
	if len(signers) == 0 {
		return nil, fmt.Errorf("%w: environment %s requires approvals but no signers are pinned (approvals.signers, then `pgphi pins set --from-config`)", policy.ErrApprovalRequired, p.Environment)
	}
	res, err := policy.Check(ctx, s.Pool, signers, p.Approvals, policy.Target{PlanID: id, Command: command, Environment: p.Environment}, s.Executor)
	if err == nil {
		for _, n := range res.Ignored {
			w.Logf("note: %s", n)
		}
	}
	return res, err
}
