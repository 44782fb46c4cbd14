package keys

import (
	"testing"

	"github.com/pgphi/pgphi/internal/pgtest"
)

// A few tests need a PostgreSQL server; it starts when the first asks.
func TestMain(m *testing.M) { pgtest.MainLazy(m) }
