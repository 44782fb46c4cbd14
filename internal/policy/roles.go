package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Role is one of pgphi's roles.
type Role string

// pgphi's roles.
const (
	DBA             Role = "dba"
	HealthcareAdmin Role = "healthcare_admin"
	AuditOfficer    Role = "audit_officer"
)

// Roles returns pgphi's roles in a fixed order: dba, healthcare_admin,
// audit_officer.
func Roles() []Role { return []Role{DBA, HealthcareAdmin, AuditOfficer} }

// Valid reports whether r is one of pgphi's roles.
func (r Role) Valid() bool { return slices.Contains(Roles(), r) }

// ParseRole returns the role named s, or an error listing the roles.
func ParseRole(s string) (Role, error) {
	if r := Role(s); r.Valid() {
		return r, nil
	}
	return "", fmt.Errorf("unknown role `%s` (use dba, healthcare_admin or audit_officer)", s)
}

// RoleNames maps each pgphi role to the PostgreSQL group role that grants it.
// A role missing from the map uses its default name.
type RoleNames map[Role]string

// DefaultRoleNames returns pgphi_dba, pgphi_healthcare_admin and
// pgphi_audit_officer.
func DefaultRoleNames() RoleNames {
	return RoleNames{
		DBA:             "pgphi_dba",
		HealthcareAdmin: "pgphi_healthcare_admin",
		AuditOfficer:    "pgphi_audit_officer",
	}
}

// Group returns the PostgreSQL group role of r: names[r] when set, else the
// default name.
func (n RoleNames) Group(r Role) string {
	if g := n[r]; g != "" {
		return g
	}
	return DefaultRoleNames()[r]
}

// Validate checks that every entry names a known pgphi role and that the
// group role names are valid and distinct.
func (n RoleNames) Validate() error {
	for r := range n {
		if !r.Valid() {
			return fmt.Errorf("policy: role names: %w", errUnknownRole(r))
		}
	}
	seen := map[string]Role{}
	for _, r := range Roles() {
		g := n.Group(r)
		if len(g) > 63 || strings.ContainsRune(g, 0) {
			return fmt.Errorf("policy: role names: group role `%s` for %s is not a valid PostgreSQL role name", g, r)
		}
		if o, dup := seen[g]; dup {
			return fmt.Errorf("policy: role names: %s and %s both map to group role `%s`; each pgphi role needs its own group", o, r, g)
		}
		seen[g] = r
	}
	return nil
}

func errUnknownRole(r Role) error {
	_, err := ParseRole(string(r))
	return err
}

// allowed is the access table (documented in README.md).
var allowed = map[string][]Role{
	"init":        {DBA, HealthcareAdmin, AuditOfficer},
	"plan":        {DBA, HealthcareAdmin, AuditOfficer},
	"status":      {DBA, HealthcareAdmin, AuditOfficer},
	"check":       {DBA, HealthcareAdmin},
	"leakage":     {DBA, HealthcareAdmin},
	"flags":       {DBA, HealthcareAdmin, AuditOfficer},
	"flags set":   {DBA},
	"keys":        {DBA},
	"keys status": {DBA, HealthcareAdmin},
	"backup":      {DBA},
	"apply":       {DBA},
	"cleanup":     {DBA},
	"rollback":    {DBA},
	"reindex":     {DBA},
	"migrate":     {DBA},
	"roles":       {DBA},
	"approve":     {DBA, HealthcareAdmin},
	"search":      {DBA, HealthcareAdmin},
	"verify":      {DBA, HealthcareAdmin},
	"audit":       {AuditOfficer, DBA},
	"report":      {AuditOfficer, DBA},
	"pins":        {DBA, HealthcareAdmin, AuditOfficer},
	"pins set":    {DBA},
	// serve: the server's session role; decrypt and search are the
	// client's role's, checked per request.
	"serve":         {HealthcareAdmin, DBA},
	"serve token":   {DBA},
	"serve decrypt": {DBA, HealthcareAdmin},
	"serve search":  {DBA, HealthcareAdmin},
}

// Allowed returns the roles that may run command, in order of preference.
// The command is the command path without "pgphi" and without flags or
// arguments, e.g. "apply", "flags set", "keys rotate"; a subcommand with no
// entry of its own takes its parent's entry ("keys rotate" is "keys",
// "flags" without "set" only reads). An unknown command yields nil: nobody
// may run it.
func Allowed(command string) []Role {
	words := strings.Fields(command)
	for n := len(words); n > 0; n-- {
		if roles, ok := allowed[strings.Join(words[:n], " ")]; ok {
			return slices.Clone(roles)
		}
	}
	return nil
}

// ErrAccessDenied wraps every refusal by CheckAccess.
var ErrAccessDenied = errors.New("access denied")

// CheckAccess lets command run only when the connected role (current_user;
// pool may be a transaction that set the role to check with SET LOCAL ROLE)
// is a member, directly or through other roles, of the group role of at
// least one role allowed for command, and returns that pgphi role (the first
// in Allowed's order). A superuser is a member of every role in PostgreSQL's
// eyes, so a superuser connection passes only when allowSuperuser is true
// (tests and the demo run as superuser; production configurations should set
// it to false), and then takes the first allowed role.
//
// A refusal wraps ErrAccessDenied and names the command, the connected role
// and the roles allowed, nothing else. Other errors are failures to ask the
// database.
func CheckAccess(ctx context.Context, pool Querier, names RoleNames, command string, allowSuperuser bool) (role Role, err error) {
	if err := names.Validate(); err != nil {
		return "", err
	}
	roles := Allowed(command)
	var user string
	var super bool
	if err := pool.QueryRow(ctx, `SELECT current_user::text,
		COALESCE((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)`).Scan(&user, &super); err != nil {
		return "", fmt.Errorf("policy: checking access for `%s`: %w", command, err)
	}
	if len(roles) > 0 && super {
		if allowSuperuser {
			return roles[0], nil
		}
		return "", denied(command, user, roles, names)
	}
	if len(roles) == 0 {
		return "", denied(command, user, nil, names)
	}
	groups := make([]string, len(roles))
	for i, r := range roles {
		groups[i] = names.Group(r)
	}
	// Only existing roles are joined, so pg_has_role never sees a missing name.
	rows, err := pool.Query(ctx, `SELECT rolname::text FROM pg_roles
		WHERE rolname = ANY($1) AND pg_has_role(current_user, oid, 'MEMBER')`, groups)
	if err != nil {
		return "", fmt.Errorf("policy: checking access for `%s`: %w", command, err)
	}
	member, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("policy: checking access for `%s`: %w", command, err)
	}
	for i, r := range roles {
		if slices.Contains(member, groups[i]) {
			return r, nil
		}
	}
	return "", denied(command, user, roles, names)
}

func denied(command, user string, roles []Role, names RoleNames) error {
	if len(roles) == 0 {
		return fmt.Errorf("%w: %s is not a command pgphi knows (connected as database role %s; allowed roles: none)", ErrAccessDenied, command, user)
	}
	parts := make([]string, len(roles))
	for i, r := range roles {
		parts[i] = fmt.Sprintf("%s (member of %s)", r, names.Group(r))
	}
	// No quotes: role and command names are not values, and quoted text is
	// cut by redaction.
	return fmt.Errorf("%w: %s needs role %s; connected as database role %s", ErrAccessDenied, command, strings.Join(parts, " or "), user)
}

// rolesLockKey serializes concurrent InitRoles calls on one database.
const rolesLockKey = 0x70677072 // "pgpr"

// Tables of schema pgphi each role may use. kek and data_keys (wrapped keys)
// go to those who decrypt: dba and healthcare_admin. No role may write the
// tables that record facts (audit_log, audit_checkpoints, approvals,
// verifications, checks, flags, pins) except through the definer functions
// of functionGrants.
var (
	stateTables = []string{"schema_version", "plans", "plan_tables", "chunks", "failures",
		"protected_columns", "blind_indexes", "flags", "verifications", "checks", "serve_clients",
		"unique_columns", "column_rules", "removed_objects", "migrations", "key_usage", "backups"}
	// dbaWrite are the operational tables apply, cleanup and rollback keep.
	dbaWrite = []string{"plans", "plan_tables", "chunks", "failures", "protected_columns", "blind_indexes", "kek", "data_keys",
		"unique_columns", "column_rules", "removed_objects"}
	dbaSelect   = append(slices.Clone(stateTables), "kek", "data_keys", "approvals", "audit_log", "audit_checkpoints", "pins")
	haSelect    = append(slices.Clone(stateTables), "kek", "data_keys", "approvals", "audit_log", "pins")
	aoSelect    = append(slices.Clone(stateTables), "audit_log", "audit_checkpoints", "approvals", "pins")
	readSeqs    = []string{"write_seq"} // verify reads the write counter
	appTablePrv = map[Role]string{DBA: "SELECT, UPDATE, TRIGGER", HealthcareAdmin: "SELECT"}
)

// InitRoles creates the group roles of names (NOLOGIN) that do not exist and
// grants each what its commands need; it is idempotent and runs in one
// transaction. The pgphi schema must exist (state.Ensure). Tables of pgphi
// that do not exist yet are skipped and reported: running InitRoles again
// after they are created grants the rest, as does running it after a pgphi
// upgrade added tables.
//
//   - dba: becomes the owner of schema pgphi and every object in it when
//     the connected role may give them (it can act as both the current
//     owner and the group): pgphi's definer functions then run with the
//     group's rights, not a superuser's. CONNECT, CREATE, TEMPORARY on the
//     database; UPDATE, DELETE, TRUNCATE on audit_log and audit_checkpoints
//     revoked even as owner (append-only); SELECT, UPDATE, TRIGGER on the
//     protected tables recorded in pgphi.protected_columns. Adding and
//     dropping columns, triggers and indexes on application tables needs
//     ownership, which GRANT cannot give: see README.md.
//   - healthcare_admin: CONNECT; USAGE on schema pgphi; SELECT on pgphi's
//     state tables, kek, data_keys, approvals, audit_log and pins, and on
//     pgphi.write_seq; SELECT on the protected tables (search and verify
//     decrypt). No direct write anywhere in pgphi.
//   - audit_officer: CONNECT; USAGE on schema pgphi; SELECT on pgphi's state
//     tables, audit_log, audit_checkpoints, approvals and pins. No key
//     tables, no application tables, no direct write.
//
// Every privilege the groups had on pgphi's tables and functions is revoked
// first (earlier versions granted INSERT on the audit trail, approvals,
// verifications and checks): facts are written only through the definer
// functions of functionGrants, whose EXECUTE is granted per function. It
// returns one line per action, for printing.
func InitRoles(ctx context.Context, pool *pgxpool.Pool, names RoleNames) ([]string, error) {
	if err := names.Validate(); err != nil {
		return nil, err
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: roles: %w", err)
	}
	defer tx.Rollback(ctx)
	var out []string
	if err := initRoles(ctx, tx, names, &out); err != nil {
		return nil, fmt.Errorf("policy: roles: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("policy: roles: %w", err)
	}
	return out, nil
}

func initRoles(ctx context.Context, tx pgx.Tx, names RoleNames, out *[]string) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", rolesLockKey); err != nil {
		return err
	}
	var schema bool
	var db string
	if err := tx.QueryRow(ctx, "SELECT to_regnamespace('pgphi') IS NOT NULL, current_database()::text").Scan(&schema, &db); err != nil {
		return err
	}
	if !schema {
		return errors.New("schema pgphi does not exist yet: create pgphi's state first (any pgphi command that writes state does)")
	}
	for _, r := range Roles() {
		g := names.Group(r)
		var canLogin bool
		err := tx.QueryRow(ctx, "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", g).Scan(&canLogin)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if _, err := tx.Exec(ctx, "CREATE ROLE "+ident(g)+" NOLOGIN"); err != nil {
				return fmt.Errorf("creating group role %s: %w", g, err)
			}
			*out = append(*out, fmt.Sprintf("created group role %s (NOLOGIN) for %s", g, r))
		case err != nil:
			return err
		case canLogin:
			*out = append(*out, fmt.Sprintf("group role %s for %s exists (warning: it can log in; pgphi expects a NOLOGIN group whose members log in)", g, r))
		default:
			*out = append(*out, fmt.Sprintf("group role %s for %s exists", g, r))
		}
	}

	dba, ha, ao := ident(names.Group(DBA)), ident(names.Group(HealthcareAdmin)), ident(names.Group(AuditOfficer))
	exec := func(sql, what string) error {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		*out = append(*out, what)
		return nil
	}
	owner, err := adoptSchema(ctx, tx, names.Group(DBA), out)
	if err != nil {
		return err
	}
	dbaOwns := owner == names.Group(DBA)
	dbIdent := ident(db)
	steps := []struct{ sql, what string }{
		{"GRANT CONNECT, CREATE, TEMPORARY ON DATABASE " + dbIdent + " TO " + dba, "granted " + names.Group(DBA) + ": CONNECT, CREATE, TEMPORARY on database " + db},
		{"GRANT CONNECT ON DATABASE " + dbIdent + " TO " + ha + ", " + ao, "granted " + names.Group(HealthcareAdmin) + ", " + names.Group(AuditOfficer) + ": CONNECT on database " + db},
		{"GRANT USAGE ON SCHEMA pgphi TO " + dba + ", " + ha + ", " + ao, "granted " + names.Group(DBA) + ", " + names.Group(HealthcareAdmin) + ", " + names.Group(AuditOfficer) + ": USAGE on schema pgphi"},
		// Earlier versions granted more (INSERT on the audit trail,
		// approvals, verifications, checks; EXECUTE on every function):
		// start from nothing and grant exactly what each role needs.
		{"REVOKE ALL ON ALL TABLES IN SCHEMA pgphi FROM " + ha + ", " + ao, "revoked " + names.Group(HealthcareAdmin) + ", " + names.Group(AuditOfficer) + ": every privilege on pgphi's tables (granted again below, reading only)"},
		{"REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgphi FROM " + ha + ", " + ao, "revoked " + names.Group(HealthcareAdmin) + ", " + names.Group(AuditOfficer) + ": every privilege on pgphi's sequences"},
		{"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgphi FROM " + ha + ", " + ao, "revoked " + names.Group(HealthcareAdmin) + ", " + names.Group(AuditOfficer) + ": EXECUTE on pgphi's functions (granted again below, per function)"},
	}
	if !dbaOwns {
		steps = append(steps,
			struct{ sql, what string }{"REVOKE ALL ON ALL TABLES IN SCHEMA pgphi FROM " + dba, "revoked " + names.Group(DBA) + ": every privilege on pgphi's tables (granted again below)"},
			struct{ sql, what string }{"REVOKE CREATE ON SCHEMA pgphi FROM " + dba, "revoked " + names.Group(DBA) + ": CREATE on schema pgphi (objects it created would not belong to the schema's owner)"},
			struct{ sql, what string }{"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgphi FROM " + dba, "revoked " + names.Group(DBA) + ": EXECUTE on pgphi's functions (granted again below, per function)"},
			struct{ sql, what string }{"GRANT ALL ON ALL SEQUENCES IN SCHEMA pgphi TO " + dba, "granted " + names.Group(DBA) + ": ALL on all sequences in schema pgphi"},
		)
	}
	for _, s := range steps {
		if err := exec(s.sql, s.what); err != nil {
			return err
		}
	}

	existing := func(tables []string) (have, missing []string, err error) {
		for _, t := range tables {
			var ok bool
			if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", "pgphi."+t).Scan(&ok); err != nil {
				return nil, nil, err
			}
			if ok {
				have = append(have, "pgphi."+t)
			} else {
				missing = append(missing, "pgphi."+t)
			}
		}
		return have, missing, nil
	}
	grantTables := func(r Role, privs string, tables []string, sequence bool) error {
		have, missing, err := existing(tables)
		if err != nil {
			return err
		}
		g := names.Group(r)
		if len(have) > 0 {
			kind := "TABLE"
			if sequence {
				kind = "SEQUENCE"
			}
			if err := exec(fmt.Sprintf("GRANT %s ON %s %s TO %s", privs, kind, strings.Join(have, ", "), ident(g)),
				fmt.Sprintf("granted %s: %s on %s", g, privs, strings.Join(have, ", "))); err != nil {
				return err
			}
		}
		if len(missing) > 0 {
			*out = append(*out, fmt.Sprintf("skipped %s for %s: %s does not exist yet (run roles init again once it does)",
				privs, g, strings.Join(missing, ", ")))
		}
		return nil
	}
	grants := []struct {
		r      Role
		privs  string
		tables []string
		seq    bool
	}{
		{HealthcareAdmin, "SELECT", haSelect, false},
		{HealthcareAdmin, "SELECT", readSeqs, true},
		{AuditOfficer, "SELECT", aoSelect, false},
	}
	if !dbaOwns {
		grants = append(grants, struct {
			r      Role
			privs  string
			tables []string
			seq    bool
		}{DBA, "SELECT", dbaSelect, false}, struct {
			r      Role
			privs  string
			tables []string
			seq    bool
		}{DBA, "INSERT, UPDATE, DELETE", dbaWrite, false})
	}
	for _, s := range grants {
		if err := grantTables(s.r, s.privs, s.tables, s.seq); err != nil {
			return err
		}
	}
	if err := grantFunctions(ctx, tx, names, exec); err != nil {
		return err
	}
	// The audit trail is append-only, for the dba (its owner) too: its
	// definer functions only insert.
	have, _, err := existing([]string{"audit_log", "audit_checkpoints"})
	if err != nil {
		return err
	}
	if len(have) > 0 {
		if err := exec(fmt.Sprintf("REVOKE UPDATE, DELETE, TRUNCATE ON TABLE %s FROM %s", strings.Join(have, ", "), dba),
			fmt.Sprintf("revoked %s: UPDATE, DELETE, TRUNCATE on %s (append-only)", names.Group(DBA), strings.Join(have, ", "))); err != nil {
			return err
		}
	}

	// Application tables pgphi protects, as recorded by apply.
	rows, err := tx.Query(ctx, `SELECT DISTINCT c.oid::regclass::text FROM pgphi.protected_columns p
		JOIN pg_namespace n ON true JOIN pg_class c ON c.relnamespace = n.oid AND n.nspname || '.' || c.relname = p.table_name
		ORDER BY 1`)
	if err != nil {
		return err
	}
	apps, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(apps) > 0 {
		for _, r := range []Role{DBA, HealthcareAdmin} {
			g := names.Group(r)
			if err := exec(fmt.Sprintf("GRANT %s ON TABLE %s TO %s", appTablePrv[r], strings.Join(apps, ", "), ident(g)),
				fmt.Sprintf("granted %s: %s on protected tables %s", g, appTablePrv[r], strings.Join(apps, ", "))); err != nil {
				return err
			}
		}
		*out = append(*out, fmt.Sprintf("note: %s can expand, clean up and roll back %s only as their owner: ALTER TABLE ... OWNER TO %s, or GRANT the owning role to %s",
			names.Group(DBA), strings.Join(apps, ", "), names.Group(DBA), names.Group(DBA)))
	} else {
		*out = append(*out, fmt.Sprintf("note: no protected tables recorded yet; %s needs to own the tables pgphi will protect (ALTER TABLE ... OWNER TO %s, or GRANT the owning role to %s); run roles init again after apply to grant access to them",
			names.Group(DBA), names.Group(DBA), names.Group(DBA)))
	}
	return nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// ParseRoleNames converts the configuration's role -> group role mapping,
// checking role names; roles it omits keep their default group.
func ParseRoleNames(m map[string]string) (RoleNames, error) {
	n := DefaultRoleNames()
	for role, group := range m {
		r, err := ParseRole(role)
		if err != nil {
			return nil, fmt.Errorf("policy: role names: %w", err)
		}
		if group == "" {
			return nil, fmt.Errorf("policy: role names: empty group role name for %s", r)
		}
		n[r] = group
	}
	return n, n.Validate()
}
