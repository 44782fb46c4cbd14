package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// rowVals are the protected values of one row as text (nil = NULL), in the
// order of phiColumns. They stay in memory and are only ever compared.
type rowVals [7]*string

func (v rowVals) equal(w rowVals) bool {
	for i := range v {
		if (v[i] == nil) != (w[i] == nil) || (v[i] != nil && *v[i] != *w[i]) {
			return false
		}
	}
	return true
}

// colIndex is the position of a protected column in rowVals.
func colIndex(c string) int {
	for i, p := range phiColumns {
		if p == c {
			return i
		}
	}
	panic("not a protected column: " + c)
}

// readVals reads the protected values of the rows with the given keys; a
// key with no row is absent from the map.
func readVals(ctx context.Context, conn *pgx.Conn, keys []string) (map[string]rowVals, error) {
	var sel []string
	for _, c := range phiColumns {
		sel = append(sel, pgx.Identifier{c}.Sanitize()+"::text")
	}
	rows, err := conn.Query(ctx, "SELECT uid, "+strings.Join(sel, ", ")+" FROM patient WHERE uid = ANY($1)", keys)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]rowVals{}
	for rows.Next() {
		var k string
		var v rowVals
		dst := []any{&k}
		for i := range v {
			dst = append(dst, &v[i])
		}
		if err := rows.Scan(dst...); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, rows.Err()
}

// untouchedWhere selects the rows the writer never touches: outside the
// pool ($1) and not inserted by it.
const untouchedWhere = "uid <> ALL($1) AND uid NOT LIKE '" + writerPrefix + "%'"

// untouchedMD5 digests the given columns of every untouched row, in key
// order. Columns are named, so a column re-added at the end of the table by
// a rollback is read in its original place.
func untouchedMD5(ctx context.Context, conn *pgx.Conn, cols, pool []string) (string, error) {
	var ids []string
	for _, c := range cols {
		ids = append(ids, pgx.Identifier{c}.Sanitize())
	}
	var sum string
	err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT coalesce(md5(string_agg(ROW(%s)::text, E'\n' ORDER BY uid COLLATE "C")), '') FROM patient WHERE %s`,
		strings.Join(ids, ", "), untouchedWhere), pool).Scan(&sum)
	return sum, err
}

// nonNullCounts counts, per protected column c, the untouched rows whose
// column c+suffix is not NULL.
func nonNullCounts(ctx context.Context, conn *pgx.Conn, suffix string, pool []string) (map[string]int64, error) {
	var sel []string
	for _, c := range phiColumns {
		sel = append(sel, fmt.Sprintf("count(%s)", pgx.Identifier{c + suffix}.Sanitize()))
	}
	vals := make([]int64, len(phiColumns))
	dst := make([]any, len(vals))
	for i := range vals {
		dst[i] = &vals[i]
	}
	if err := conn.QueryRow(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM patient WHERE "+untouchedWhere, pool).Scan(dst...); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for i, c := range phiColumns {
		out[c] = vals[i]
	}
	return out, nil
}

// queryInt runs a query returning one integer.
func queryInt(ctx context.Context, conn *pgx.Conn, q string, args ...any) (int64, error) {
	var n int64
	err := conn.QueryRow(ctx, q, args...).Scan(&n)
	return n, err
}

// columnsOf lists the columns of patient.
func columnsOf(ctx context.Context, conn *pgx.Conn) (map[string]bool, error) {
	rows, err := conn.Query(ctx, "SELECT attname FROM pg_attribute WHERE attrelid = 'patient'::regclass AND attnum > 0 AND NOT attisdropped")
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}
