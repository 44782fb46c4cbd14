package serve_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/serve"
)

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, name string) ca {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return ca{cert, key}
}

func (c ca) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// A TLS client certificate whose subject CN is registered authenticates
// like a token: its role decrypts, the record names the client; an unknown
// CN, a certificate of another CA and a revoked client are refused.
func TestClientCertificates(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	authority, other := newCA(t, "clients CA"), newCA(t, "another CA")
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(authority.cert)
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{authority.issue(t, "server", true)}, ClientCAs: clientCAs,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
	client, err := pgphi.Open(ctx, f.srvPool, pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	alog, err := audit.Open(ctx, f.srvPool, "")
	if err != nil {
		t.Fatal(err)
	}
	srv := serve.New(serve.Config{Pool: f.srvPool, Client: client, Log: alog, Names: policy.DefaultRoleNames(), Environment: "production",
		Metrics: prometheus.NewRegistry(), Logf: f.logs.Logf})
	ln, err := serve.Listen("127.0.0.1:0", tlsConfig, "production")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln, 5*time.Second) }()
	defer func() { cancel(); <-done }()
	if err := serve.CreateCertificateClient(ctx, f.dba, "ward-9", f.actors.HealthcareAdmin, "ward-9.example"); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(authority.cert)
	call := func(cert *tls.Certificate, token string) (int, error) {
		tc := &tls.Config{RootCAs: roots}
		if cert != nil {
			// Offered whatever CAs the server names.
			tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
		body, _ := json.Marshal(map[string]any{"table": "patient", "column": "last_name", "kind": "exact", "value": "smith", "reason": "ward round"})
		req, _ := http.NewRequest("POST", "https://"+ln.Addr().String()+"/v1/search", bytes.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	good, unknown, foreign := authority.issue(t, "ward-9.example", false), authority.issue(t, "ward-10.example", false), other.issue(t, "ward-9.example", false)
	before := f.auditHead(t)
	if status, err := call(&good, ""); err != nil || status != 200 {
		t.Fatalf("registered certificate: %d %v", status, err)
	}
	recs := f.auditRecords(t, before)
	if len(recs) != 1 || recs[0].Actor.Name != "ward-9" || recs[0].Actor.DBRole != f.actors.HealthcareAdmin || recs[0].Rows != 1 {
		t.Fatalf("audit: %+v", recs)
	}
	before = f.auditHead(t)
	if status, err := call(&unknown, ""); err != nil || status != 401 {
		t.Fatalf("unknown CN: %d %v", status, err)
	}
	if recs := f.auditRecords(t, before); len(recs) != 1 || recs[0].Event != "refused" {
		t.Fatalf("unknown CN audit: %+v", recs)
	}
	// Another CA's certificate with the registered CN: the handshake fails.
	if status, err := call(&foreign, ""); err == nil {
		t.Fatalf("a certificate of another CA was accepted: %d", status)
	}
	if status, err := call(nil, ""); err != nil || status != 401 {
		t.Fatalf("no credential: %d %v", status, err)
	}
	if status, err := call(nil, f.token(t, "desk", f.actors.HealthcareAdmin)); err != nil || status != 200 {
		t.Fatalf("token over TLS: %d %v", status, err)
	}
	if err := serve.Revoke(ctx, f.dba, "ward-9"); err != nil {
		t.Fatal(err)
	}
	if status, err := call(&good, ""); err != nil || status != 401 {
		t.Fatalf("revoked certificate client: %d %v", status, err)
	}
}
