// Package policy owns who may do what: the PostgreSQL group roles for
// pgphi's roles (dba, healthcare_admin, audit_officer), the access check
// every command makes, signed approvals of plan ids, and the approval policy
// per environment.
//
// Access: [InitRoles] creates one NOLOGIN group role per pgphi role and grants
// it what its commands need; [CheckAccess] lets a command run only when the
// connected role is a member of the group of a role [Allowed] for it.
//
// Approvals: an approver signs a plan id (or pins id) for one command, in
// one environment of one database, until an expiry ([Sign], [Message],
// [Target]); [Record] stores it through the definer function
// pgphi.approval_record after verifying it against the pinned signers;
// [Check] re-verifies every stored row against the pinned signers, ignores
// (and reports) every row that fails, and counts distinct approvers per role
// against the pinned [Requirements]. The executor is the connected database
// role, compared with the approvers' pinned database roles.
//
// Pins: [Pins] (environment, approval policy, signers, role names,
// allow_superuser, audit key) live in pgphi.pins; the YAML only proposes
// them ([PinInitial] at the first run, [Diff] and [Replace] afterwards).
//
// Nothing in this package prints or returns key material; errors name files,
// lines, fingerprints, signer names, roles and plan ids only.
//
// The formats (signers file, signed message) and the roles table are
// documented in README.md.
package policy
