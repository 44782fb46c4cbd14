package lint

import (
	"strings"

	"github.com/pgphi/pgphi/internal/migrate"
)

// requireLockTimeout: the runner sets lock_timeout (default 2s) so DDL never
// queues the application behind it; a migration that turns it off (0, or
// RESET to a server default that may be 0) or raises it past a minute
// brings that queue back.
type requireLockTimeout struct{}

func (requireLockTimeout) Name() string       { return "require-lock-timeout" }
func (requireLockTimeout) Severity() Severity { return Error }
func (requireLockTimeout) Check(c *Context, s *migrate.Statement) []string {
	v := s.Node.GetVariableSetStmt()
	if v == nil || (v.Name != "lock_timeout" && v.Name != "all") {
		return nil
	}
	msg := []string{"the migration turns off or raises lock_timeout: DDL waiting for a lock queues every application query behind it"}
	if len(v.Args) == 0 {
		return msg // RESET, SET ... TO DEFAULT
	}
	a := v.Args[0].GetAConst()
	switch {
	case a == nil:
		return nil
	case a.GetIval() != nil:
		if n := a.GetIval().Ival; n == 0 || n > 60000 {
			return msg
		}
	case a.GetSval() != nil:
		t := strings.TrimSpace(strings.ToLower(a.GetSval().Sval))
		if t == "0" || strings.HasSuffix(t, "min") || strings.HasSuffix(t, "h") || strings.HasSuffix(t, "d") {
			return msg
		}
	}
	return nil
}
