// Package backup owns pgphi's encrypted, signed and restore-verified
// backups of a whole database.
//
// A backup file is a pg_dump archive (custom format) that never touches the
// disk in plaintext: it is streamed from pg_dump through Tink's streaming
// AEAD AES256_GCM_HKDF_1MB (FIPS-approved primitives: AES-256-GCM and
// HKDF-SHA256) under a fresh 32-byte key wrapped by pgphi's key-encryption
// key (a passphrase, a key file or a PKCS#11 token, as the data keys are),
// or, where FIPS 140 is not required and only when asked for, through age
// (X25519 recipients, ChaCha20-Poly1305). Inside the encryption, ahead of
// the archive, is a manifest taken in pg_dump's own snapshot: per table its
// row count and a SHA-256 of its rows in primary-key order, the plan id, the
// data key ids the backup needs, and the format; it is signed with the audit
// checkpoint key (Ed25519). The cleartext header holds only what decryption
// needs (format, backup id, KEK parameters and the wrapped key, never a
// secret) and is authenticated as the stream's associated data: a flipped
// byte anywhere, or a truncation, fails decryption with ErrCorrupt.
//
// Verify decrypts a file, checks the manifest's signature, restores the
// archive into a temporary local PostgreSQL cluster (never the production
// server: a backup taken before cleanup would write plaintext into its WAL
// and replicas), compares every table's row count and checksum with the
// manifest, lets the caller run pgphi's verification there, and removes the
// cluster. docs/FORMAT.md specifies the file byte by byte.
//
// Client programs (pg_dump, pg_restore) get a minimal environment and a
// password file, never PGPASSWORD or any PGPHI_* variable, and their output
// reaches the user only through redaction.
package backup
