package serve_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgphi/pgphi/internal/cli"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/serve"
)

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// pgphi runs the command line in this process as role, with the key file.
func (f *fixture) pgphi(t *testing.T, role string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Setenv("PGPHI_KEY_FILE", f.keyFile)
	t.Setenv("PGPHI_CONFIG", "")
	t.Chdir(t.TempDir())
	var out, errb syncBuffer
	code = cli.Main(append(args, "--database-url", f.actors.URL(role)), &out, &errb)
	return code, out.String(), errb.String()
}

// Token commands: create prints the token once, list never shows it,
// revoke stops it; each is audited with the client's name and role.
func TestTokenCommands(t *testing.T) {
	f := newFixture(t)
	before := f.auditHead(t)
	code, out, errOut := f.pgphi(t, f.actors.DBA, "serve", "token", "create", "ward-7", "--role", f.actors.HealthcareAdmin)
	token := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(token, "pgphi_") {
		t.Fatalf("create: %d %q %s", code, out, errOut)
	}
	recs := f.auditRecords(t, before)
	if len(recs) != 2 || recs[1].Command != "serve token" || recs[1].Event != "success" || recs[1].Details["client"] != "ward-7" ||
		recs[1].Details["client_role"] != f.actors.HealthcareAdmin || recs[1].Details["action"] != "create" {
		t.Fatalf("create audit: %+v", recs)
	}
	if status, _, raw := f.call(t, "GET", "/v1/flags", token, nil); status != 200 {
		t.Fatalf("new token: %d %s", status, raw)
	}
	code, _, errOut = f.pgphi(t, f.actors.DBA, "serve", "token", "create", "ward-8", "--role", "no_such_role")
	if code != cli.ExitUsage || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("unknown role: %d %s", code, errOut)
	}
	code, _, errOut = f.pgphi(t, f.actors.DBA, "serve", "token", "create", "ward-7", "--role", f.actors.HealthcareAdmin)
	if code != cli.ExitUsage || !strings.Contains(errOut, "revoke it first") {
		t.Fatalf("second client of one name: %d %s", code, errOut)
	}
	code, _, errOut = f.pgphi(t, f.actors.DBA, "serve", "token", "create", "Ward 8", "--role", f.actors.HealthcareAdmin)
	if code != cli.ExitUsage {
		t.Fatalf("bad name: %d %s", code, errOut)
	}
	code, out, _ = f.pgphi(t, f.actors.DBA, "serve", "token", "list")
	if code != 0 || !strings.Contains(out, "ward-7") || strings.Contains(out, token) || strings.Contains(out, token[6:20]) {
		t.Fatalf("list: %d %s", code, out)
	}
	// Only the dba group registers clients; the refusal is audited.
	before = f.auditHead(t)
	if code, _, _ := f.pgphi(t, f.actors.HealthcareAdmin, "serve", "token", "create", "sneaky", "--role", f.actors.DBA); code != cli.ExitRefused {
		t.Fatalf("healthcare_admin created a client: exit %d", code)
	}
	if recs := f.auditRecords(t, before); len(recs) == 0 || recs[len(recs)-1].Event != "refused" {
		t.Fatalf("refusal audit: %+v", recs)
	}
	// No role but the schema's owner (the dba group, bounded by detection:
	// THREAT-MODEL.md) writes the table directly.
	for _, role := range []string{f.actors.HealthcareAdmin, f.actors.AuditOfficer, f.actors.AppWriter, f.actors.Outsider, f.serveLogin} {
		c := f.actors.Connect(t, role)
		if _, err := c.Exec(context.Background(), "INSERT INTO pgphi.serve_clients (name, db_role, token_sha256, created_at, created_by) VALUES ('x', 'x', sha256('x'), now(), 'x')"); err == nil {
			t.Fatalf("%s inserted a client directly", role)
		}
		if _, err := c.Exec(context.Background(), "UPDATE pgphi.serve_clients SET revoked_at = NULL, revoked_by = NULL"); err == nil {
			t.Fatalf("%s un-revoked clients directly", role)
		}
		if _, err := c.Exec(context.Background(), "SELECT pgphi.serve_client_create('x', $1, sha256('x'), NULL)", role); err == nil {
			t.Fatalf("%s registered a client", role)
		}
	}
	before = f.auditHead(t)
	if code, _, errOut := f.pgphi(t, f.actors.DBA, "serve", "token", "revoke", "ward-7"); code != 0 {
		t.Fatalf("revoke: %d %s", code, errOut)
	}
	if recs := f.auditRecords(t, before); len(recs) != 2 || recs[1].Details["action"] != "revoke" || recs[1].Details["client"] != "ward-7" {
		t.Fatalf("revoke audit: %+v", recs)
	}
	// Decrypt and search look the client up in their transaction: refused
	// at once. Endpoints that reveal no value may know it for AuthCache.
	dec := map[string]any{"table": "patient", "column": "last_name", "reason": "r", "rows": []any{}}
	if status, _, _ := f.call(t, "POST", "/v1/decrypt", token, dec); status != 401 {
		t.Fatalf("revoked token, decrypt: %d", status)
	}
	time.Sleep(serve.DefaultAuthCache + 100*time.Millisecond)
	if status, _, _ := f.call(t, "GET", "/v1/flags", token, nil); status != 401 {
		t.Fatalf("revoked token, flags after the cache: %d", status)
	}
	if code, _, _ := f.pgphi(t, f.actors.DBA, "serve", "token", "revoke", "ward-7"); code != cli.ExitUsage {
		t.Fatalf("revoking twice: exit %d", code)
	}
}

// In production the server speaks only HTTPS: plain HTTP is refused (exit
// 4, audited) even on loopback; with a certificate it serves, and SIGTERM
// stops it gracefully.
func TestProductionNeedsTLS(t *testing.T) {
	f := newFixture(t)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// The first run of a dba pins the config's production environment.
	cfgFile := filepath.Join(t.TempDir(), "pgphi.yaml")
	if err := os.WriteFile(cfgFile, []byte(strings.Replace(patientConfig, "version: 1\n", "version: 1\nenvironment: production\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := f.pgphi(t, f.actors.DBA, "serve", "token", "list", "--config", cfgFile); code != 0 {
		t.Fatalf("pinning production: %d %s", code, errOut)
	}
	if p, err := policy.LoadPins(context.Background(), f.admin); err != nil || p == nil || p.Environment != "production" {
		t.Fatalf("pins: %+v %v", p, err)
	}
	before := f.auditHead(t)
	code, _, errOut := f.pgphi(t, f.serveLogin, "serve", "--listen", "127.0.0.1:0", "--config", cfgFile)
	if code != cli.ExitRefused || !strings.Contains(errOut, "HTTPS") {
		t.Fatalf("plain HTTP in production: exit %d, %s", code, errOut)
	}
	recs := f.auditRecords(t, before)
	if len(recs) != 2 || recs[1].Command != "serve" || recs[1].Event != "refused" || recs[1].Environment != "production" {
		t.Fatalf("audit: %+v", recs)
	}
	code, _, errOut = f.pgphi(t, f.serveLogin, "serve", "--listen", "unix:"+filepath.Join(t.TempDir(), "s"), "--config", cfgFile)
	if code != cli.ExitRefused {
		t.Fatalf("plain HTTP on a socket in production: exit %d, %s", code, errOut)
	}

	certFile, keyFile, roots := selfSigned(t)
	token := f.token(t, "desk", f.actors.HealthcareAdmin)
	// The binary, so that SIGTERM goes to it alone.
	bin := filepath.Join(t.TempDir(), "pgphi")
	build := exec.Command("go", "build", "-o", bin, "./cmd/pgphi")
	build.Dir = filepath.Join(wd, "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var stderr syncBuffer
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile,
		"--metrics-addr", "127.0.0.1:0", "--config", cfgFile, "--database-url", f.actors.URL(f.serveLogin))
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "PGPHI_KEY_FILE=" + f.keyFile}
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()
	addr := regexp.MustCompile(`https://(127\.0\.0\.1:\d+)`)
	var m []string
	for i := 0; i < 200 && m == nil; i++ {
		time.Sleep(50 * time.Millisecond)
		m = addr.FindStringSubmatch(stderr.String())
	}
	if m == nil {
		t.Fatalf("serve did not start: %s", stderr.String())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	req, _ := http.NewRequest("GET", "https://"+m[1]+"/v1/flags", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("flags over HTTPS: %d", resp.StatusCode)
	}
	// Metrics on their own port, plain HTTP, no value.
	mm := regexp.MustCompile(`metrics: serving (http://\S+/metrics)`).FindStringSubmatch(stderr.String())
	if mm == nil {
		t.Fatalf("no metrics address: %s", stderr.String())
	}
	mresp, err := http.Get(mm[1])
	if err != nil {
		t.Fatal(err)
	}
	scrape, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(scrape), `pgphi_serve_requests_total{endpoint="flags",status="200"} 1`) || strings.Contains(string(scrape), token) {
		t.Fatalf("metrics scrape: %s", scrape)
	}
	if resp, err := http.Get("http://" + m[1] + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered on the HTTPS port")
		}
	}
	before = f.auditHead(t)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || !strings.Contains(stderr.String(), "serve: stopped") {
			t.Fatalf("after SIGTERM: %v, %s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	if recs := f.auditRecords(t, before); len(recs) != 1 || recs[0].Command != "serve" || recs[0].Event != "success" {
		t.Fatalf("end record: %+v", recs)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pgphi serve test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}
