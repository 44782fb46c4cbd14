package keys

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Usage limits of a data key. Column keys are derived from a data key per
// column, but a conservative count is kept per data key: AES-GCM with random
// 96-bit nonces must not be used for more than 2^32 encryptions under one key
// (NIST SP 800-38D, section 8.3).
const (
	// UsageWarn is where `pgphi check` starts warning: rotate soon.
	UsageWarn int64 = 1 << 30
	// UsageLimit is where writers and `pgphi check` refuse.
	UsageLimit int64 = 1 << 32
)

// ErrUsageLimit is returned when sealing more values under a data key
// would pass UsageLimit.
var ErrUsageLimit = errors.New("keys: the data key reached its limit of 2^32 encryptions")

// Querier runs one statement returning one row.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CountEncryptions adds n encryptions under data key id to the key's
// counter in the database (pgphi.key_usage_add). Call it before the
// ciphertexts are stored, in their transaction or before it, so that the
// count never falls behind what is stored. It returns an error wrapping
// ErrUsageLimit when the count passes UsageLimit (the transaction should
// then be rolled back), and an error when the key no longer exists.
func CountEncryptions(ctx context.Context, q Querier, id uint32, n int64) error {
	for n > 0 {
		step := min(n, 1<<31)
		var total int64
		if err := q.QueryRow(ctx, "SELECT pgphi.key_usage_add($1, $2)", int64(id), step).Scan(&total); err != nil {
			return fmt.Errorf("keys: counting encryptions under data key %d: %w", id, err)
		}
		if total > UsageLimit {
			return fmt.Errorf("%w: data key %d has made %d", ErrUsageLimit, id, total)
		}
		n -= step
	}
	return nil
}

// Reserver hands out encryptions under the active data key in blocks
// counted ahead in the database, so that a writer sealing one value at a
// time (the application API) pays one round trip per block, not per value.
// A process that stops loses at most the rest of its block: the count is
// too high by that much, never too low. Safe for concurrent use.
type Reserver struct {
	db    Querier
	block int64

	mu   sync.Mutex
	id   uint32
	left int64
}

// NewReserver returns a Reserver counting blocks of block encryptions in db.
func NewReserver(db Querier, block int64) *Reserver {
	return &Reserver{db: db, block: max(block, 1)}
}

// Take reserves one encryption under data key id.
func (r *Reserver) Take(ctx context.Context, id uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.id != id {
		r.id, r.left = id, 0
	}
	if r.left == 0 {
		if err := CountEncryptions(ctx, r.db, id, r.block); err != nil {
			return err
		}
		r.left = r.block
	}
	r.left--
	return nil
}
