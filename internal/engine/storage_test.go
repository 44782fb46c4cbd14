package engine

import (
	"context"
	"fmt"
	"testing"
)

// TestStorageEstimateHoldsForAnApply: the plan's estimate of a table's
// size once encrypted is close enough that a normal apply, of a few rows
// or of thousands, with searchable and plain columns, stays below the
// storage alert's 150 %, and is not so loose that three times the size
// would pass.
func TestStorageEstimateHoldsForAnApply(t *testing.T) {
	ctx := context.Background()
	for _, rows := range []int{3, 400, 5000} {
		t.Run(fmt.Sprint(rows), func(t *testing.T) {
			f := setup(t, fmt.Sprintf(`CREATE TABLE public.p (id int PRIMARY KEY, nm text, note text, born date);
				INSERT INTO public.p SELECT g, 'Name ' || g, repeat('note ', g %% 40), date '1950-01-01' + g FROM generate_series(1, %d) g;
				ANALYZE public.p;`, rows),
				"version: 1\ntables:\n  p:\n    columns:\n      nm: { class: pii, search: [exact, prefix, phonetic] }\n      note: { class: phi }\n      born: { class: phi, search: [date] }\n")
			est, err := EstimateStorage(ctx, f.pool, f.plan)
			if err != nil {
				t.Fatal(err)
			}
			if len(est) != 1 || est[0].ExpectedBytes <= est[0].CurrentBytes {
				t.Fatalf("estimate %+v", est)
			}
			f.apply(t)
			var size int64
			if err := f.pool.QueryRow(ctx, "SELECT pg_total_relation_size('public.p')").Scan(&size); err != nil {
				t.Fatal(err)
			}
			ratio := float64(size) / float64(est[0].ExpectedBytes)
			t.Logf("%d rows: before %d, expected %d, after %d (%.2f of the estimate)", rows, est[0].CurrentBytes, est[0].ExpectedBytes, size, ratio)
			if ratio > 1.5 {
				t.Errorf("%d rows: an ordinary apply took %.2f times the estimate: the storage alert would fire", rows, ratio)
			}
			if ratio < 0.33 {
				t.Errorf("%d rows: the estimate is three times the size: the alert would not see a doubling", rows)
			}
		})
	}
}
