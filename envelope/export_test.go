package envelope

import "crypto/cipher"

// Test hooks for the external test package envelope_test, which cannot be
// part of package envelope because it imports package keys.

// NewSealerWithAEAD returns a Sealer that uses aead (for example one with a
// fixed nonce, to make test vectors reproducible).
func NewSealerWithAEAD(id KeyID, aead cipher.AEAD) *Sealer { return &Sealer{id: id, aead: aead} }

// SealRaw seals the plaintext typ || text without validating it.
func SealRaw(s *Sealer, dst []byte, typ byte, text string, b Binding) []byte {
	return s.seal(dst, typ, text, b)
}

// IsKnownType reports whether t is a version 1 value type.
func IsKnownType(t ValueType) bool { return t.known() }
