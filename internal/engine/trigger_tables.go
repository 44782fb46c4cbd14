package engine

import (
	"context"
	"fmt"

	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/config"
)

// tableShapeProblem says why pgphi cannot protect a table whose rows live in
// more than one relation, or "" when it can. A query on an inheritance parent
// or a partitioned table reads its children's rows too, while ctids are only
// unique within one relation: the backfill's ctid join wrote parents'
// ciphertexts into children's rows. Row triggers are not inherited either.
func tableShapeProblem(ctx context.Context, q catalog.Querier, t *catalog.Table) (string, error) {
	var kind string
	var partition, children, parents bool
	err := q.QueryRow(ctx, `SELECT c.relkind::text, c.relispartition,
		EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) c.oid),
		EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid OPERATOR(pg_catalog.=) c.oid)
		FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1::regclass`, t.Ident()).Scan(&kind, &partition, &children, &parents)
	if err != nil {
		return "", fmt.Errorf("inspecting %s: %w", t.QualifiedName(), err)
	}
	switch {
	case kind == "p":
		return "is a partitioned table", nil
	case partition:
		return "is a partition of a partitioned table", nil
	case children:
		return "has inheritance children", nil
	case parents:
		return "inherits from another table", nil
	}
	return "", nil
}

// CheckTableShapes refuses, at plan time, a table that is partitioned, a
// partition, an inheritance parent or an inheritance child: pgphi does not
// support those yet. Expand checks again before it changes the table.
func CheckTableShapes(ctx context.Context, q catalog.Querier, cfg *config.Config, tables []*catalog.Table) error {
	for _, t := range tables {
		reason, err := tableShapeProblem(ctx, q, t)
		if err != nil {
			return err
		}
		if reason == "" {
			continue
		}
		line := 0
		if t.Config != nil {
			line = t.Config.Line
		}
		return cfg.Errorf(line, "protect an ordinary table without inheritance, or leave this one out of the configuration",
			"table %s %s: partitioned and inherited tables are not supported yet", t.QualifiedName(), reason)
	}
	return nil
}
