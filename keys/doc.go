// Package keys owns the pgphi key hierarchy: key-encryption keys (KEKs)
// obtained from a passphrase or a key file, or held in a PKCS#11 token that
// wraps and unwraps data keys itself (pkcs11.go, cgo), the wrapping of data
// keys under a KEK, and the HKDF derivation of purpose keys (column encryption keys, blind
// index keys, audit keys) from a data key.
//
// The hierarchy is
//
//	passphrase --PBKDF2-SHA256--> KEK      key file ------------------> KEK
//	KEK --AES-256-GCM wrap--> data key (32 random bytes, one per key id)
//	data key --HKDF-SHA256(info = "pgphi/v1/" || purpose || 0x00 || contexts)--> purpose key
//
// See docs/FORMAT.md for the byte-level specification. Every function in this
// package uses only FIPS 140-3 approved algorithms from the Go standard
// library and works with GODEBUG=fips140=on; a PKCS#11 KEK's wrapping is done
// by the token (RFC 5649 key wrap or AES-GCM). No function or error message in
// this package prints key material, passphrases or key file contents.
package keys
