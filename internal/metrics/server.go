package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Names lists every metric pgphi itself exports (besides the Go runtime's
// go_* and the process's process_* metrics, such as
// process_resident_memory_bytes).
func Names() []string {
	return []string{
		"pgphi_alert",
		"pgphi_alert_limit",
		"pgphi_alert_measured",
		"pgphi_audit_records_total",
		"pgphi_batch_failure_ratio",
		"pgphi_batch_failure_ratio_limit",
		"pgphi_batches_total",
		"pgphi_canary_baseline_seconds",
		"pgphi_canary_latency_seconds",
		"pgphi_database_size_bytes",
		"pgphi_errors_total",
		"pgphi_eta_seconds",
		"pgphi_info",
		"pgphi_lock_retries_total",
		"pgphi_lock_wait_seconds_total",
		"pgphi_migration_runner_lock_wait_seconds",
		"pgphi_migration_statements_total",
		"pgphi_migration_version",
		"pgphi_migrations_done",
		"pgphi_migrations_planned",
		"pgphi_rate_rows_per_second",
		"pgphi_replication_lag_seconds",
		"pgphi_rows_done",
		"pgphi_rows_encrypted_total",
		"pgphi_rows_failed_total",
		"pgphi_rows_planned",
		"pgphi_rows_restored_total",
		"pgphi_rows_verified_total",
		"pgphi_run_finished",
		"pgphi_search_accuracy_queries",
		"pgphi_search_accuracy_ratio",
		"pgphi_start_time_seconds",
		"pgphi_table_expected_size_bytes",
		"pgphi_table_size_bytes",
		"pgphi_throttle_limit_rows_per_second",
		"pgphi_throttle_slowdowns_total",
		"pgphi_throttle_state",
		"pgphi_up",
		"pgphi_values_verified_total",
		"pgphi_verification_mismatches_total",
	}
}

// ErrAddr is wrapped by every error of ParseAddr: a usage error (exit 2).
var ErrAddr = errors.New("bad --metrics-addr")

// Addr is a checked --metrics-addr.
type Addr struct {
	Host     string
	Port     int
	Loopback bool // 127.0.0.0/8, ::1 or localhost
}

func (a Addr) String() string { return net.JoinHostPort(a.Host, strconv.Itoa(a.Port)) }

// Exposure: the endpoint is plain HTTP without authentication. Nothing is
// served unless --metrics-addr is given; a non-loopback address is accepted
// when the operator writes it (the command line prints a warning), in every
// environment, production included: the metrics hold no PHI by construction
// (see the package comment), and Prometheus usually scrapes from another
// host. pgphi does not terminate TLS; a firewall or a TLS proxy restricts who
// reaches it.
//
// ParseAddr checks a --metrics-addr value: HOST:PORT where HOST is an IP
// address or "localhost" (no name is looked up) and PORT is 0 to 65535 (0:
// any free port; the bound address is printed). The host must be given:
// ":9187" would listen on every interface without saying so; write
// 0.0.0.0:9187 to mean it.
func ParseAddr(s string) (Addr, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Addr{}, fmt.Errorf("%w: want HOST:PORT, for example 127.0.0.1:9187", ErrAddr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return Addr{}, fmt.Errorf("%w: the port must be a number from 0 to 65535 (0: any free port)", ErrAddr)
	}
	if host == "" {
		return Addr{}, fmt.Errorf("%w: give the interface to listen on: 127.0.0.1:%d (this machine only) or 0.0.0.0:%d (every interface)", ErrAddr, p, p)
	}
	if host == "localhost" {
		return Addr{Host: "127.0.0.1", Port: p, Loopback: true}, nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return Addr{}, fmt.Errorf("%w: the host must be an IP address or localhost (no name is looked up)", ErrAddr)
	}
	return Addr{Host: host, Port: p, Loopback: ip.IsLoopback()}, nil
}

// Server serves /metrics until Close.
type Server struct {
	ln  net.Listener
	srv *http.Server
	err chan error
}

// Serve listens on addr and serves r's metrics at /metrics (every other
// path is 404). It returns once the port is bound.
func (r *Recorder) Serve(addr Addr) (*Server, error) {
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("%w: cannot listen on %s: %v", ErrAddr, addr, errors.Unwrap(err))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}, err: make(chan error, 1)}
	go func() { s.err <- s.srv.Serve(ln) }()
	return s, nil
}

// URL is where the metrics are served, with the bound port.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() + "/metrics" }

// Close stops the server, letting scrapes under way finish for up to a second.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}
