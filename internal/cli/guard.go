package cli

import (
	"context"
	"os"
	"strings"

	"github.com/pgphi/pgphi/internal/compliance"
	"github.com/pgphi/pgphi/internal/config"
)

// The compliance wrapper (package compliance) runs every command that
// reaches a database; the command line supplies how to load the config,
// connect and resolve the plan.
type (
	session   = compliance.Session
	outcome   = compliance.Outcome
	guardSpec = compliance.Spec
)

func (a *app) wrapper() *compliance.Wrapper {
	var audited func(event, class string)
	if m := a.metrics; m != nil {
		audited = func(event, class string) {
			m.AuditRecord(event)
			if class != "" {
				m.Error(class)
			}
			if event != "start" && event != "alert" {
				m.Finished(event)
			}
		}
	}
	return &compliance.Wrapper{
		Audited: audited,
		LoadConfig: func(optional bool) (*config.Config, error) {
			if optional {
				return a.loadConfigOptional()
			}
			return a.loadConfig()
		},
		Connect:     a.connect,
		ResolvePlan: a.resolvePlan,
		Refused:     func(err error) bool { return ExitCode(err) == ExitRefused },
		Logf:        a.logf,
	}
}

// guarded runs body inside the compliance wrapper (compliance.Wrapper.Run).
func (a *app) guarded(ctx context.Context, spec guardSpec, reason string, body func(ctx context.Context, s *session, out *outcome) error) error {
	return a.wrapper().Run(ctx, spec, reason, body)
}

// reasonOrEnv lets a pipeline give the reason of a long operation in
// $PGPHI_REASON; a search's reason must always be given explicitly.
func reasonOrEnv(flag string) string {
	if strings.TrimSpace(flag) != "" {
		return flag
	}
	return os.Getenv("PGPHI_REASON")
}
