// Package compliance is the wrapper every pgphi command that reaches a
// database runs in, with a config file or without one. It owns the order of
// the compliance steps and guarantees, for every run:
//
//   - the connection is made under the TLS policy of the environment;
//   - a role that is a member of no pgphi group is refused (exit 4) before it
//     touches pgphi's schema, and the refusal is recorded through
//     pgphi.audit_refusal;
//   - pgphi's schema is trusted (state.Ensure) and up to date;
//   - every security decision reads the policy pinned in the database
//     (policy.Pins), never the config, which only proposes it; a config that
//     proposes other pins is refused, and the first run of a dba pins it;
//   - the connected role's membership is checked against the pinned group
//     names, then approvals of the plan for the command under the pinned
//     requirements and signers, with the connected role as the executor;
//   - a start record and exactly one end record (success, failure with an
//     error class and never a message with values, or refused) are
//     appended to the audit trail;
//   - operator hooks run at their phases with a minimal environment, and
//     validation counts violations in SQL before the command executes.
//
// It also owns what the compliance steps read and state, for every front
// end (the pgphi command, serve, migrate): the pre-flight checklist with
// its evidence (Wrapper.Checklist), the facts of the compliance report
// (Wrapper.Facts), and where the keys come from (LoadKeys).
//
// The command-line package supplies how to load the config, connect and
// resolve the plan; this package decides nothing about flags or rendering.
package compliance
