//go:build cgo

package migrate

import (
	"errors"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
)

// parseSQL parses text with libpg_query, PostgreSQL's own parser. On a
// syntax error it returns the error's message and its 1-based offset.
func parseSQL(text string) (*pg_query.ParseResult, int, error) {
	res, err := pg_query.Parse(text)
	if err != nil {
		var pe *parser.Error
		if errors.As(err, &pe) {
			return nil, pe.Cursorpos, errors.New(pe.Message)
		}
		return nil, 0, err
	}
	return res, 0, nil
}
