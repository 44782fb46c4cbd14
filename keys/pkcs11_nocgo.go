//go:build !cgo

package keys

// NewPKCS11Provider needs cgo to load a PKCS#11 module: without it, it
// returns ErrPKCS11Unavailable.
func NewPKCS11Provider(cfg PKCS11Config) (KeyWrapper, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return nil, ErrPKCS11Unavailable
}
