package dbconn

// TLS for database connections (45 CFR 164.312(e), transmission security).
//
// TLSConfig layers pgphi's database.tls settings over what the connection
// string says. Verification is done by crypto/tls and crypto/x509:
//
//   - verify-full: Go's standard verification (chain to the CA, host name
//     against the host being dialled), plus pins when given;
//   - verify-ca: the chain to the CA, no host name check (libpq semantics);
//   - require: no chain verification; with pins the server's public key must
//     match one of them, which is the whole check.
//
// A pin is the SHA-256 of the server leaf certificate's SubjectPublicKeyInfo,
// so it survives certificate renewal as long as the key is reused.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/config"
)

// TLS modes, as in libpq's sslmode.
const (
	TLSDisable    = "disable"
	TLSRequire    = "require"
	TLSVerifyCA   = "verify-ca"
	TLSVerifyFull = "verify-full"
)

// TLSConfig is the database.tls section of pgphi.yaml.
type TLSConfig struct {
	// Mode is disable, require, verify-ca or verify-full. "" keeps the
	// connection string's sslmode, except that giving CA, Cert/Key or pins
	// makes TLS mandatory (prefer/allow become require; require with a CA
	// becomes verify-ca, as in libpq).
	Mode string
	// CA is a PEM file of CA certificates. Empty: the CA of the connection
	// string (sslrootcert), else the system roots.
	CA string
	// Cert and Key are the client certificate and key (PEM files). Both or
	// neither.
	Cert, Key string
	// PinSHA256 are SHA-256 hashes of the server certificate's
	// SubjectPublicKeyInfo, as standard base64 or hex, optionally prefixed
	// "sha256/" or "sha256:". Any match passes.
	PinSHA256 []string
}

var (
	// ErrTLSPolicy is wrapped by CheckPolicy's refusals (exit code 4).
	ErrTLSPolicy = errors.New("TLS policy")
	// ErrTLSVerify is wrapped by connection failures caused by TLS: the
	// server's certificate chain, host name or pinned key did not verify,
	// or the server refused TLS when TLS was required (exit code 4).
	// Such errors also wrap ErrConnect; check ErrTLSVerify first.
	ErrTLSVerify = errors.New("TLS verification failed")
	// ErrTLSConfig is wrapped by Apply's errors: an unknown mode, an
	// unreadable CA or client key pair, a malformed pin, or a contradiction
	// such as pins with TLS disabled (a configuration error, exit code 2).
	ErrTLSConfig = errors.New("invalid TLS configuration")
)

// VerifyError is the error of a failed server verification done by pgphi
// (verify-ca chain check, pin check). It wraps ErrTLSVerify. It contains no
// secret: host names and public-key hashes only.
type VerifyError struct {
	Host      string // the host dialled
	ServerPin string // SPKIPin of the server's leaf certificate ("" if none was sent)
	Reason    string
	Err       error // the x509 error, if any
}

func (e *VerifyError) Error() string {
	msg := fmt.Sprintf("TLS verification of %s failed: %s", e.Host, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns ErrTLSVerify and the underlying x509 error.
func (e *VerifyError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrTLSVerify, e.Err}
	}
	return []error{ErrTLSVerify}
}

// SPKIPin returns the pin of a certificate's public key:
// "sha256/" followed by the standard base64 of the SHA-256 of its
// SubjectPublicKeyInfo. The form is accepted in pin_sha256.
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256/" + base64.StdEncoding.EncodeToString(sum[:])
}

// parsePin decodes one pin_sha256 entry.
func parsePin(s string) ([]byte, error) {
	p := strings.TrimSpace(s)
	for _, prefix := range []string{"sha256/", "sha256:", "sha256="} {
		if len(p) >= len(prefix) && strings.EqualFold(p[:len(prefix)], prefix) {
			p = p[len(prefix):]
			break
		}
	}
	if h := strings.ReplaceAll(p, ":", ""); len(h) == 2*sha256.Size {
		if b, err := hex.DecodeString(h); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(p); err == nil && len(b) == sha256.Size {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w: pin_sha256 `%s` is not a SHA-256 in base64 or hex (e.g. sha256/%s)",
		ErrTLSConfig, s, base64.StdEncoding.EncodeToString(make([]byte, sha256.Size)))
}

func (t TLSConfig) pins() ([][]byte, error) {
	var out [][]byte
	for _, s := range t.PinSHA256 {
		b, err := parsePin(s)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (t TLSConfig) hasMaterial() bool {
	return t.CA != "" || t.Cert != "" || t.Key != "" || len(t.PinSHA256) > 0
}

// hostEntry is one host of a connection config with its connection
// attempts.
type hostEntry struct {
	host string
	port uint16
	tls  []*tls.Config // one per attempt, nil = plaintext
}

// entries groups cfg's primary and fallback attempts by host and port.
func entries(cfg *pgconn.Config) []*hostEntry {
	var out []*hostEntry
	add := func(host string, port uint16, tc *tls.Config) {
		for _, e := range out {
			if e.host == host && e.port == port {
				e.tls = append(e.tls, tc)
				return
			}
		}
		out = append(out, &hostEntry{host: host, port: port, tls: []*tls.Config{tc}})
	}
	add(cfg.Host, cfg.Port, cfg.TLSConfig)
	for _, fb := range cfg.Fallbacks {
		if fb != nil {
			add(fb.Host, fb.Port, fb.TLSConfig)
		}
	}
	return out
}

func isUnixSocket(host string) bool { return strings.HasPrefix(host, "/") }

// inferMode reads the mode a host's TLS attempts implement, as produced by
// pgconn.ParseConfig or by Apply: disable, prefer (a TLS and a plaintext
// attempt), require, verify-ca, verify-full, or unix (a Unix socket).
func (e *hostEntry) inferMode() string {
	if isUnixSocket(e.host) {
		return "unix"
	}
	var tc *tls.Config
	plain := false
	for _, c := range e.tls {
		if c == nil {
			plain = true
		} else if tc == nil {
			tc = c
		}
	}
	switch {
	case tc == nil:
		return TLSDisable
	case plain:
		return "prefer"
	case !tc.InsecureSkipVerify:
		return TLSVerifyFull
	case tc.VerifyPeerCertificate != nil:
		return TLSVerifyCA
	default:
		return TLSRequire
	}
}

// effectiveMode is the mode Apply enforces for a host whose connection
// string mode is inferred.
func (t TLSConfig) effectiveMode(inferred string) (string, error) {
	mode := t.Mode
	switch mode {
	case "":
		mode = inferred
		if t.hasMaterial() {
			switch mode {
			case TLSDisable:
				return "", fmt.Errorf("%w: the connection string says sslmode=disable but database.tls sets a CA, client certificate or pins; set database.tls.mode", ErrTLSConfig)
			case "prefer":
				mode = TLSRequire
			}
		}
	case TLSDisable, TLSRequire, TLSVerifyCA, TLSVerifyFull:
	default:
		return "", errUnknownMode(t.Mode)
	}
	if mode == TLSDisable && t.hasMaterial() {
		return "", fmt.Errorf("%w: TLS mode disable contradicts the CA, client certificate or pins given", ErrTLSConfig)
	}
	if mode == TLSRequire && t.CA != "" {
		mode = TLSVerifyCA // libpq: require with a root CA verifies the chain
	}
	return mode, nil
}

func errUnknownMode(mode string) error {
	return fmt.Errorf("%w: unknown TLS mode `%s`: use disable, require, verify-ca or verify-full", ErrTLSConfig, mode)
}

// connInfo is what Apply records on each connection for DescribeConn.
type connInfo struct {
	mode   string
	pinned bool
}

const customDataKey = "pgphi.dbconn.tls"

// Apply sets cfg's TLS from t: cfg.TLSConfig and cfg.Fallbacks for every TCP
// host (Unix sockets never use TLS). Unless the mode is disable, no
// plaintext attempt is left in cfg.Fallbacks. With pins, the server leaf's
// SPKI hash must match one pin (checked in tls.Config.VerifyConnection), in
// addition to chain verification (verify-ca, verify-full) or instead of it
// (require). verify-full checks the certificate against the host dialled
// (cfg.Host, or the fallback's host). With t's zero value the connection
// string's TLS settings are kept unchanged.
//
// Apply also records the mode on every connection made with cfg, for
// DescribeConn. Errors wrap ErrTLSConfig.
func (t TLSConfig) Apply(cfg *pgconn.Config) error {
	if !validMode(t.Mode) {
		return errUnknownMode(t.Mode)
	}
	pins, err := t.pins()
	if err != nil {
		return err
	}
	if (t.Cert == "") != (t.Key == "") {
		return fmt.Errorf("%w: a client certificate needs both cert and key", ErrTLSConfig)
	}
	var roots *x509.CertPool
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return fmt.Errorf("%w: reading CA file: %v", ErrTLSConfig, err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrTLSConfig, t.CA)
		}
	}
	var clientCert *tls.Certificate
	if t.Cert != "" {
		c, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			// The error names files and formats, never key bytes.
			return fmt.Errorf("%w: loading client certificate %s and key %s: %v", ErrTLSConfig, t.Cert, t.Key, err)
		}
		clientCert = &c
	}

	info := connInfo{pinned: len(pins) > 0}
	var fallbacks []*pgconn.FallbackConfig
	for _, e := range entries(cfg) {
		inferred := e.inferMode()
		if inferred == "unix" {
			fallbacks = append(fallbacks, &pgconn.FallbackConfig{Host: e.host, Port: e.port})
			continue
		}
		if t.Mode == "" && !t.hasMaterial() {
			// Keep the connection string's TLS as is.
			if info.mode == "" {
				info.mode = inferred
			}
			for _, tc := range e.tls {
				fallbacks = append(fallbacks, &pgconn.FallbackConfig{Host: e.host, Port: e.port, TLSConfig: tc})
			}
			continue
		}
		mode, err := t.effectiveMode(inferred)
		if err != nil {
			return err
		}
		if info.mode == "" {
			info.mode = mode
		}
		var tc *tls.Config
		if mode != TLSDisable {
			var base *tls.Config
			for _, c := range e.tls {
				if c != nil {
					base = c
					break
				}
			}
			tc = buildTLS(base, cfg, e.host, mode, roots, clientCert, pins)
		}
		fallbacks = append(fallbacks, &pgconn.FallbackConfig{Host: e.host, Port: e.port, TLSConfig: tc})
	}
	if info.mode == "" {
		info.mode = "unix"
	}
	cfg.Host, cfg.Port, cfg.TLSConfig = fallbacks[0].Host, fallbacks[0].Port, fallbacks[0].TLSConfig
	cfg.Fallbacks = fallbacks[1:]

	prev := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
		pc.CustomData()[customDataKey] = info
		if prev != nil {
			return prev(ctx, pc)
		}
		return nil
	}
	return nil
}

// buildTLS makes the tls.Config for one TCP host. base is the connection
// string's config for the host (nil if none): its roots, client
// certificate, SNI and ALPN are kept unless t replaces them.
func buildTLS(base *tls.Config, cfg *pgconn.Config, host, mode string, roots *x509.CertPool,
	clientCert *tls.Certificate, pins [][]byte) *tls.Config {
	var tc *tls.Config
	if base != nil {
		tc = base.Clone()
	} else {
		tc = &tls.Config{}
		if net.ParseIP(host) == nil {
			tc.ServerName = host // SNI, as libpq with sslsni=1
		}
		if cfg.SSLNegotiation == "direct" {
			tc.NextProtos = []string{"postgresql"}
		}
	}
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	if roots != nil {
		tc.RootCAs = roots
	}
	if clientCert != nil {
		tc.Certificates = []tls.Certificate{*clientCert}
		tc.GetClientCertificate = nil
	}
	tc.VerifyPeerCertificate = nil
	tc.VerifyConnection = nil

	switch mode {
	case TLSVerifyFull:
		// Go's standard verification: chain and host name (an IP host is
		// checked against the certificate's IP addresses).
		tc.InsecureSkipVerify = false
		tc.ServerName = host
	case TLSVerifyCA:
		// libpq's verify-ca: the chain, not the host name. Go cannot verify
		// a chain without a name, so it is checked here.
		tc.InsecureSkipVerify = true
		pool := tc.RootCAs
		tc.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyChain(host, raw, pool)
		}
	case TLSRequire:
		tc.InsecureSkipVerify = true // encryption only, unless pinned below
	}
	if len(pins) > 0 {
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyPin(host, cs.PeerCertificates, pins)
		}
	}
	return tc
}

func verifyChain(host string, raw [][]byte, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return &VerifyError{Host: host, Reason: "the server sent no certificate"}
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return &VerifyError{Host: host, Reason: "cannot parse the server's certificate", Err: err}
		}
		certs[i] = c
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return &VerifyError{Host: host, ServerPin: SPKIPin(certs[0]), Reason: "the server's certificate is not signed by a trusted CA", Err: err}
	}
	return nil
}

func verifyPin(host string, certs []*x509.Certificate, pins [][]byte) error {
	if len(certs) == 0 {
		return &VerifyError{Host: host, Reason: "the server sent no certificate"}
	}
	sum := sha256.Sum256(certs[0].RawSubjectPublicKeyInfo)
	for _, p := range pins {
		if bytes.Equal(sum[:], p) {
			return nil
		}
	}
	pin := SPKIPin(certs[0])
	return &VerifyError{Host: host, ServerPin: pin,
		Reason: fmt.Sprintf("the server's key matches no pin: the server's key is %s: add it to pin_sha256 if you trust it", pin)}
}

// isProduction reports whether environment gets the production TLS policy:
// config.IsProductionEnvironment, the one notion of production that
// approvals share (config refuses unknown environment names).
func isProduction(environment string) bool {
	return config.IsProductionEnvironment(strings.ToLower(environment))
}

// isLoopback reports whether host is "localhost" or a loopback IP literal.
// Names other than localhost are not resolved.
func isLoopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// CheckPolicy enforces the transmission-security policy. In production
// (environment "production") every host of cfg must be a Unix
// socket, a loopback address ("localhost", 127.0.0.0/8, ::1; names are not
// resolved), or be reached with TLS that is verify-full or pinned (pins in t,
// mode not disable). Other environments pass. cfg may be given before or
// after t.Apply. Refusals wrap ErrTLSPolicy and say how to fix them; a
// contradictory t gives Apply's ErrTLSConfig error.
func (t TLSConfig) CheckPolicy(environment string, cfg *pgconn.Config) error {
	if !isProduction(environment) {
		return nil
	}
	if _, err := t.pins(); err != nil {
		return err
	}
	for _, e := range entries(cfg) {
		inferred := e.inferMode()
		if inferred == "unix" || isLoopback(e.host) {
			continue
		}
		mode := inferred
		if t.Mode != "" || t.hasMaterial() {
			m, err := t.effectiveMode(inferred)
			if err != nil {
				return err
			}
			mode = m
		}
		if mode == TLSVerifyFull || (mode != TLSDisable && mode != "prefer" && len(t.PinSHA256) > 0) {
			continue
		}
		return fmt.Errorf("%w: in %s, the connection to %s must verify the server (it is %s): "+
			"set database.tls.mode: verify-full with database.tls.ca (or sslmode=verify-full&sslrootcert=FILE in the URL), "+
			"or pin the server's key with database.tls.pin_sha256 (a connection with a wrong pin reports the server's key); "+
			"Unix sockets and loopback addresses are exempt",
			ErrTLSPolicy, environment, e.host, describeMode(mode))
	}
	return nil
}

func describeMode(mode string) string {
	switch mode {
	case TLSDisable:
		return "without TLS"
	case "prefer":
		return "TLS if available, unverified, plaintext fallback (sslmode=prefer/allow)"
	case TLSRequire:
		return "TLS without server verification (require)"
	case TLSVerifyCA:
		return "verify-ca, which does not check the host name"
	}
	return mode
}

// DescribeConn returns a one-line, secret-free description of the security
// of a live connection, e.g. "TLS 1.3 (TLS_AES_128_GCM_SHA256), verify-full,
// server key pinned (sha256/...)", "Unix socket (no TLS needed)" or
// "plaintext TCP (no TLS), loopback". The mode and pinning are known for
// connections configured with TLSConfig.Apply (or OpenWithTLS); otherwise
// the description says the verification is unknown.
func DescribeConn(c *pgconn.PgConn) string {
	if c == nil || c.Conn() == nil {
		return "not connected"
	}
	nc := c.Conn()
	if addr := nc.RemoteAddr(); addr != nil && addr.Network() == "unix" {
		return "Unix socket (no TLS needed)"
	}
	info, known := c.CustomData()[customDataKey].(connInfo)
	tc, ok := nc.(*tls.Conn)
	if !ok {
		s := "plaintext TCP (no TLS)"
		if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
			s += ", loopback"
		}
		return s
	}
	cs := tc.ConnectionState()
	parts := []string{fmt.Sprintf("%s (%s)", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))}
	switch {
	case !known:
		parts = append(parts, "server verification unknown")
	case info.mode == TLSRequire || info.mode == "prefer":
		parts = append(parts, info.mode+" (certificate chain not verified)")
	default:
		parts = append(parts, info.mode)
	}
	if len(cs.PeerCertificates) > 0 {
		pin := SPKIPin(cs.PeerCertificates[0])
		if known && info.pinned {
			parts = append(parts, "server key pinned ("+pin+")")
		} else {
			parts = append(parts, "server key "+pin+" (not pinned)")
		}
	}
	return strings.Join(parts, ", ")
}

// tlsFailure reports whether a connection error was caused by TLS
// verification, a pin mismatch, or a server refusing required TLS.
func tlsFailure(err error) bool {
	var (
		ve  *VerifyError
		cve *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
	)
	return errors.As(err, &ve) || errors.As(err, &cve) || errors.As(err, &ua) ||
		errors.As(err, &he) || errors.As(err, &ci) ||
		strings.Contains(err.Error(), "server refused TLS connection")
}

// connectError wraps a connection failure in ErrConnect, and in ErrTLSVerify
// too when TLS caused it. Passwords are scrubbed from the message. The
// result is pgphi's own error type: a connection failure names host, port,
// database and role, never a value, and its text is kept whole when printed.
func connectError(err error, cfg *pgconn.Config, connString string) error {
	where := fmt.Sprintf("host %s, port %d, database %s, user %s", cfg.Host, cfg.Port, cfg.Database, cfg.User)
	var ve *VerifyError
	switch {
	case errors.As(err, &ve):
		return &connectFailure{msg: fmt.Sprintf("%v (%s): %v", ErrConnect, where, ve), errs: []error{ErrConnect, ve}}
	case tlsFailure(err):
		sc := scrub(err, connString)
		return &connectFailure{msg: fmt.Sprintf("%v: %v (%s): %v", ErrConnect, ErrTLSVerify, where, sc), errs: []error{ErrConnect, ErrTLSVerify, sc}}
	}
	sc := scrub(err, connString)
	return &connectFailure{msg: fmt.Sprintf("%v (%s): %v", ErrConnect, where, sc), errs: []error{ErrConnect, sc}}
}

// connectFailure is a failure to connect, as connectError describes it.
type connectFailure struct {
	msg  string
	errs []error
}

func (e *connectFailure) Error() string   { return e.msg }
func (e *connectFailure) Unwrap() []error { return e.errs }

// OpenWithTLS is Open with TLS: it parses connString, sets the canonical
// session settings, applies t, checks the production policy for
// environment, then connects a pool of up to maxConns connections and
// pings it.
//
// Errors: Apply's configuration errors wrap ErrTLSConfig; policy refusals
// wrap ErrTLSPolicy (nothing is dialled); connection failures wrap
// ErrConnect; failures of TLS verification (chain, host name, pin) or a
// server refusing required TLS wrap both ErrConnect and ErrTLSVerify, and
// ErrTLSVerify wins: callers test it before ErrConnect and exit 4
// ("refused by policy"), not 3.
func OpenWithTLS(ctx context.Context, connString string, maxConns int, t TLSConfig, environment string, opts ...Option) (*pgxpool.Pool, error) {
	cfg, err := poolConfig(connString, maxConns)
	if err != nil {
		return nil, err
	}
	for _, o := range opts {
		o(cfg)
	}
	pc := &cfg.ConnConfig.Config
	if err := t.Apply(pc); err != nil {
		return nil, err
	}
	if err := t.CheckPolicy(environment, pc); err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, connectError(err, pc, connString)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, connectError(err, pc, connString)
	}
	return pool, nil
}

// validMode reports whether mode is "" or one of disable, require,
// verify-ca, verify-full.
func validMode(mode string) bool {
	return mode == "" || slices.Contains([]string{TLSDisable, TLSRequire, TLSVerifyCA, TLSVerifyFull}, mode)
}
