package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/metrics"
)

// metricsOpt is --metrics-addr and --metrics-linger of a long command.
type metricsOpt struct {
	addr   string
	linger time.Duration
}

func (o *metricsOpt) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.addr, "metrics-addr", "", "serve Prometheus metrics at http://HOST:PORT/metrics while the command runs (HOST an IP address or localhost; port 0: any free port, printed on stderr); default off")
	cmd.Flags().DurationVar(&o.linger, "metrics-linger", 0, "with --metrics-addr, keep serving the final values this long after the command ends, for a last scrape")
}

// startMetrics checks --metrics-addr (a bad one is a usage error, exit 2,
// before anything else happens), binds it and prints where the metrics are.
// It returns nil and a no-op when the flag is not given. stop ends the
// server, after --metrics-linger.
func (a *app) startMetrics(ctx context.Context, o *metricsOpt, command string) (m *metrics.Recorder, stop func(), err error) {
	if o.addr == "" {
		if o.linger != 0 {
			return nil, nil, withCode(ExitUsage, errUsagef("--metrics-linger needs --metrics-addr"))
		}
		return nil, func() {}, nil
	}
	if o.linger < 0 {
		return nil, nil, withCode(ExitUsage, errUsagef("--metrics-linger must not be negative"))
	}
	addr, err := metrics.ParseAddr(o.addr)
	if err != nil {
		return nil, nil, withCode(ExitUsage, errUsagef("%v", err))
	}
	m = metrics.New(command)
	srv, err := m.Serve(addr)
	if err != nil {
		return nil, nil, withCode(ExitUsage, errUsagef("%v (is the port in use?)", err))
	}
	a.metrics, a.metricsURL = m, srv.URL()
	a.logf("metrics: serving %s", srv.URL())
	if !addr.Loopback {
		a.logf("metrics: %s is not a loopback address: the endpoint is plain HTTP without authentication; it holds no values, only counts, table names and the plan id, but restrict who can reach it (firewall, or a TLS proxy)", addr)
	}
	return m, func() {
		if o.linger > 0 {
			a.logf("metrics: command ended; serving the final values for %s more", o.linger)
			select {
			case <-ctx.Done():
			case <-time.After(o.linger):
			}
		}
		srv.Close()
	}, nil
}

// engineMetrics is m as the engine's Metrics (nil when off).
func engineMetrics(m *metrics.Recorder) engine.Metrics {
	if m == nil {
		return nil
	}
	return m
}

// observeRun gives m the plan and, when th is set, the throttle.
func observeRun(m *metrics.Recorder, p *engine.Plan, th *engine.Throttle) {
	if m == nil {
		return
	}
	var tables []string
	for _, t := range p.Tables {
		tables = append(tables, t.QualifiedName())
	}
	m.SetPlan(p.ID, tables)
	if th != nil {
		m.SetThrottle(func() metrics.ThrottleState {
			s := th.Snapshot()
			return metrics.ThrottleState{State: s.State, Limit: s.Limit, Latency: s.Latency, Baseline: s.Baseline, LagSeconds: s.LagSeconds,
				Slowdowns: s.Slowdowns, Attempts: s.Attempts, Failures: s.Failures, FailureLimit: s.MaxFailureRate}
		})
	}
}

func errUsagef(format string, args ...any) error {
	return fmt.Errorf("usage: "+format, args...)
}
