package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/alert"
)

// Throttle keeps a backfill from slowing production past what it can bear.
// It caps the row rate (MaxRate), halves it while a canary query runs slower
// than SlowFactor times its latency measured before the work began (and lets
// it grow back when the canary recovers), pauses while replication lag is
// above MaxLag, and stops the run when more than MaxFailureRate of batches
// fail.
type Throttle struct {
	MaxRate     float64 // rows per second; 0: no fixed cap
	Adaptive    bool    // follow the canary query
	CanaryQuery string  // a cheap, representative query
	SlowFactor  float64 // canary latency / baseline that means "production is slowing"; default 2
	// MinSlack ignores slowdowns smaller than this in absolute terms: a 0.3 ms
	// query taking 0.7 ms is noise, not a production problem. Default 10ms.
	MinSlack       time.Duration
	MaxLag         time.Duration // pause while replication lag exceeds it; 0: ignore lag
	MaxFailureRate float64       // default 0.05
	Interval       time.Duration // how often to measure; default 500ms
	// Alerts is told when the canary passes SlowFactor times its baseline
	// (response_time) and when failures stop the run (failure_rate); nil:
	// nobody.
	Alerts *alert.Monitor

	mu        sync.Mutex
	baseline  time.Duration
	latency   time.Duration
	limit     float64   // current adaptive limit, rows/s; 0: none
	observed  float64   // recent rows/s
	peak      float64   // highest observed rows/s
	tokens    float64   // rows that may start now
	refilled  time.Time // when tokens were last topped up
	paused    bool
	lag       float64 // last replication lag read, seconds
	reason    string
	attempts  int
	failures  int
	slowdowns int
	rowsWin   []rowsAt
	stop      context.CancelFunc
	done      chan struct{}
}

type rowsAt struct {
	at   time.Time
	rows int
}

// minAdaptiveRate is the absolute floor of the adaptive limit (the other is a
// tenth of the best rate seen), so that a run under heavy load still finishes.
const minAdaptiveRate = 20

// Start measures the canary's baseline and starts monitoring.
func (th *Throttle) Start(ctx context.Context, pool *pgxpool.Pool) error {
	// Snapshot (metrics) may read the throttle from another goroutine.
	th.mu.Lock()
	if th.SlowFactor <= 0 {
		th.SlowFactor = 2
	}
	if th.MaxFailureRate <= 0 {
		th.MaxFailureRate = 0.05
	}
	if th.Interval <= 0 {
		th.Interval = 500 * time.Millisecond
	}
	if th.MinSlack <= 0 {
		th.MinSlack = 10 * time.Millisecond
	}
	th.mu.Unlock()
	if th.Adaptive && th.CanaryQuery != "" {
		var samples []time.Duration
		for range 7 {
			d, err := th.canary(ctx, pool)
			if err != nil {
				return fmt.Errorf("canary query for the throttle: %w", err)
			}
			samples = append(samples, d)
		}
		slices.Sort(samples)
		th.mu.Lock()
		th.baseline = max(samples[len(samples)/2], 200*time.Microsecond)
		th.mu.Unlock()
	}
	mctx, cancel := context.WithCancel(context.Background())
	th.stop, th.done = cancel, make(chan struct{})
	go th.monitor(mctx, pool)
	return nil
}

// Stop ends monitoring.
func (th *Throttle) Stop() {
	if th.stop != nil {
		th.stop()
		<-th.done
	}
}

func (th *Throttle) canary(ctx context.Context, pool *pgxpool.Pool) (time.Duration, error) {
	start := time.Now()
	rows, err := pool.Query(ctx, th.CanaryQuery)
	if err != nil {
		return 0, err
	}
	for rows.Next() {
	}
	rows.Close()
	return time.Since(start), rows.Err()
}

func (th *Throttle) monitor(ctx context.Context, pool *pgxpool.Pool) {
	defer close(th.done)
	tick := time.NewTicker(th.Interval)
	defer tick.Stop()
	var recent []time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var lag float64
		if th.MaxLag > 0 {
			_ = pool.QueryRow(ctx, "SELECT COALESCE(max(EXTRACT(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication").Scan(&lag)
		}
		var lat time.Duration
		if th.Adaptive && th.baseline > 0 {
			if d, err := th.canary(ctx, pool); err == nil {
				// The median of the last three readings: one slow reading is
				// not a trend.
				recent = append(recent, d)
				if len(recent) > 3 {
					recent = recent[1:]
				}
				sorted := slices.Clone(recent)
				slices.Sort(sorted)
				lat = sorted[len(sorted)/2]
			}
		}
		th.mu.Lock()
		th.paused = th.MaxLag > 0 && lag > th.MaxLag.Seconds()
		switch {
		case th.paused:
			th.reason = fmt.Sprintf("paused: replication lag %.1fs > %s", lag, th.MaxLag)
		case lat > 0 && float64(lat) > th.SlowFactor*float64(th.baseline) && lat > th.baseline+th.MinSlack:
			// Multiplicative decrease while production is slow...
			base := th.limit
			if base == 0 {
				base = max(th.observed, minAdaptiveRate)
			}
			// The floor keeps a long run moving: a tenth of the best rate seen.
			th.limit = max(base/2, minAdaptiveRate, th.peak/10)
			th.slowdowns++
			th.reason = fmt.Sprintf("throttled to %.0f rows/s: canary %.1fx its baseline %s", th.limit, float64(lat)/float64(th.baseline), th.baseline.Round(time.Microsecond))
		case th.limit > 0:
			// ...additive-ish increase once it recovers, until the cap goes.
			th.limit *= 1.25
			if th.observed > 0 && th.limit > 4*th.observed {
				th.limit = 0
				th.reason = ""
			} else {
				th.reason = fmt.Sprintf("recovering: limit %.0f rows/s", th.limit)
			}
		default:
			th.reason = ""
		}
		th.latency = lat
		th.lag = lag
		slow := lat > 0 && strings.HasPrefix(th.reason, "throttled")
		limit := th.SlowFactor * th.baseline.Seconds()
		th.mu.Unlock()
		if slow {
			th.Alerts.Fire(alert.Alert{Threshold: alert.ResponseTime, Measured: lat.Seconds(), Limit: limit, Unit: "seconds"})
		}
	}
}

// Wait blocks until a batch of n rows may start. It is a token bucket
// re-evaluated at least every 100ms, so a changed limit (slower or faster)
// applies to batches already waiting, not only to later ones.
func (th *Throttle) Wait(ctx context.Context, n int) error {
	if th == nil {
		return nil
	}
	for {
		th.mu.Lock()
		paused := th.paused
		rate := th.MaxRate
		if th.limit > 0 && (rate == 0 || th.limit < rate) {
			rate = th.limit
		}
		now := time.Now()
		var wait time.Duration
		switch {
		case paused:
			wait = th.Interval
		case rate <= 0:
			th.tokens, th.refilled = 0, time.Time{}
			th.mu.Unlock()
			return nil
		default:
			if th.refilled.IsZero() {
				th.tokens, th.refilled = float64(n), now // the first batch starts at once
			}
			// Tokens accrue at the current rate, up to one batch or one second's worth.
			th.tokens = min(th.tokens+now.Sub(th.refilled).Seconds()*rate, max(float64(n), rate))
			th.refilled = now
			if th.tokens >= float64(n) {
				th.tokens -= float64(n)
				th.mu.Unlock()
				return nil
			}
			wait = time.Duration((float64(n) - th.tokens) / rate * float64(time.Second))
		}
		th.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(wait, 100*time.Millisecond)):
		}
	}
}

// Done records a finished batch of n rows (n < 0: the batch failed) and
// returns an error when failures pass MaxFailureRate.
func (th *Throttle) Done(n int) error {
	if th == nil {
		return nil
	}
	th.mu.Lock()
	defer th.mu.Unlock()
	th.attempts++
	if n < 0 {
		th.failures++
	} else {
		now := time.Now()
		th.rowsWin = append(th.rowsWin, rowsAt{now, n})
		for len(th.rowsWin) > 1 && now.Sub(th.rowsWin[0].at) > 5*time.Second {
			th.rowsWin = th.rowsWin[1:]
		}
		if span := now.Sub(th.rowsWin[0].at).Seconds(); span > 0.5 {
			total := 0
			for _, r := range th.rowsWin[1:] {
				total += r.rows
			}
			th.observed = float64(total) / span
			th.peak = max(th.peak, th.observed)
		}
	}
	if th.attempts >= 20 && float64(th.failures) > th.MaxFailureRate*float64(th.attempts) {
		// Fire only queues the slow sinks: no hook runs under th.mu.
		th.Alerts.Fire(alert.Alert{Threshold: alert.FailureRate, Measured: float64(th.failures) / float64(th.attempts), Limit: th.MaxFailureRate, Unit: "ratio"})
		return fmt.Errorf("stopping: %d of %d batches failed (%.1f%%, limit %.0f%%); committed work is kept, run apply again when the database is healthy",
			th.failures, th.attempts, 100*float64(th.failures)/float64(th.attempts), 100*th.MaxFailureRate)
	}
	return nil
}

// Status says what the throttle is doing and why, for the progress line.
func (th *Throttle) Status() string {
	if th == nil {
		return ""
	}
	th.mu.Lock()
	defer th.mu.Unlock()
	if th.reason == "" && th.MaxRate > 0 {
		return fmt.Sprintf("capped at %.0f rows/s", th.MaxRate)
	}
	return th.reason
}

// ThrottleSnapshot is the throttle's state for metrics: numbers and one of
// the words full, capped, throttled, recovering or paused.
type ThrottleSnapshot struct {
	State              string
	Limit              float64 // rows/s in force; 0: none
	Latency, Baseline  time.Duration
	LagSeconds         float64
	Slowdowns          int
	Attempts, Failures int
	MaxFailureRate     float64
}

// Snapshot reads the throttle's state.
func (th *Throttle) Snapshot() ThrottleSnapshot {
	if th == nil {
		return ThrottleSnapshot{State: "full"}
	}
	th.mu.Lock()
	defer th.mu.Unlock()
	s := ThrottleSnapshot{Latency: th.latency, Baseline: th.baseline, LagSeconds: th.lag, Slowdowns: th.slowdowns,
		Attempts: th.attempts, Failures: th.failures, MaxFailureRate: th.MaxFailureRate}
	s.Limit = th.MaxRate
	if th.limit > 0 && (s.Limit == 0 || th.limit < s.Limit) {
		s.Limit = th.limit
	}
	switch {
	case th.paused:
		s.State = "paused"
	case strings.HasPrefix(th.reason, "throttled"):
		s.State = "throttled"
	case strings.HasPrefix(th.reason, "recovering"):
		s.State = "recovering"
	case th.MaxRate > 0:
		s.State = "capped"
	default:
		s.State = "full"
	}
	return s
}

// Slowdowns is how many times the canary made the throttle slow down.
func (th *Throttle) Slowdowns() int {
	th.mu.Lock()
	defer th.mu.Unlock()
	return th.slowdowns
}

// transient reports whether a batch error is worth retrying: lock timeouts,
// deadlocks, serialization failures, and a query cancelled by the server.
func transient(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01", "55P03", "57014":
			return true
		}
	}
	return false
}
