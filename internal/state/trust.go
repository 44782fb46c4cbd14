package state

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// DefaultDBAGroup is the group role of pgphi's dba under its default name.
const DefaultDBAGroup = "pgphi_dba"

// ErrUntrusted marks a pgphi schema, or an object in it, that pgphi did not
// create: owned by a role other than a superuser or pgphi's dba group (or a
// member of it). pgphi refuses to use it: its owner could replace a function
// pgphi calls or drop the audit trail.
var ErrUntrusted = errors.New("state: untrusted pgphi schema")

// PublicFunctions are the only functions of schema pgphi every role may
// execute (THREAT-MODEL.md says why each is safe). Ensure revokes EXECUTE
// from PUBLIC on every other function of the schema at every run.
var PublicFunctions = []string{"pgphi.flag(text)", "pgphi.audit_refusal(text)", "pgphi.key_usage_add(integer, bigint)"}

// FactTables record facts that gate or evidence decisions: no role but the
// schema's owner (through its definer functions) may write them.
var FactTables = []string{"audit_log", "audit_checkpoints", "approvals", "verifications", "checks", "flags", "pins", "serve_clients", "migrations", "key_usage", "backups"}

// Querier runs a query returning one row.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Owner returns the role owning schema pgphi, and whether the connected role
// may act as it (is it, or a member of it).
func Owner(ctx context.Context, q Querier) (owner string, canAct bool, err error) {
	err = q.QueryRow(ctx, `SELECT n.nspowner::regrole::text, pg_catalog.pg_has_role(current_user, n.nspowner, 'MEMBER')
		FROM pg_catalog.pg_namespace n WHERE n.nspname = 'pgphi'`).Scan(&owner, &canAct)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	return strings.Trim(owner, `"`), canAct, err
}

// checkSchemaOwner refuses a schema pgphi owned by anyone but a superuser,
// the dba group or a member of the dba group.
func checkSchemaOwner(ctx context.Context, q Querier, dbaGroup string) error {
	var owner string
	var trusted, exists bool
	err := q.QueryRow(ctx, `SELECT r.rolname::text,
		r.rolsuper OR r.rolname = $1 OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles g WHERE g.rolname = $1 AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER'))
		FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'pgphi'`, dbaGroup).Scan(&owner, &trusted)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return err
	}
	exists = true
	if exists && !trusted {
		return fmt.Errorf("%w: schema pgphi is owned by role `%s`, which is neither a superuser nor %s or a member of it: pgphi did not create it and will not use it (drop or rename it, or have its rightful owner explain it)", ErrUntrusted, owner, dbaGroup)
	}
	return nil
}

// CheckOwnership refuses any object in schema pgphi that its owner does not
// own: a table, sequence, view, index, function, type, operator, collation,
// conversion, operator class or family, or statistics object someone else
// put there could stand in for one of pgphi's.
func CheckOwnership(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) error {
	rows, err := q.Query(ctx, `WITH n AS (SELECT oid, nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'pgphi')
		SELECT kind, name, owner::regrole::text FROM (
			SELECT 'relation' AS kind, c.relname::text AS name, c.relowner AS owner FROM pg_catalog.pg_class c, n WHERE c.relnamespace = n.oid
			UNION ALL SELECT 'function', p.oid::regprocedure::text, p.proowner FROM pg_catalog.pg_proc p, n WHERE p.pronamespace = n.oid
			UNION ALL SELECT 'type', t.typname::text, t.typowner FROM pg_catalog.pg_type t, n WHERE t.typnamespace = n.oid
			UNION ALL SELECT 'operator', o.oprname::text, o.oprowner FROM pg_catalog.pg_operator o, n WHERE o.oprnamespace = n.oid
			UNION ALL SELECT 'collation', c.collname::text, c.collowner FROM pg_catalog.pg_collation c, n WHERE c.collnamespace = n.oid
			UNION ALL SELECT 'conversion', c.conname::text, c.conowner FROM pg_catalog.pg_conversion c, n WHERE c.connamespace = n.oid
			UNION ALL SELECT 'operator class', c.opcname::text, c.opcowner FROM pg_catalog.pg_opclass c, n WHERE c.opcnamespace = n.oid
			UNION ALL SELECT 'operator family', f.opfname::text, f.opfowner FROM pg_catalog.pg_opfamily f, n WHERE f.opfnamespace = n.oid
			UNION ALL SELECT 'statistics', s.stxname::text, s.stxowner FROM pg_catalog.pg_statistic_ext s, n WHERE s.stxnamespace = n.oid
		) o, n WHERE o.owner <> n.nspowner ORDER BY 1, 2 LIMIT 20`)
	if err != nil {
		return err
	}
	type bad struct{ kind, name, owner string }
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (bad, error) {
		var b bad
		return b, r.Scan(&b.kind, &b.name, &b.owner)
	})
	if err != nil {
		return err
	}
	if len(found) == 0 {
		return nil
	}
	parts := make([]string, len(found))
	for i, b := range found {
		parts[i] = fmt.Sprintf("%s pgphi.%s (owner %s)", b.kind, strings.TrimPrefix(b.name, "pgphi."), b.owner)
	}
	return fmt.Errorf("%w: objects in schema pgphi not owned by the schema's owner: %s; pgphi uses none of them until they are removed or given to the schema's owner (pgphi roles init does that for objects its own dba created)", ErrUntrusted, strings.Join(parts, ", "))
}

// lockDown removes every privilege PUBLIC has on schema pgphi's objects
// except USAGE on the schema and EXECUTE on PublicFunctions. Run by a role
// that may act as the schema's owner.
func lockDown(ctx context.Context, tx pgx.Tx) error {
	stmts := []string{
		"REVOKE ALL ON SCHEMA pgphi FROM PUBLIC",
		"GRANT USAGE ON SCHEMA pgphi TO PUBLIC",
		"REVOKE ALL ON ALL TABLES IN SCHEMA pgphi FROM PUBLIC",
		"REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgphi FROM PUBLIC",
		"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgphi FROM PUBLIC",
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	// Facts are written only through definer functions: whoever an earlier
	// version (or a hand) granted a write on them loses it, at every run.
	rows, err := tx.Query(ctx, `SELECT DISTINCT c.relname::text, a.grantee::regrole::text
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
		     LATERAL pg_catalog.aclexplode(c.relacl) a
		WHERE n.nspname = 'pgphi' AND c.relname = ANY($1) AND a.grantee <> 0 AND a.grantee <> c.relowner
		  AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
		ORDER BY 1, 2`, FactTables)
	if err != nil {
		return err
	}
	type grant struct{ table, grantee string }
	grants, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (grant, error) {
		var g grant
		return g, r.Scan(&g.table, &g.grantee)
	})
	if err != nil {
		return err
	}
	for _, g := range grants {
		if _, err := tx.Exec(ctx, "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON pgphi."+pgx.Identifier{g.table}.Sanitize()+" FROM "+g.grantee); err != nil {
			return fmt.Errorf("revoking writes on pgphi.%s from %s: %w", g.table, g.grantee, err)
		}
	}
	// Trigger functions of earlier versions ran as their owner (SECURITY
	// DEFINER) and cast row values: a type's cast code ran with the owner's
	// rights. They run as the writer from the next run on; apply replaces
	// their bodies.
	rows, err = tx.Query(ctx, `SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
		JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'pgphi' AND p.proname LIKE 'mark\_%' AND p.prosecdef AND p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype`)
	if err != nil {
		return err
	}
	definers, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, f := range definers {
		if !strings.HasPrefix(f, "pgphi.") {
			f = "pgphi." + f
		}
		if _, err := tx.Exec(ctx, "ALTER FUNCTION "+f+" SECURITY INVOKER"); err != nil {
			return fmt.Errorf("making %s run as the writer: %w", f, err)
		}
	}
	for _, f := range PublicFunctions {
		var ok bool
		if err := tx.QueryRow(ctx, "SELECT pg_catalog.to_regprocedure($1) IS NOT NULL", f).Scan(&ok); err != nil {
			return err
		}
		if ok {
			if _, err := tx.Exec(ctx, "GRANT EXECUTE ON FUNCTION "+f+" TO PUBLIC"); err != nil {
				return fmt.Errorf("granting %s: %w", f, err)
			}
		}
	}
	return nil
}

// AdoptAsOwner gives object (e.g. "FUNCTION pgphi.mark_x()") to the schema's
// owner when the connected role created it as itself: every object of schema
// pgphi must belong to the schema's owner (CheckOwnership).
func AdoptAsOwner(ctx context.Context, tx pgx.Tx, object string) error {
	var owner string
	var same bool
	if err := tx.QueryRow(ctx, `SELECT n.nspowner::regrole::text, n.nspowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		FROM pg_catalog.pg_namespace n WHERE n.nspname = 'pgphi'`).Scan(&owner, &same); err != nil {
		return err
	}
	if same {
		return nil
	}
	_, err := tx.Exec(ctx, "ALTER "+object+" OWNER TO "+owner)
	return err
}
