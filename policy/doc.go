// Package policy owns who may do what: the PostgreSQL group roles for
// pgphi's roles (dba, healthcare_admin, audit_officer), the access check
// every command makes, signed approvals of plan ids, and the approval policy
// per environment.
//
// Access: [InitRoles] creates one NOLOGIN group role per pgphi role and grants
// it what its commands need; [CheckAccess] lets a command run only when the
// connected role is a member of the group of a role [Allowed] for it.
//
// Approvals: an approver signs a plan id and environment with an Ed25519 key
// ([Sign], [Message]); [Record] stores the signature after verifying it
// against the allowed signers file ([LoadSigners]), which identifies the
// approver by key; [Check] re-verifies every stored signature against the
// current signers file and counts distinct approvers per role against the
// environment's [Requirements]. The signers file, not the database, is the
// root of trust: a row written into pgphi.approvals by hand counts for
// nothing unless its signature verifies with a key in the file.
//
// Nothing in this package prints or returns key material; errors name files,
// lines, fingerprints, signer names, roles and plan ids only.
//
// The formats (signers file, signed message) and the roles table are
// documented in README.md.
package policy
