package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgphi/pgphi/internal/alert"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/metrics"
	"github.com/pgphi/pgphi/internal/search"
	"github.com/pgphi/pgphi/keys"
)

// accuracySample is how many random values of each searchable column the
// accuracy oracle searches for, per search kind.
const accuracySample = 3

// checkSearchAccuracy runs the accuracy oracle (search.CheckAccuracy) after
// a verification: below 95 % exact answers on a table, the search_accuracy
// alert fires and the verification fails.
// The tables below the threshold are added to res (nil: not recorded).
func (a *app) checkSearchAccuracy(ctx context.Context, s *session, ring *keys.Keyring, m *metrics.Recorder, res *engine.VerifyResult) error {
	sr, err := search.New(ctx, s.Pool, ring, s.Plan)
	if err != nil {
		return err
	}
	accs, err := sr.CheckAccuracy(ctx, accuracySample)
	if err != nil {
		return err
	}
	var bad []string
	for _, acc := range accs {
		m.SearchAccuracy(acc.Table, acc.Queries, acc.Ratio())
		a.logf("search accuracy %s: %d of %d sampled searches answered exactly as the plaintext does", acc.Table, acc.Exact, acc.Queries)
		if acc.Ratio() < alert.DefaultMinAccuracy {
			s.Alerts.Fire(alert.Alert{Threshold: alert.SearchAccuracy, Measured: acc.Ratio(), Limit: alert.DefaultMinAccuracy, Unit: "ratio", Table: acc.Table})
			bad = append(bad, fmt.Sprintf("%s (%d of %d exact; columns %s)", acc.Table, acc.Exact, acc.Queries, strings.Join(acc.Columns, ", ")))
			if res != nil {
				res.InaccurateSearch = append(res.InaccurateSearch, acc.Table)
			}
		}
	}
	if len(bad) > 0 {
		return withCode(ExitFailed, fmt.Errorf("verification failed: encrypted search answers differ from the plaintext answers below %.0f%% accuracy on %s; the blind index terms of those columns do not match their values (see the mismatches of `pgphi verify`; `pgphi apply` recomputes terms of rows it marks)",
			100*alert.DefaultMinAccuracy, strings.Join(bad, "; ")))
	}
	return nil
}
