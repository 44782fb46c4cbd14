package compliance

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/report"
)

// leakageCheck is the check that every searchable column keeps each term
// and term array shared by at least two distinct values on average, or has
// its leakage accepted in the pinned policy. Required in production.
func leakageCheck(ctx context.Context, s *Session) report.Check {
	c := report.Check{ID: "leakage", Title: "blind index terms shared by >= 2 distinct values", Required: s.Cfg.IsProduction()}
	ring, err := LoadKeys(ctx, s.Pool)
	if err != nil {
		c.Evidence = "cannot measure without keys: " + err.Error()
		return c
	}
	ls, err := engine.MeasureLeakage(ctx, s.Pool, ring, s.Plan, s.Cfg.IsProduction())
	if err != nil {
		c.Evidence = "cannot measure: " + err.Error()
		return c
	}
	c.Passed = true
	var parts []string
	for _, l := range ls {
		name := l.Table + "." + l.Column
		why := s.Pins.AcceptLeakage[name]
		e := fmt.Sprintf("%s %s (min over families and arrays)", name, engine.FormatShare(l.Min()))
		switch {
		case l.Below() && why != "":
			e += ", accepted by the pinned policy: " + why
		case l.Below():
			e += ", BELOW 2 and not accepted"
			c.Passed = false
		}
		parts = append(parts, e)
	}
	if len(parts) == 0 {
		c.Evidence = "no searchable columns"
	} else {
		c.Evidence = strings.Join(parts, "; ")
	}
	return c
}
