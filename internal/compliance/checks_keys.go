package compliance

import (
	"context"
	"fmt"

	"github.com/pgphi/pgphi/internal/backup"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/report"
	"github.com/pgphi/pgphi/keys"
)

// keyUsageCheck: the active data key's encryption count against the AES-GCM
// limit; a warning from 2^30, a failure at 2^32.
func keyUsageCheck(ctx context.Context, s *Session) report.Check {
	c := report.Check{ID: "key-usage", Title: "active data key below its AES-GCM usage limit (2^32 encryptions)", Required: true}
	var id int32
	var n int64
	err := s.Pool.QueryRow(ctx, `SELECT d.key_id, COALESCE(u.encryptions, 0) FROM pgphi.data_keys d
		LEFT JOIN pgphi.key_usage u USING (key_id) WHERE d.state = 'active'`).Scan(&id, &n)
	if err != nil {
		c.Evidence = "cannot read the usage counter: " + err.Error()
		return c
	}
	pct := 100 * float64(n) / float64(keys.UsageLimit)
	switch {
	case n >= keys.UsageLimit:
		c.Evidence = fmt.Sprintf("data key %d has made %d encryptions, the limit: rotate the key (pgphi keys rotate) before writing more", id, n)
	case n >= keys.UsageWarn:
		c.Required = false
		c.Evidence = fmt.Sprintf("data key %d has made %d encryptions (%.1f%% of the limit): rotate the key soon (pgphi keys rotate)", id, n, pct)
	default:
		c.Passed = true
		c.Evidence = fmt.Sprintf("data key %d has made %d encryptions (%.4f%% of the limit)", id, n, pct)
	}
	return c
}

// backupCheck: in production, a backup verified by restoring it, taken
// within the pinned backup.max_age; elsewhere shown, not required.
func backupCheck(ctx context.Context, s *Session) report.Check {
	prod := s.Pins != nil && s.Pins.Environment == "production"
	c := report.Check{ID: "backup", Title: "verified backup within the pinned maximum age", Required: prod}
	maxAge := policy.DefaultBackupMaxAge
	if s.Pins != nil {
		maxAge = s.Pins.MaxBackupAge()
	}
	st, err := backup.LatestVerified(ctx, s.Pool, maxAge)
	if err != nil {
		c.Evidence = err.Error()
		return c
	}
	c.Passed = st.OK
	c.Evidence = st.Describe()
	if !st.OK {
		c.Evidence += ": take one with pgphi backup --out FILE and verify it with pgphi backup verify FILE"
	}
	if !prod {
		c.Evidence += " (required in production)"
	}
	return c
}
