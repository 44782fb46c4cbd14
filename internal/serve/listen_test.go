package serve_test

import (
	"crypto/tls"
	"errors"
	"path/filepath"
	"testing"

	"github.com/pgphi/pgphi/internal/serve"
)

// Plain HTTP only on loopback or a Unix socket, never in production; a bad
// address is a usage error before anything listens.
func TestListenPolicy(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	withTLS := &tls.Config{}
	cases := []struct {
		addr string
		tls  *tls.Config
		env  string
		want error
	}{
		{"127.0.0.1:0", nil, "development", nil},
		{"[::1]:0", nil, "staging", nil},
		{"localhost:0", nil, "test", nil},
		{"unix:" + sock, nil, "development", nil},
		{"0.0.0.0:0", nil, "development", serve.ErrPlainHTTP},
		{"127.0.0.1:0", nil, "production", serve.ErrPlainHTTP},
		{"unix:" + sock, nil, "production", serve.ErrPlainHTTP},
		{"127.0.0.1:0", withTLS, "production", nil},
		{"0.0.0.0:0", withTLS, "production", nil},
		{":0", nil, "development", serve.ErrAddress},
		{"example.org:443", withTLS, "development", serve.ErrAddress},
		{"127.0.0.1:http", nil, "development", serve.ErrAddress},
		{"unix:", nil, "development", serve.ErrAddress},
	}
	for _, c := range cases {
		ln, err := serve.Listen(c.addr, c.tls, c.env)
		if ln != nil {
			ln.Close()
		}
		if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("Listen(%s, tls %v, %s) = %v, want %v", c.addr, c.tls != nil, c.env, err, c.want)
		}
	}
}
