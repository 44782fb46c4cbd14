package compliance

import (
	"context"
	"fmt"
	"strings"
	"syscall"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/report"
)

// Checklist runs the pre-flight checks of s's plan, each with its
// evidence: TLS, the audit trail, the role, the keys and their usage,
// backups, approvals, validation, the server's logging, disk, triggers,
// dependencies, owner code and blind index leakage. It changes nothing;
// the check command records and prints it.
func (w *Wrapper) Checklist(ctx context.Context, s *Session) *report.Checklist {
	cl := &report.Checklist{PlanID: s.Plan.ID}
	add := func(c report.Check) { cl.Items = append(cl.Items, c) }

	// TLS: the connection as it is, and the policy for this environment.
	tlsCheck := report.Check{ID: "tls", Title: "connection encrypted as the environment requires", Required: true, Passed: true}
	if conn, err := s.Pool.Acquire(ctx); err == nil {
		tlsCheck.Evidence = dbconn.DescribeConn(conn.Conn().PgConn())
		conn.Release()
	}
	tlsCheck.Evidence += fmt.Sprintf("; environment %s (production requires verify-full or a pinned key off loopback)", s.Cfg.Environment)
	add(tlsCheck)

	// Audit sink.
	ac := report.Check{ID: "audit", Title: "audit trail writable and chain valid", Required: true}
	if rep, err := audit.Verify(ctx, s.Pool); err != nil {
		ac.Evidence = "cannot verify: " + err.Error()
	} else {
		ac.Passed = len(rep.Problems) == 0
		ac.Evidence = fmt.Sprintf("%d records, head #%d, %d problems; mirror %s", rep.Records, rep.HeadSeq, len(rep.Problems), s.Cfg.Resolve(s.Cfg.Audit.File))
	}
	add(ac)

	// Role.
	rc := report.Check{ID: "role", Title: "connected role may run apply", Required: true}
	if role, err := policy.CheckAccess(ctx, s.Pool, s.Pins.Roles, "apply", s.Pins.AllowSuperuser); err != nil {
		rc.Evidence = err.Error()
	} else {
		rc.Passed, rc.Evidence = true, "acts as "+string(role)
	}
	add(rc)

	// Keys.
	kc := report.Check{ID: "keys", Title: "keys loadable", Required: true}
	if ring, err := LoadKeys(ctx, s.Pool); err != nil {
		kc.Evidence = err.Error()
	} else {
		kc.Passed, kc.Evidence = true, fmt.Sprintf("data key %d active (key material not shown)", ring.ActiveKeyID())
	}
	add(kc)
	add(keyUsageCheck(ctx, s))
	add(backupCheck(ctx, s))

	// Approvals.
	apc := report.Check{ID: "approvals", Title: "approvals present for this plan", Required: true}
	if res, err := w.ApprovalResult(ctx, s, s.Plan.ID, "apply"); err != nil {
		apc.Evidence = err.Error()
	} else {
		apc.Passed = true
		if len(s.Pins.Approvals[s.Pins.Environment]) == 0 {
			apc.Evidence = "environment " + s.Pins.Environment + " requires no approvals (pinned policy)"
		} else {
			var who []string
			for _, ap := range res.Valid {
				who = append(who, ap.Signer+" ("+string(ap.Role)+")")
			}
			apc.Evidence = "approved by " + strings.Join(who, ", ")
		}
	}
	add(apc)

	// Validation.
	vc := report.Check{ID: "validation", Title: "PHI validation rules hold", Required: s.Cfg.ValidationFails()}
	cl.ValidationRules = -1
	if res, err := engine.Validate(ctx, s.Pool, s.Cfg, s.Plan); err != nil {
		vc.Evidence = err.Error()
	} else {
		vc.Passed = len(res.Violations) == 0
		var v []string
		for _, x := range res.Violations {
			v = append(v, fmt.Sprintf("%s.%s %s: %d rows", x.Table, x.Column, x.Rule, x.Rows))
		}
		cl.ValidationRules, cl.ValidationViolations = len(res.Checked), v
		vc.Evidence = fmt.Sprintf("%d rules checked", len(res.Checked))
		if len(v) > 0 {
			vc.Evidence += "; violations: " + strings.Join(v, "; ")
		}
	}
	add(vc)

	add(report.ServerLogSettings(ctx, s.Pool))
	add(report.Pgaudit(ctx, s.Pool))
	var tables []string
	for _, t := range s.Plan.Tables {
		tables = append(tables, t.QualifiedName())
	}
	add(report.Disk(ctx, s.Pool, tables, freeBytes))
	add(report.Triggers(engine.CheckTriggers(ctx, s.Pool, s.Plan)))
	add(unprotectedCheck(ctx, s))
	add(report.Dependencies(s.Plan.CheckBlockers(), s.Plan.Dependencies))
	ownerFindings, ownerErr := engine.OwnerCodeReport(ctx, s.Pool, s.Plan)
	add(report.OwnerCode(ownerFindings, ownerErr, s.Cfg.IsProduction()))
	add(leakageCheck(ctx, s))
	return cl
}

func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// unprotectedCheck lists the configured columns without an encrypted
// column: before the first apply, all of them; after it, those a schema
// migration added since. It warns: apply, which this check precedes,
// protects them.
func unprotectedCheck(ctx context.Context, s *Session) report.Check {
	c := report.Check{ID: "unprotected", Title: "every configured column protected"}
	st, err := engine.GetStatus(ctx, s.Pool, s.Plan)
	if err != nil {
		c.Evidence = "cannot count: " + err.Error()
		return c
	}
	var cols []string
	for _, u := range st.Unprotected() {
		cols = append(cols, fmt.Sprintf("%s.%s (%d values)", u.Table, u.Column, u.Pending))
	}
	if len(cols) == 0 {
		c.Passed, c.Evidence = true, fmt.Sprintf("%d columns, each with its encrypted column", len(st.Columns))
		return c
	}
	c.Evidence = "UNPROTECTED, plaintext only until `pgphi apply` runs: " + strings.Join(cols, ", ")
	return c
}
