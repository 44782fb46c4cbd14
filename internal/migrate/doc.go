// Package migrate owns the application's versioned schema migrations: the
// directory of NNN_name.up.sql / NNN_name.down.sql files (golang-migrate's
// naming), its chained sum file, the history table pgphi.migrations, and
// the runner that applies and reverts them. It guarantees:
//
//   - a directory whose sum file does not match (a file edited, reordered
//     or inserted) and a history whose recorded hash differs from an
//     applied file are refused before anything runs (ErrTampered), naming
//     the file;
//   - one runner at a time per database and history table, through a
//     session advisory lock on a dedicated connection whose holding is
//     re-checked (a transaction-pooling proxy is refused);
//   - each migration runs in its own transaction, unless the parser finds a
//     statement that cannot (CREATE/DROP INDEX CONCURRENTLY, REINDEX
//     CONCURRENTLY, VACUUM, ALTER TYPE ... ADD VALUE): then every statement
//     runs on its own and is recorded when done, and a later run resumes at
//     the first statement not done, after checking that the statements done
//     still hash the same; an INVALID index left by an interrupted
//     concurrent build is dropped and built again;
//   - DDL waits for a table lock at most the lock timeout, then retries with
//     backoff, so the application never queues behind a migration;
//   - the history is written only through pgphi's definer functions (the
//     dba group), and records role, actor, duration, statements, rows and an
//     error class, never a message or a value.
//
// Linting (package lint) runs before every up. The compliance wrapper
// (access, approvals of the plan id, hooks, audit) is the caller's.
package migrate
