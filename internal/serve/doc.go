// Package serve is `pgphi serve`: the application API of package pgphi
// (seal, decrypt, search, the protected columns and the cutover flags) as
// JSON over HTTP, for applications in any language. It owns the HTTP
// contract (docs/openapi.yaml), client authentication, the
// per-request role switch, refusals and their audit records, request
// bounds and the server's metrics.
//
// Guarantees:
//   - Every request but /healthz is authenticated: a bearer token (only its
//     SHA-256 is stored, in pgphi.serve_clients) or a TLS client
//     certificate whose subject CN is registered the same way. Each client
//     maps to a database role.
//   - Decrypt and search run in one transaction per request in which the
//     server sets the client's role (SET LOCAL ROLE; the server's login is
//     a NOINHERIT member of the roles it acts as): the database's
//     privileges and the audit record's actor.db_role are the client's,
//     and the client's role must be allowed to decrypt (dba or
//     healthcare_admin group). They need a reason and write one audit
//     record per request (client, role, table, columns, kind, reason, row
//     count), committed with the request; a request whose record cannot be
//     written fails.
//   - Every refusal (401, 403, 400, 413, 429) answers a JSON error body
//     {"error":{"code","message"}} and writes a "refused" audit record
//     naming the endpoint, the client (when known) and the code.
//   - No value, search term, ciphertext or key value appears in an error
//     body, a log line, a metric or an audit record: messages come from
//     value-free errors (package pgphi and redact), log lines and metrics
//     name endpoints, status codes and clients only.
//   - Requests are bounded in size (bytes and rows) and in rate per client;
//     plain HTTP is accepted only on a loopback address or a Unix socket,
//     and never in production. Keys are held in memory only (package
//     pgphi's client) and dropped at shutdown.
package serve
