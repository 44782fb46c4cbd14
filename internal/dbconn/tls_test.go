package dbconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/pgcluster"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func newCA(t *testing.T, name string) testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pemEncode("CERTIFICATE", der), 0o644); err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key, pemFile: file}
}

// issue signs a leaf certificate; it returns the certificate and the PEM
// of certificate and key.
func (ca testCA) issue(t *testing.T, cn string, dns []string, ips []net.IP, usage x509.ExtKeyUsage) (*x509.Certificate, []byte, []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pemEncode("CERTIFICATE", der), pemEncode("PRIVATE KEY", kder)
}

func parse(t *testing.T, connString string) *pgconn.Config {
	t.Helper()
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

var zeroPin = "sha256/" + base64.StdEncoding.EncodeToString(make([]byte, 32))

func TestParsePin(t *testing.T) {
	sum := sha256.Sum256([]byte("key"))
	for _, s := range []string{
		base64.StdEncoding.EncodeToString(sum[:]),
		base64.RawStdEncoding.EncodeToString(sum[:]),
		"sha256/" + base64.StdEncoding.EncodeToString(sum[:]),
		"SHA256:" + base64.StdEncoding.EncodeToString(sum[:]),
		hex.EncodeToString(sum[:]),
		strings.ToUpper(hex.EncodeToString(sum[:])),
		" sha256:" + hex.EncodeToString(sum[:]) + " ",
	} {
		b, err := parsePin(s)
		if err != nil || string(b) != string(sum[:]) {
			t.Errorf("parsePin(%q) = %x, %v", s, b, err)
		}
	}
	for _, s := range []string{"", "abc", hex.EncodeToString(sum[:16]), base64.StdEncoding.EncodeToString(sum[:31])} {
		if _, err := parsePin(s); !errors.Is(err, ErrTLSConfig) {
			t.Errorf("parsePin(%q): err = %v, want ErrTLSConfig", s, err)
		}
	}
}

func TestApplyConfig(t *testing.T) {
	ca := newCA(t, "unit CA")

	t.Run("require removes the plaintext fallback", func(t *testing.T) {
		cfg := parse(t, "postgres://u@db.example.com/x") // sslmode=prefer: TLS, then plaintext
		if len(cfg.Fallbacks) != 1 || cfg.Fallbacks[0].TLSConfig != nil {
			t.Fatalf("precondition: prefer should have a plaintext fallback")
		}
		if err := (TLSConfig{Mode: "require"}).Apply(cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.TLSConfig == nil || len(cfg.Fallbacks) != 0 {
			t.Fatalf("TLSConfig=%v fallbacks=%d, want TLS only", cfg.TLSConfig, len(cfg.Fallbacks))
		}
		if cfg.TLSConfig.MinVersion < tls.VersionTLS12 || cfg.TLSConfig.ServerName != "db.example.com" {
			t.Errorf("MinVersion %x ServerName %q", cfg.TLSConfig.MinVersion, cfg.TLSConfig.ServerName)
		}
	})

	t.Run("multi-host keeps hosts, drops plaintext", func(t *testing.T) {
		cfg := parse(t, "postgres://u@a.example.com:5432,b.example.com:5433/x?sslmode=allow")
		if err := (TLSConfig{Mode: "verify-full", CA: ca.pemFile}).Apply(cfg); err != nil {
			t.Fatal(err)
		}
		all := append([]*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port, TLSConfig: cfg.TLSConfig}}, cfg.Fallbacks...)
		if len(all) != 2 || all[0].Host != "a.example.com" || all[1].Host != "b.example.com" || all[1].Port != 5433 {
			t.Fatalf("hosts: %+v", all)
		}
		for _, fb := range all {
			if fb.TLSConfig == nil || fb.TLSConfig.InsecureSkipVerify || fb.TLSConfig.ServerName != fb.Host {
				t.Errorf("%s: want verify-full TLS, got %+v", fb.Host, fb.TLSConfig)
			}
		}
	})

	t.Run("disable", func(t *testing.T) {
		cfg := parse(t, "postgres://u@db.example.com/x?sslmode=require")
		if err := (TLSConfig{Mode: "disable"}).Apply(cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.TLSConfig != nil || len(cfg.Fallbacks) != 0 {
			t.Fatalf("disable left TLS: %v %d", cfg.TLSConfig, len(cfg.Fallbacks))
		}
	})

	t.Run("zero value keeps the connection string", func(t *testing.T) {
		cfg := parse(t, "postgres://u@db.example.com/x")
		tc, fbs := cfg.TLSConfig, len(cfg.Fallbacks)
		if err := (TLSConfig{}).Apply(cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.TLSConfig != tc || len(cfg.Fallbacks) != fbs {
			t.Fatal("zero TLSConfig changed the connection's TLS")
		}
	})

	t.Run("client certificate", func(t *testing.T) {
		_, certPEM, keyPEM := ca.issue(t, "pgphi", nil, nil, x509.ExtKeyUsageClientAuth)
		dir := t.TempDir()
		certFile, keyFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
		if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := parse(t, "postgres://u@db.example.com/x")
		if err := (TLSConfig{Mode: "verify-full", Cert: certFile, Key: keyFile}).Apply(cfg); err != nil {
			t.Fatal(err)
		}
		if len(cfg.TLSConfig.Certificates) != 1 {
			t.Fatal("client certificate not set")
		}
	})

	for name, tc := range map[string]struct {
		conn string
		t    TLSConfig
	}{
		"unknown mode":            {"postgres://u@h/x", TLSConfig{Mode: "prefer"}},
		"bad pin":                 {"postgres://u@h/x", TLSConfig{Mode: "require", PinSHA256: []string{"nope"}}},
		"pins with disable":       {"postgres://u@h/x", TLSConfig{Mode: "disable", PinSHA256: []string{zeroPin}}},
		"pins, URL says disable":  {"postgres://u@h/x?sslmode=disable", TLSConfig{PinSHA256: []string{zeroPin}}},
		"cert without key":        {"postgres://u@h/x", TLSConfig{Mode: "require", Cert: "/nonexistent.crt"}},
		"missing CA file":         {"postgres://u@h/x", TLSConfig{Mode: "verify-full", CA: "/nonexistent/ca.pem"}},
		"CA file without any PEM": {"postgres://u@h/x", TLSConfig{Mode: "verify-full", CA: "/dev/null"}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := tc.t.Apply(parse(t, tc.conn)); !errors.Is(err, ErrTLSConfig) {
				t.Fatalf("err = %v, want ErrTLSConfig", err)
			}
		})
	}
}

func TestCheckPolicy(t *testing.T) {
	ca := newCA(t, "policy CA")
	pin := []string{zeroPin}
	for _, tc := range []struct {
		env, conn string
		t         TLSConfig
		apply     bool // Apply t before CheckPolicy
		refused   bool
	}{
		{"production", "postgres://u@db.example.com/x?sslmode=require", TLSConfig{}, false, true},
		{"production", "postgres://u@db.example.com/x", TLSConfig{}, false, true}, // prefer
		{"production", "postgres://u@db.example.com/x?sslmode=disable", TLSConfig{Mode: "require"}, false, true},
		{"production", "postgres://u@db.example.com/x", TLSConfig{Mode: "verify-ca", CA: ca.pemFile}, false, true},
		{"production", "postgres://u@db.example.com/x", TLSConfig{Mode: "require", CA: ca.pemFile}, true, true}, // = verify-ca
		{"Production", "postgres://u@db.example.com/x", TLSConfig{Mode: "require"}, true, true},
		{"prod", "postgres://u@db.example.com/x?sslmode=disable", TLSConfig{}, false, false}, // not an environment (config refuses it)
		{"production", "postgres://u@127.0.0.1,db.example.com/x?sslmode=require", TLSConfig{}, false, true},
		{"production", "postgres://u@db.example.com/x", TLSConfig{Mode: "verify-full"}, false, false},
		{"production", "postgres://u@db.example.com/x", TLSConfig{Mode: "verify-full", CA: ca.pemFile}, true, false},
		{"production", "postgres://u@db.example.com/x?sslmode=verify-full", TLSConfig{}, false, false},
		{"production", "postgres://u@db.example.com/x?sslmode=verify-full", TLSConfig{CA: ca.pemFile}, true, false},
		{"production", "postgres://u@db.example.com/x", TLSConfig{Mode: "require", PinSHA256: pin}, false, false},
		{"production", "postgres://u@db.example.com/x", TLSConfig{PinSHA256: pin}, true, false},
		{"production", "postgres://u@db.example.com/x?sslmode=verify-ca&sslrootcert=" + ca.pemFile, TLSConfig{PinSHA256: pin}, true, false},
		{"production", "postgres://u@/x?host=/var/run/postgresql&sslmode=disable", TLSConfig{}, false, false},
		{"production", "postgres://u@/x?host=/var/run/postgresql", TLSConfig{Mode: "require"}, true, false},
		{"production", "postgres://u@127.0.0.1/x?sslmode=disable", TLSConfig{}, false, false},
		{"production", "postgres://u@127.0.0.2/x?sslmode=require", TLSConfig{}, false, false},
		{"production", "postgres://u@localhost/x?sslmode=disable", TLSConfig{}, false, false},
		{"production", "postgres://u@[::1]/x?sslmode=disable", TLSConfig{}, false, false},
		{"development", "postgres://u@db.example.com/x?sslmode=disable", TLSConfig{}, false, false},
		{"staging", "postgres://u@db.example.com/x", TLSConfig{Mode: "require"}, false, false},
	} {
		name := fmt.Sprintf("%s %s %+v apply=%v", tc.env, tc.conn, tc.t, tc.apply)
		cfg := parse(t, tc.conn)
		if tc.apply {
			if err := tc.t.Apply(cfg); err != nil {
				t.Fatalf("%s: Apply: %v", name, err)
			}
		}
		err := tc.t.CheckPolicy(tc.env, cfg)
		switch {
		case tc.refused && !errors.Is(err, ErrTLSPolicy):
			t.Errorf("%s: err = %v, want ErrTLSPolicy", name, err)
		case tc.refused && !(strings.Contains(err.Error(), "verify-full") && strings.Contains(err.Error(), "pin_sha256")):
			t.Errorf("%s: refusal does not explain the fix: %v", name, err)
		case !tc.refused && err != nil:
			t.Errorf("%s: err = %v, want nil", name, err)
		}
	}
}

// tlsServer is a real PostgreSQL with ssl=on and a certificate for
// localhost and 127.0.0.1 signed by ca.
type tlsServer struct {
	c          *pgcluster.Cluster
	ca, other  testCA
	serverCert *x509.Certificate
}

func (s *tlsServer) url(host string) string {
	return fmt.Sprintf("postgres://postgres@%s/postgres", net.JoinHostPort(host, fmt.Sprint(s.c.Port())))
}

func startTLSServer(t *testing.T, ctx context.Context) *tlsServer {
	t.Helper()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Fast: true})
	if err != nil {
		if errors.Is(err, pgcluster.ErrNoServerBinaries) && os.Getenv("CI") == "" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return &tlsServer{c: c, ca: newCA(t, "pgphi test CA"), other: newCA(t, "some other CA")}
}

// enableSSL installs the server certificate and turns ssl on by reload.
func (s *tlsServer) enableSSL(t *testing.T, ctx context.Context) {
	t.Helper()
	cert, certPEM, keyPEM := s.ca.issue(t, "localhost", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, x509.ExtKeyUsageServerAuth)
	s.serverCert = cert
	dir := s.c.DataDir()
	for name, b := range map[string][]byte{"server.crt": certPEM, "server.key": keyPEM} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := chownLike(p, dir); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := Conn(ctx, s.c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, sql := range []string{"ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// The reload is asynchronous: wait until a TLS connection succeeds.
	deadline := time.Now().Add(10 * time.Second)
	for {
		pc, err := pgconn.Connect(ctx, s.url("127.0.0.1")+"?sslmode=require")
		if err == nil {
			pc.Close(ctx)
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(s.c.LogFile())
			t.Fatalf("server did not enable ssl: %v\nserver log:\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func describePool(t *testing.T, ctx context.Context, pool *pgxpool.Pool) string {
	t.Helper()
	c, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	return DescribeConn(c.Conn().PgConn())
}

func wantTLSVerify(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrTLSVerify) || !errors.Is(err, ErrConnect) || errors.Is(err, ErrTLSPolicy) {
		t.Fatalf("err = %v, want ErrTLSVerify and ErrConnect", err)
	}
	t.Logf("error: %v", err)
}

func TestTLSAgainstPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := startTLSServer(t, ctx)

	// Before ssl is on: TLS required, server refuses it → ErrTLSVerify,
	// and no plaintext fallback even though the URL says sslmode=disable.
	_, err := OpenWithTLS(ctx, s.c.URL("postgres"), 1, TLSConfig{Mode: "require"}, "development")
	wantTLSVerify(t, err)

	s.enableSSL(t, ctx)
	pin := SPKIPin(s.serverCert)
	sum := sha256.Sum256(s.serverCert.RawSubjectPublicKeyInfo)
	hexPin := hex.EncodeToString(sum[:])

	ok := func(t *testing.T, connString string, tc TLSConfig, env string, want ...string) {
		t.Helper()
		pool, err := OpenWithTLS(ctx, connString, 1, tc, env)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		var one int
		if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			t.Fatal(err)
		}
		d := describePool(t, ctx, pool)
		for _, w := range want {
			if !strings.Contains(d, w) {
				t.Errorf("DescribeConn = %q, want it to contain %q", d, w)
			}
		}
		t.Logf("DescribeConn: %s", d)
	}

	t.Run("verify-full with the right CA", func(t *testing.T) {
		ok(t, s.c.URL("postgres"), TLSConfig{Mode: "verify-full", CA: s.ca.pemFile}, "production",
			"TLS 1.", "verify-full", "not pinned")
	})
	t.Run("verify-full to localhost", func(t *testing.T) {
		ok(t, s.url("localhost"), TLSConfig{Mode: "verify-full", CA: s.ca.pemFile}, "production", "TLS 1.", "verify-full")
	})
	t.Run("verify-full from the connection string", func(t *testing.T) {
		u := s.url("127.0.0.1") + "?sslmode=verify-full&sslrootcert=" + url.QueryEscape(s.ca.pemFile)
		ok(t, u, TLSConfig{}, "production", "TLS 1.", "verify-full")
	})
	t.Run("verify-full with another CA fails", func(t *testing.T) {
		_, err := OpenWithTLS(ctx, s.c.URL("postgres"), 1, TLSConfig{Mode: "verify-full", CA: s.other.pemFile}, "production")
		wantTLSVerify(t, err)
	})
	t.Run("verify-ca with another CA fails", func(t *testing.T) {
		_, err := OpenWithTLS(ctx, s.c.URL("postgres"), 1, TLSConfig{Mode: "verify-ca", CA: s.other.pemFile}, "development")
		wantTLSVerify(t, err)
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.ServerPin != pin {
			t.Fatalf("want a VerifyError with the server pin, got %v", err)
		}
	})
	t.Run("host name: verify-full fails, verify-ca passes", func(t *testing.T) {
		connect := func(mode string) error {
			cfg := parse(t, "postgres://postgres@db.example.test:"+fmt.Sprint(s.c.Port())+"/postgres")
			cfg.LookupFunc = func(context.Context, string) ([]string, error) { return []string{"127.0.0.1"}, nil }
			if err := (TLSConfig{Mode: mode, CA: s.ca.pemFile}).Apply(cfg); err != nil {
				t.Fatal(err)
			}
			pc, err := pgconn.ConnectConfig(ctx, cfg)
			if err != nil {
				return connectError(err, cfg, "")
			}
			defer pc.Close(ctx)
			if d := DescribeConn(pc); !strings.Contains(d, mode) {
				t.Errorf("DescribeConn = %q, want %q", d, mode)
			}
			return nil
		}
		err := connect("verify-full")
		wantTLSVerify(t, err)
		var he x509.HostnameError
		if !errors.As(err, &he) && !strings.Contains(err.Error(), "db.example.test") {
			t.Errorf("error does not name the host mismatch: %v", err)
		}
		if err := connect("verify-ca"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("right pin with require and no CA", func(t *testing.T) {
		ok(t, s.c.URL("postgres"), TLSConfig{Mode: "require", PinSHA256: []string{zeroPin, pin}}, "production",
			"TLS 1.", "require", "server key pinned ("+pin+")")
	})
	t.Run("pins alone make TLS mandatory", func(t *testing.T) {
		ok(t, s.url("127.0.0.1"), TLSConfig{PinSHA256: []string{hexPin}}, "production", "TLS 1.", "pinned")
	})
	t.Run("right CA and right pin", func(t *testing.T) {
		ok(t, s.c.URL("postgres"), TLSConfig{Mode: "verify-full", CA: s.ca.pemFile, PinSHA256: []string{hexPin}}, "production",
			"verify-full", "server key pinned")
	})
	t.Run("wrong pin fails", func(t *testing.T) {
		_, err := OpenWithTLS(ctx, s.c.URL("postgres"), 1, TLSConfig{Mode: "require", PinSHA256: []string{zeroPin}}, "production")
		wantTLSVerify(t, err)
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.ServerPin != pin {
			t.Fatalf("want a VerifyError with the server pin, got %v", err)
		}
		if !strings.Contains(err.Error(), "the server's key is "+pin+": add it to pin_sha256") {
			t.Errorf("message does not give the pin to add: %v", err)
		}
	})
	t.Run("right CA, wrong pin fails", func(t *testing.T) {
		_, err := OpenWithTLS(ctx, s.c.URL("postgres"), 1, TLSConfig{Mode: "verify-full", CA: s.ca.pemFile, PinSHA256: []string{zeroPin}}, "production")
		wantTLSVerify(t, err)
	})
	t.Run("production require over loopback is allowed", func(t *testing.T) {
		ok(t, s.c.URL("postgres"), TLSConfig{Mode: "require"}, "production", "require (certificate chain not verified)", "not pinned")
	})
	t.Run("production over a Unix socket", func(t *testing.T) {
		u := fmt.Sprintf("postgres://postgres@/postgres?host=%s&port=%d", url.QueryEscape(s.c.SocketDir()), s.c.Port())
		ok(t, u, TLSConfig{Mode: "require"}, "production", "Unix socket (no TLS needed)")
	})
	t.Run("plaintext TCP is described", func(t *testing.T) {
		ok(t, s.c.URL("postgres"), TLSConfig{Mode: "disable"}, "development", "plaintext TCP (no TLS), loopback")
	})
	t.Run("policy refusal dials nothing", func(t *testing.T) {
		u := "postgres://postgres@db.example.test:1/postgres?sslmode=require"
		_, err := OpenWithTLS(ctx, u, 1, TLSConfig{}, "production")
		if !errors.Is(err, ErrTLSPolicy) || errors.Is(err, ErrConnect) {
			t.Fatalf("err = %v, want ErrTLSPolicy only", err)
		}
	})
}
