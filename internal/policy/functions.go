package policy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// functionGrants says which pgphi roles may execute each definer function of
// schema pgphi (by name; every overload). Everything else in the schema is
// executable by its owner only, except state.PublicFunctions, which every
// role may execute. Roles init grants exactly this table and revokes the
// rest; THREAT-MODEL.md says why each function is safe for its callers.
var functionGrants = map[string][]Role{
	// audit trail: every command of every role appends its records.
	"pgphi.audit_append":            {DBA, HealthcareAdmin, AuditOfficer},
	"pgphi.audit_checkpoint_record": {DBA, AuditOfficer},
	// evidence recorded by verify and check.
	"pgphi.verification_begin":  {DBA, HealthcareAdmin},
	"pgphi.verification_finish": {DBA, HealthcareAdmin},
	"pgphi.check_record":        {DBA, HealthcareAdmin},
	// approvals are recorded by approve.
	"pgphi.approval_record": {DBA, HealthcareAdmin},
	// gates: flags and pins change only by the dba.
	"pgphi.flag_set":     {DBA},
	"pgphi.pins_initial": {DBA},
	"pgphi.pins_replace": {DBA},
	// the statement trigger of protected tables: apply creates it.
	"pgphi.count_write": {DBA},
	// clients of pgphi serve are registered and revoked by the dba.
	"pgphi.serve_client_create": {DBA},
	"pgphi.serve_client_revoke": {DBA},
	// the history of schema migrations: only migrate, run by the dba, writes it.
	"pgphi.migration_begin":    {DBA},
	"pgphi.migration_step":     {DBA},
	"pgphi.migration_finish":   {DBA},
	"pgphi.migration_revert":   {DBA},
	"pgphi.migration_baseline": {DBA},
	// backups: taken and verified by restoring them, by the dba; whether a
	// recent verified one exists is read by check and the report.
	"pgphi.backup_record":   {DBA},
	"pgphi.backup_verified": {DBA},
	"pgphi.backup_status":   {DBA, HealthcareAdmin, AuditOfficer},
}

// grantFunctions grants EXECUTE on each existing function of functionGrants
// to the group roles of its pgphi roles.
func grantFunctions(ctx context.Context, tx pgx.Tx, names RoleNames, exec func(sql, what string) error) error {
	fns := make([]string, 0, len(functionGrants))
	for f := range functionGrants {
		fns = append(fns, f)
	}
	slices.Sort(fns)
	for _, f := range fns {
		rows, err := tx.Query(ctx, `SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
			JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
			WHERE n.nspname = 'pgphi' AND p.proname = $1 ORDER BY 1`, strings.TrimPrefix(f, "pgphi."))
		if err != nil {
			return err
		}
		sigs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		var groups []string
		for _, r := range functionGrants[f] {
			groups = append(groups, ident(names.Group(r)))
		}
		for _, sig := range sigs {
			if !strings.HasPrefix(sig, "pgphi.") {
				sig = "pgphi." + sig
			}
			if err := exec("GRANT EXECUTE ON FUNCTION "+sig+" TO "+strings.Join(groups, ", "),
				fmt.Sprintf("granted %s: EXECUTE on %s", strings.Join(groups, ", "), sig)); err != nil {
				return err
			}
		}
	}
	return nil
}

// adoptSchema gives schema pgphi and every object in it to the dba group, so
// that pgphi's definer functions run with the group's rights rather than a
// superuser's or one person's, when the connected role may (it can act as
// both the current owner and the group). It returns the owner afterwards.
func adoptSchema(ctx context.Context, tx pgx.Tx, group string, out *[]string) (string, error) {
	var owner string
	var can bool
	err := tx.QueryRow(ctx, `SELECT n.nspowner::regrole::text,
		pg_catalog.pg_has_role(current_user, n.nspowner, 'MEMBER') AND pg_catalog.pg_has_role(current_user, g.oid, 'MEMBER')
		FROM pg_catalog.pg_namespace n, pg_catalog.pg_roles g WHERE n.nspname = 'pgphi' AND g.rolname = $1`, group).Scan(&owner, &can)
	if err != nil {
		return "", err
	}
	owner = strings.Trim(owner, `"`)
	if owner == group {
		return owner, nil
	}
	if !can {
		*out = append(*out, fmt.Sprintf("note: schema pgphi is owned by %s; run roles init as a superuser (or a member of %s and %s) to give it to %s", owner, owner, group, group))
		return owner, nil
	}
	rows, err := tx.Query(ctx, `SELECT 'TABLE ' || c.oid::regclass::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'pgphi' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
		UNION ALL SELECT 'SEQUENCE ' || c.oid::regclass::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'pgphi' AND c.relkind = 'S'
			  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
		UNION ALL SELECT 'FUNCTION ' || p.oid::regprocedure::text FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
			WHERE n.nspname = 'pgphi'
		ORDER BY 1`)
	if err != nil {
		return "", err
	}
	objs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	g := ident(group)
	if _, err := tx.Exec(ctx, "ALTER SCHEMA pgphi OWNER TO "+g); err != nil {
		return "", fmt.Errorf("giving schema pgphi to %s: %w", group, err)
	}
	for _, o := range objs {
		if strings.HasPrefix(o, "FUNCTION ") && !strings.HasPrefix(o, "FUNCTION pgphi.") {
			o = "FUNCTION pgphi." + strings.TrimPrefix(o, "FUNCTION ")
		}
		if _, err := tx.Exec(ctx, "ALTER "+o+" OWNER TO "+g); err != nil {
			return "", fmt.Errorf("giving %s to %s: %w", o, group, err)
		}
	}
	*out = append(*out, fmt.Sprintf("gave schema pgphi and its %d objects to %s (was %s): pgphi's definer functions now run with its rights", len(objs), group, owner))
	return group, nil
}
