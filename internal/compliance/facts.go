package compliance

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"time"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/backup"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/report"
)

// columnLeakage measures the leakage of the blind indexes for the report,
// keyed by (qualified table, column), when the keys are at hand (a dba or
// healthcare_admin with the KEK); without them the report says "not
// measured" and the leakage item of the last check stands as evidence.
func columnLeakage(ctx context.Context, s *Session) (map[[2]string][]report.LeakageFact, error) {
	ring, err := LoadKeys(ctx, s.Pool)
	if err != nil {
		return nil, nil
	}
	measured, err := engine.MeasureLeakage(ctx, s.Pool, ring, s.Plan, s.Cfg.IsProduction())
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	out := map[[2]string][]report.LeakageFact{}
	for _, m := range measured {
		k := [2]string{m.Table, m.Column}
		for _, f := range m.Families {
			out[k] = append(out[k], report.LeakageFact{Family: string(f.SubKind), MeanValues: f.MeanValuesPerTerm,
				MinValues: float64(f.MinValuesPerTerm), AcceptedLeakage: m.Accepted != "", MeasuredAt: now})
		}
		out[k] = append(out[k], report.LeakageFact{Family: "whole term set", MeanValues: m.MeanValuesPerArray,
			MinValues: float64(m.MinValuesPerArray), AcceptedLeakage: m.Accepted != "", MeasuredAt: now})
	}
	return out, nil
}

// Facts gathers what the compliance report states about s's plan, from
// what is recorded (plans, checklists, verifications, approvals under the
// pinned policy, the audit trail and its checkpoints, alerts, migrations,
// backups) and, with the keys at hand, the measured leakage of the blind
// indexes. The report renders them; it decides nothing else.
func (w *Wrapper) Facts(ctx context.Context, s *Session) (*report.Facts, error) {
	f := &report.Facts{PlanID: s.Plan.ID, Environment: s.Cfg.Environment, GeneratedAt: time.Now().UTC()}
	_ = s.Pool.QueryRow(ctx, "SELECT current_database()").Scan(&f.Database)
	_ = s.Pool.QueryRow(ctx, "SELECT created_at, completed_at FROM pgphi.plans WHERE plan_id = $1", s.Plan.ID).Scan(&f.PlanCreated, &f.Completed)
	_ = s.Pool.QueryRow(ctx, "SELECT max(cleaned_at) FROM pgphi.protected_columns").Scan(&f.CleanedUp)
	if bc := backupCheck(ctx, s); bc.Evidence != "" {
		bf := &report.BackupFact{OK: bc.Passed, Required: bc.Required, Evidence: bc.Evidence}
		if st, err := backup.LatestVerified(ctx, s.Pool, s.Pins.MaxBackupAge()); err == nil {
			bf.Format, bf.BackupID = st.Format, st.BackupID
		}
		f.Backup = bf
	}

	st, err := engine.GetStatus(ctx, s.Pool, s.Plan)
	if err != nil {
		return nil, err
	}
	for _, c := range st.Columns {
		cf := report.ColumnFact{Table: c.Table, Column: c.Column, Phase: "planned", Encrypted: c.Encrypted, Pending: c.Pending}
		if st.Applied {
			cf.Phase = "expanded"
		}
		for _, t := range s.Plan.Tables {
			for _, tc := range t.Columns {
				if t.QualifiedName() != c.Table || tc.Name != c.Column {
					continue
				}
				if tc.Cleaned {
					cf.Phase = "cleaned"
				}
				var search []string
				for _, k := range tc.Search {
					search = append(search, string(k))
				}
				cf.Class, cf.Search = tc.Class, strings.Join(search, ", ")
			}
		}
		f.Columns = append(f.Columns, cf)
	}
	measured, err := columnLeakage(ctx, s)
	if err != nil {
		return nil, err
	}
	for i := range f.Columns {
		f.Columns[i].Leakage = measured[[2]string{f.Columns[i].Table, f.Columns[i].Column}]
	}
	if f.Checklist, err = report.Latest(ctx, s.Pool, s.Plan.ID); err != nil {
		return nil, err
	}
	// Approvals: valid ones only (Check re-verifies every signature), under
	// the pinned policy.
	if len(s.Pins.Approvals[s.Pins.Environment]) == 0 {
		f.ApprovalsOK, f.ApprovalNote = true, "environment "+s.Pins.Environment+" requires no approvals"
	} else if res, err := w.ApprovalResult(ctx, s, s.Plan.ID, "apply"); err != nil {
		f.ApprovalsOK, f.ApprovalNote = false, err.Error()
	} else {
		f.ApprovalsOK, f.ApprovalNote = true, "the environment's pinned approval policy is met"
		for _, ap := range res.Valid {
			f.Approvals = append(f.Approvals, report.ApprovalFact{Signer: ap.Signer, Role: string(ap.Role), SignedAt: ap.SignedAt, Fingerprint: ap.Fingerprint,
				PlanID: ap.PlanID, Command: ap.Command, Environment: ap.Environment, Database: ap.Database, Expires: ap.Expires})
		}
	}
	// Validation evidence comes from the pre-flight checklist when there is
	// one: after cleanup there is no plaintext left to validate.
	if f.Checklist != nil && f.Checklist.ValidationRules >= 0 {
		vf := &report.ValidationFact{Rules: f.Checklist.ValidationRules, Violations: f.Checklist.ValidationViolations,
			Source: "pre-flight check " + f.Checklist.CheckedAt.UTC().Format(time.RFC3339)}
		f.Validation = vf
	} else if res, err := engine.Validate(ctx, s.Pool, s.Cfg, s.Plan); err == nil {
		vf := &report.ValidationFact{Rules: len(res.Checked), Source: "live"}
		for _, x := range res.Violations {
			vf.Violations = append(vf.Violations, fmt.Sprintf("%s.%s %s: %d rows", x.Table, x.Column, x.Rule, x.Rows))
		}
		f.Validation = vf
	}
	var v report.VerifyFact
	if err := s.Pool.QueryRow(ctx, `SELECT finished_at, ok, rows_checked, values_checked, mismatches, pending FROM pgphi.verifications
		WHERE plan_id = $1 AND recorded_by IS NOT NULL AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1`, s.Plan.ID).Scan(&v.At, &v.OK, &v.Rows, &v.Values, &v.Mismatches, &v.Pending); err == nil {
		f.Verification = &v
	}
	if rep, err := audit.Verify(ctx, s.Pool); err == nil {
		f.Audit = report.AuditFact{Records: rep.Records, HeadSeq: rep.HeadSeq, Head: rep.Head, Valid: len(rep.Problems) == 0, Problems: len(rep.Problems)}
	}
	f.Audit.Checkpoint = latestCheckpoint(ctx, s)
	if f.Alerts, err = report.RecordedAlerts(ctx, s.Pool, s.Plan.ID); err != nil {
		return nil, err
	}
	if f.Migrations, err = report.MigrationHistory(ctx, s.Pool); err != nil {
		return nil, err
	}
	return f, nil
}

// latestCheckpoint is the newest signed checkpoint of the audit trail,
// proven against the pinned audit key (signature, and the chain extends
// the signed record) when one is pinned.
func latestCheckpoint(ctx context.Context, s *Session) *report.CheckpointFact {
	var cp audit.Checkpoint
	err := s.Pool.QueryRow(ctx, `SELECT seq, hash, signed_at, key_fingerprint, signature FROM pgphi.audit_checkpoints
		ORDER BY seq DESC, signed_at DESC LIMIT 1`).Scan(&cp.Seq, &cp.Hash, &cp.Time, &cp.KeyFingerprint, &cp.Signature)
	if err != nil {
		return nil
	}
	f := &report.CheckpointFact{Seq: cp.Seq, Hash: cp.Hash, SignedAt: cp.Time, KeyFingerprint: cp.KeyFingerprint}
	if s.Pins.AuditPublicKey == "" {
		f.Note = "no audit public key is pinned to check its signature against"
		return f
	}
	pub, err := policy.ParseAuthorizedKey(s.Pins.AuditPublicKey)
	if err != nil {
		f.Note = "the pinned audit key does not parse"
		return f
	}
	if err := audit.ProveCheckpoint(ctx, s.Pool, &cp, []ed25519.PublicKey{pub}); err != nil {
		f.Note = err.Error()
		return f
	}
	f.Proven = true
	return f
}
