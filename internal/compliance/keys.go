package compliance

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/keys"
)

// ErrKeySource wraps an error in finding the key-encryption key (no
// passphrase, key file or token configured, or one that cannot be read):
// the operator's setup, not the database.
var ErrKeySource = fmt.Errorf("no usable key-encryption key")

// LoadKeys unwraps the data keys of pool's database with the KEK the
// environment names (keys.ProviderFromEnv: a passphrase, key file or token,
// read once and never printed). Every command that needs keys loads them
// here, so they come from one place and the KEK is dropped once unwrapped.
func LoadKeys(ctx context.Context, pool *pgxpool.Pool) (*keys.Keyring, error) {
	p, err := keys.ProviderFromEnv()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeySource, err)
	}
	return keys.Load(ctx, pool, p)
}
