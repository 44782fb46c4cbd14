package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// pgphi's own statements on an application table (backfill, catch-up, the
// sweep, rollback's restore, cleanup's final pass) fire the table owner's
// code: triggers, index expressions and predicates, CHECK constraints, row
// level security policies, rules, generated columns. That code must never
// gain privileges through pgphi. Where the connected role can, the
// statements run with the owner's rights (SET LOCAL ROLE to the owner inside
// the transaction, back to the session's role before pgphi's own state is
// touched); where it cannot, OwnerCodeReport says what the owner's code would
// run with the connected role's rights (pgphi check, THREAT-MODEL.md).
//
// SET ROLE is not a sandbox: code running under it may itself RESET ROLE or
// SET ROLE to any role the session's login is a member of. Run as the owner,
// owner code can reach no more than the login's memberships; with a
// superuser login it can reach everything. That is why, in production, a
// superuser connection is refused for these statements on a table whose
// owner (not a superuser) has code on it; and why a dba login should be a
// member of the application owner, not a superuser.

// ownerInfo is a table's owner as seen from the connected session.
type ownerInfo struct {
	Owner        string // the table owner's role name
	OwnerSuper   bool   // the owner is a superuser: its code already has every right
	IsOwner      bool   // the current role is the owner
	CanSetRole   bool   // the current role is a member of the owner (SET ROLE is allowed)
	SessionSuper bool   // the login (session_user) is a superuser
	PrevRole     string // the GUC "role" before pgphi changed it ("none": the login's own)
	SetRole      bool   // asTableOwner switched to the owner
}

// ownerRole reads the owner of t and what the connected session may do
// about it, without changing anything.
func (t *Target) ownerRole(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (ownerInfo, error) {
	var o ownerInfo
	err := q.QueryRow(ctx, ownerInfoSQL+", false"+ownerFromSQL, t.Ident()).Scan(&o.Owner, &o.OwnerSuper, &o.IsOwner, &o.CanSetRole, &o.SessionSuper, &o.PrevRole, &o.SetRole)
	if err != nil {
		return o, fmt.Errorf("reading the owner of %s: %w", t.QualifiedName(), err)
	}
	return o, nil
}

// ownerInfoSQL reads ownerInfo for $1 (a table name); the caller appends the
// last column (false, or switchSQL) and ownerFromSQL.
const ownerInfoSQL = `
SELECT o.rolname::pg_catalog.text, o.rolsuper,
       o.rolname OPERATOR(pg_catalog.=) CURRENT_USER,
       pg_catalog.pg_has_role(CURRENT_USER, o.oid, 'MEMBER'),
       COALESCE((SELECT s.rolsuper FROM pg_catalog.pg_roles s WHERE s.rolname OPERATOR(pg_catalog.=) SESSION_USER), false),
       pg_catalog.current_setting('role')`

// switchSQL switches to the owner in the same statement (one round trip per
// batch): only when the owner is not a superuser (pgphi never raises its own
// rights), the current role is not the owner already and may SET ROLE to it.
const switchSQL = `,
       CASE WHEN NOT o.rolsuper AND o.rolname OPERATOR(pg_catalog.<>) CURRENT_USER AND pg_catalog.pg_has_role(CURRENT_USER, o.oid, 'MEMBER')
            THEN pg_catalog.set_config('role', o.rolname::pg_catalog.text, true) IS NOT NULL ELSE false END`

const ownerFromSQL = `
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles o ON o.oid OPERATOR(pg_catalog.=) c.relowner
 WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass`

// asOwner is asTableOwner under the runner's environment.
func (r *Runner) asOwner(ctx context.Context, tx pgx.Tx, t *Target) (restore func() error, err error) {
	return asTableOwner(ctx, tx, t, r.Config != nil && r.Config.IsProduction())
}

// asTableOwner makes the next statements of tx on t run with the rights of
// t's owner (SET LOCAL ROLE), where the connected role may and the owner is
// not a superuser. restore sets the role back to the session's; call it
// before touching pgphi's own tables in the same transaction (a rollback of
// tx restores it too). In production, a superuser login is refused
// (ErrRefused) on a table whose owner, not a superuser, has code on it: SET
// ROLE would not contain that code (see above).
func asTableOwner(ctx context.Context, tx pgx.Tx, t *Target, production bool) (restore func() error, err error) {
	var o ownerInfo
	err = tx.QueryRow(ctx, ownerInfoSQL+switchSQL+ownerFromSQL, t.Ident()).Scan(&o.Owner, &o.OwnerSuper, &o.IsOwner, &o.CanSetRole, &o.SessionSuper, &o.PrevRole, &o.SetRole)
	if err != nil {
		return nil, fmt.Errorf("switching to the owner of %s: %w", t.QualifiedName(), err)
	}
	restore = func() error { return nil }
	if o.SetRole {
		prev := o.PrevRole
		restore = func() error {
			// Whatever the owner's code did to the role, the session's own
			// comes back.
			var got string
			if err := tx.QueryRow(ctx, "SELECT pg_catalog.set_config('role', $1, true)", prev).Scan(&got); err != nil {
				return fmt.Errorf("returning from the owner of %s to the session's role: %w", t.QualifiedName(), err)
			}
			return nil
		}
	}
	if production && o.SessionSuper && !o.OwnerSuper {
		code, err := ownerCode(ctx, tx, t)
		if err != nil {
			return nil, err
		}
		if len(code) > 0 {
			return nil, fmt.Errorf("%w: %s is owned by %s, whose code runs inside pgphi's statements on it (%s); with a superuser login that code could leave the owner's role (SET ROLE is not a sandbox) and act as superuser: connect as a login that is a member of %s and not a superuser",
				ErrRefused, t.QualifiedName(), o.Owner, strings.Join(code, "; "), o.Owner)
		}
	}
	return restore, nil
}

// ownerCode lists the code on t, other than pgphi's, that a non-superuser
// wrote and that pgphi's reads and writes of t may run: what a trigger,
// index expression or predicate, CHECK or other constraint, row level
// security policy, rule or generated column calls (functions, and the
// functions behind operators), each as "trigger x calls f(args) owned by
// role r".
func ownerCode(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, t *Target) ([]string, error) {
	rows, err := q.Query(ctx, ownerCodeSQL, t.Ident())
	if err != nil {
		return nil, fmt.Errorf("listing the owner's code on %s: %w", t.QualifiedName(), err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing the owner's code on %s: %w", t.QualifiedName(), err)
	}
	return out, nil
}

const ownerCodeSQL = `
WITH objs AS (
	SELECT 'pg_catalog.pg_trigger'::pg_catalog.regclass AS classid, tg.oid, 'trigger ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(tg.tgname::pg_catalog.text) AS what
	  FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND NOT tg.tgisinternal
	UNION ALL
	SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, i.indexrelid, 'index ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(ic.relname::pg_catalog.text)
	  FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
	 WHERE i.indrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
	UNION ALL
	SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass, co.oid, 'constraint ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(co.conname::pg_catalog.text)
	  FROM pg_catalog.pg_constraint co WHERE co.conrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
	UNION ALL
	SELECT 'pg_catalog.pg_policy'::pg_catalog.regclass, po.oid, 'row security policy ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(po.polname::pg_catalog.text)
	  FROM pg_catalog.pg_policy po WHERE po.polrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
	UNION ALL
	SELECT 'pg_catalog.pg_rewrite'::pg_catalog.regclass, rw.oid, 'rule ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(rw.rulename::pg_catalog.text)
	  FROM pg_catalog.pg_rewrite rw WHERE rw.ev_class OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
	UNION ALL
	SELECT 'pg_catalog.pg_attrdef'::pg_catalog.regclass, ad.oid, 'generated column ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(a.attname::pg_catalog.text)
	  FROM pg_catalog.pg_attrdef ad
	  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) ad.adrelid AND a.attnum OPERATOR(pg_catalog.=) ad.adnum
	 WHERE ad.adrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND a.attgenerated OPERATOR(pg_catalog.<>) ''
),
refs AS (
	SELECT objs.what, d.refclassid, d.refobjid
	  FROM objs JOIN pg_catalog.pg_depend d ON d.classid OPERATOR(pg_catalog.=) objs.classid AND d.objid OPERATOR(pg_catalog.=) objs.oid
),
funcs AS (
	SELECT refs.what, refs.refobjid AS fn FROM refs WHERE refs.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
	UNION ALL
	SELECT refs.what, o.oprcode::pg_catalog.oid FROM refs JOIN pg_catalog.pg_operator o ON o.oid OPERATOR(pg_catalog.=) refs.refobjid
	 WHERE refs.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_operator'::pg_catalog.regclass
)
SELECT DISTINCT funcs.what OPERATOR(pg_catalog.||) ' calls ' OPERATOR(pg_catalog.||) p.oid::pg_catalog.regprocedure::pg_catalog.text
       OPERATOR(pg_catalog.||) ' owned by role ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(r.rolname::pg_catalog.text)
  FROM funcs
  JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) funcs.fn
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
  JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.proowner
 WHERE NOT r.rolsuper AND n.nspname OPERATOR(pg_catalog.<>) 'pgphi'
 ORDER BY 1`

// OwnerCodeReport lists, for `pgphi check` and the threat model, the tables
// of the plan whose owner's code pgphi's statements would run with rights
// other than the owner's: where the connected role cannot act as the owner
// (not a member of it), where the owner is a superuser, and where the login
// is a superuser (SET ROLE would not contain the code; refused in
// production). One line per table and finding; no values. Empty when every
// table's owner code, if any, runs as its owner.
func OwnerCodeReport(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
	QueryRow(context.Context, string, ...any) pgx.Row
}, p *Plan) ([]string, error) {
	var out []string
	for _, t := range p.Tables {
		o, err := t.ownerRole(ctx, q)
		if err != nil {
			return nil, err
		}
		code, err := ownerCode(ctx, q, t)
		if err != nil {
			return nil, err
		}
		if len(code) == 0 {
			continue
		}
		var how string
		switch {
		case o.OwnerSuper:
			how = fmt.Sprintf("its owner %s is a superuser; pgphi does not take on superuser rights, so this code runs with the connected role's", o.Owner)
		case o.SessionSuper:
			how = fmt.Sprintf("the login is a superuser: pgphi switches to the owner %s, but the code could switch back and act as superuser (refused in production)", o.Owner)
		case o.IsOwner || o.CanSetRole:
			continue // runs as the owner, with no more than the login's memberships
		default:
			how = fmt.Sprintf("the connected role is not a member of its owner %s, so this code runs with the connected role's rights (make the login a member of %s)", o.Owner, o.Owner)
		}
		out = append(out, fmt.Sprintf("%s: %s: %s", t.QualifiedName(), how, strings.Join(code, "; ")))
	}
	return out, nil
}

// ownerQueryRow runs one read of t in its own transaction with the owner's
// rights (row security policies of the table call the owner's code too).
func (r *Runner) ownerQueryRow(ctx context.Context, t *Target, sql string, dest ...any) error {
	return pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		if _, err := r.asOwner(ctx, tx, t); err != nil {
			return err
		}
		return tx.QueryRow(ctx, sql).Scan(dest...)
	})
}
