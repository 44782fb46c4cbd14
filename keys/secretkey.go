package keys

import "fmt"

// SecretKeyID is the key id a key that is not a data key (a backup's
// stream key) is wrapped under: data key ids start at 1, so with AES-GCM
// wrapping the associated data differs from every data key's.
const SecretKeyID = 0

// WrapSecretKey wraps a 32-byte key that is not a data key under the KEK of
// p described by params, exactly as data keys are wrapped (docs/FORMAT.md),
// with key id SecretKeyID.
func WrapSecretKey(p KEKProvider, params KEKParams, key []byte) ([]byte, error) {
	if params.Kind != kindOf(p) {
		return nil, fmt.Errorf("%w: the KEK is a %s, but a %s was given", ErrKEKKind, params.Kind, p.Name())
	}
	wrap, _, err := kekOps(p, params)
	if err != nil {
		return nil, err
	}
	defer releaseProvider(p)
	return wrap(SecretKeyID, key)
}

// UnwrapSecretKey reverses WrapSecretKey; a wrapped key that does not
// authenticate gives an error that Is ErrWrongKEK.
func UnwrapSecretKey(p KEKProvider, params KEKParams, wrapped []byte) ([]byte, error) {
	if params.Kind != kindOf(p) {
		return nil, fmt.Errorf("%w: the backup's key is wrapped with a %s KEK, but a %s was given", ErrKEKKind, params.Kind, p.Name())
	}
	_, unwrap, err := kekOps(p, params)
	if err != nil {
		return nil, err
	}
	defer releaseProvider(p)
	return unwrap(SecretKeyID, wrapped)
}
