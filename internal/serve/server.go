package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/policy"
)

// Defaults of Config's bounds.
const (
	DefaultMaxBody = 8 << 20 // bytes of a request body
	DefaultMaxRows = 10000   // rows of one request
	DefaultRate    = 200     // requests per second per client
	DefaultBurst   = 400
	// DefaultAuthCache: a revoked token may still encrypt for this long.
	DefaultAuthCache = time.Second
)

// Config is what a Server needs.
type Config struct {
	// Pool's sessions act as the server's own role (a pgphi group the
	// login is a member of): it reads pgphi's metadata, the keys and the
	// clients, and writes refusal records. Requests that decrypt switch to
	// the client's role inside their transaction.
	Pool   *pgxpool.Pool
	Client *pgphi.Client // opened on Pool: keys and metadata
	Log    *audit.Log    // refusal records
	// Names are the pinned group role names; AllowSuperuser the pinned
	// allow_superuser (a client role that is a superuser may decrypt only
	// with it).
	Names          policy.RoleNames
	AllowSuperuser bool
	Environment    string // pinned environment, recorded in audit records
	MaxBody        int64  // bytes; 0: DefaultMaxBody
	MaxRows        int    // 0: DefaultMaxRows
	Rate           float64
	Burst          int
	// AuthCache is how long a token stays known for encrypt, columns and
	// flags after a lookup (decrypt and search look it up every time);
	// 0: DefaultAuthCache, negative: never cached.
	AuthCache time.Duration
	Metrics   prometheus.Registerer // nil: none
	Logf      func(format string, args ...any)
}

// Server answers the HTTP API.
type Server struct {
	cfg     Config
	auth    *authCache
	limit   *limiter
	metrics *serverMetrics
	routes  map[string]route
	http    *http.Server
}

type route struct {
	method   string
	endpoint string
	handler  func(ctx context.Context, r *http.Request, st *reqState) (any, *apiError)
}

// reqState is what a request's log line, metrics and audit record say.
type reqState struct {
	client client
	table  string // only a protected table's name (known to the client)
	column string
	values int
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxRows <= 0 {
		cfg.MaxRows = DefaultMaxRows
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.AuthCache == 0 {
		cfg.AuthCache = DefaultAuthCache
	}
	s := &Server{cfg: cfg, auth: &authCache{ttl: cfg.AuthCache, m: map[[32]byte]cachedClient{}},
		limit: newLimiter(cfg.Rate, cfg.Burst), metrics: newServerMetrics(cfg.Metrics)}
	s.routes = map[string]route{
		"/v1/encrypt": {http.MethodPost, "encrypt", s.encrypt},
		"/v1/decrypt": {http.MethodPost, "decrypt", s.decrypt},
		"/v1/search":  {http.MethodPost, "search", s.search},
		"/v1/columns": {http.MethodGet, "columns", s.columns},
		"/v1/flags":   {http.MethodGet, "flags", s.flags},
		"/healthz":    {http.MethodGet, "healthz", s.healthz},
	}
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      120 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		// The standard library's own messages (TLS handshakes, broken
		// connections) carry no values but are not pgphi's: dropped.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	return s
}

// ErrPlainHTTP is returned by Listen for plain HTTP where it is not
// allowed: in production, or on an address other than loopback or a Unix
// socket.
var ErrPlainHTTP = errors.New("plain HTTP refused")

// ErrAddress is returned by Listen for an address it cannot use.
var ErrAddress = errors.New("bad listen address")

// CheckAddr reports a listen address Listen cannot use (ErrAddress), before
// anything else is done.
func CheckAddr(addr string) error {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return fmt.Errorf("%w: unix: needs a path", ErrAddress)
		}
		return nil
	}
	_, _, err := splitAddr(addr)
	return err
}

// splitAddr checks HOST:PORT and reports whether HOST is a loopback address.
func splitAddr(addr string) (host string, loopback bool, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, fmt.Errorf("%w: %s: want HOST:PORT or unix:/path", ErrAddress, addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", false, fmt.Errorf("%w: %s: the port is not a number", ErrAddress, addr)
	}
	loopback = strings.EqualFold(host, "localhost")
	if ip := net.ParseIP(host); ip != nil {
		loopback = ip.IsLoopback()
	} else if !loopback {
		return "", false, fmt.Errorf("%w: %s: HOST must be an IP address or localhost (write 0.0.0.0 for every interface)", ErrAddress, addr)
	}
	return host, loopback, nil
}

// Listen binds addr: HOST:PORT (HOST an IP address or localhost) or
// unix:/path. Without tlsConfig the server speaks plain HTTP, which is
// refused (ErrPlainHTTP) in production and on any address but a loopback
// address or a Unix socket.
func Listen(addr string, tlsConfig *tls.Config, environment string) (net.Listener, error) {
	production := config.IsProductionEnvironment(strings.ToLower(environment))
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return nil, fmt.Errorf("%w: unix: needs a path", ErrAddress)
		}
		if tlsConfig == nil && production {
			return nil, fmt.Errorf("%w: in production the server speaks only HTTPS: give --tls-cert and --tls-key (a Unix socket too)", ErrPlainHTTP)
		}
		_ = os.Remove(path) // a socket left by an earlier run
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrAddress, err)
		}
		_ = os.Chmod(path, 0o660)
		if tlsConfig != nil {
			return tls.NewListener(ln, tlsConfig), nil
		}
		return ln, nil
	}
	_, loopback, err := splitAddr(addr)
	if err != nil {
		return nil, err
	}
	if tlsConfig == nil {
		if production {
			return nil, fmt.Errorf("%w: in production the server speaks only HTTPS: give --tls-cert and --tls-key", ErrPlainHTTP)
		}
		if !loopback {
			return nil, fmt.Errorf("%w: %s is not a loopback address: give --tls-cert and --tls-key, or listen on 127.0.0.1 or a Unix socket", ErrPlainHTTP, addr)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAddress, err)
	}
	if tlsConfig != nil {
		return tls.NewListener(ln, tlsConfig), nil
	}
	return ln, nil
}

// Serve answers requests on ln until ctx ends, then stops accepting,
// lets requests in flight finish (at most grace) and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := s.http.Shutdown(sctx); err != nil {
		_ = s.http.Close()
		return fmt.Errorf("serve: shutting down: requests still running after %s were cut", grace)
	}
	<-errc
	return nil
}

// ServeHTTP dispatches a request and answers it, logging one line and
// auditing a refusal.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rt, ok := s.routes[r.URL.Path]
	endpoint := "other"
	var res any
	var aerr *apiError
	st := &reqState{}
	switch {
	case !ok:
		aerr = errorf(http.StatusNotFound, CodeNotFound, "no such endpoint")
	case r.Method != rt.method:
		endpoint = rt.endpoint
		w.Header().Set("Allow", rt.method)
		aerr = errorf(http.StatusMethodNotAllowed, CodeMethod, "use "+rt.method)
	default:
		endpoint = rt.endpoint
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
		res, aerr = s.run(r, rt, st)
	}
	status := http.StatusOK
	if aerr != nil {
		status = aerr.Status
		if refusal(status) {
			s.auditRefusal(r.Context(), endpoint, st, aerr)
		}
		writeError(w, aerr)
	} else {
		writeJSON(w, status, res)
	}
	code := ""
	if aerr != nil {
		code = aerr.Code
	}
	d := time.Since(start)
	s.metrics.observe(endpoint, status, code, st.values, d.Seconds())
	who := st.client.name
	if who == "" {
		who = "-"
	}
	line := fmt.Sprintf("serve: %s %s %d client=%s values=%d %s", r.Method, endpoint, status, who, st.values, d.Round(10*time.Microsecond))
	if code != "" {
		line += " " + code
	}
	s.cfg.Logf("%s", line)
}

// run calls the handler; a panic becomes a 500 without details.
func (s *Server) run(r *http.Request, rt route, st *reqState) (res any, aerr *apiError) {
	defer func() {
		if p := recover(); p != nil {
			res, aerr = nil, errorf(http.StatusInternalServerError, CodeInternal, "internal error (no value is shown)")
		}
	}()
	return rt.handler(r.Context(), r, st)
}

// auditRefusal writes the refused record of a request: endpoint, client
// and its role when known, the code; never the body. It is written by the
// server's own role (the client's may not write records).
func (s *Server) auditRefusal(ctx context.Context, endpoint string, st *reqState, e *apiError) {
	if s.cfg.Log == nil {
		return
	}
	rec := audit.Record{
		Event: audit.EventRefused, Command: "serve." + endpoint, RunID: audit.NewRunID(),
		Actor: audit.Actor{Name: st.client.name}, Environment: s.cfg.Environment,
		ErrorClass: "serve: " + e.Code,
		Details:    map[string]string{"status": strconv.Itoa(e.Status), "client": st.client.name, "client_role": st.client.role},
	}
	// The request's table and column are recorded only when they name a
	// protected column: any other text in a request could be a value.
	if st.table != "" && s.cfg.Client != nil {
		if cols, err := s.cfg.Client.Columns(ctx); err == nil {
			for _, c := range cols {
				if (c.Table == st.table || c.Table == "public."+st.table) && c.Column == st.column {
					rec.Tables, rec.Columns = []string{c.Table}, []string{c.Column}
					break
				}
			}
		}
	}
	if _, err := s.cfg.Log.Append(context.WithoutCancel(ctx), rec); err != nil {
		s.cfg.Logf("serve: the refusal of a %s request could not be audited: %v", endpoint, err)
	}
}
