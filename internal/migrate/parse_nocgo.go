//go:build !cgo

package migrate

import (
	"errors"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// ErrNoParser: this pgphi was built without cgo, so without libpg_query.
var ErrNoParser = errors.New("this pgphi was built without cgo and has no SQL parser (libpg_query): build it with CGO_ENABLED=1 to run or lint migrations")

func parseSQL(string) (*pg_query.ParseResult, int, error) { return nil, 0, ErrNoParser }
