package metrics

import (
	"context"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Version is pgphi's version in pgphi_info; set at build time with
// -ldflags "-X github.com/pgphi/pgphi/internal/metrics.Version=v1.2.3",
// else read from the build information.
var Version = ""

// Fixed label words. Anything else a caller passes is exported as "other".
var (
	phases  = []string{"backfill", "catchup", "restore", "verify", "cleanup", "reindex", "reencrypt"}
	results = []string{"ok", "retried", "failed", "unencryptable"}
	events  = []string{"start", "success", "failure", "refused", "alert"}
	states  = []string{"full", "capped", "throttled", "recovering", "paused"}
)

var (
	classRE  = regexp.MustCompile(`^(SQLSTATE [0-9A-Z]{5}|[a-z][a-z :]{0,40})$`)
	planIDRE = regexp.MustCompile(`^(plan|migrate)-[0-9a-f]{1,64}$`)
)

// Recorder holds one process's metrics. A nil *Recorder records nothing.
type Recorder struct {
	reg *prometheus.Registry

	mu       sync.Mutex
	tables   map[string]bool
	info     *prometheus.GaugeVec
	command  string
	throttle func() ThrottleState
	progress map[[2]string]*window

	rowsEncrypted *prometheus.CounterVec
	rowsRestored  *prometheus.CounterVec
	rowsVerified  *prometheus.CounterVec
	valsVerified  *prometheus.CounterVec
	rowsFailed    *prometheus.CounterVec
	mismatches    *prometheus.CounterVec
	batches       *prometheus.CounterVec
	errors        *prometheus.CounterVec
	lockRetries   prometheus.Counter
	lockWait      prometheus.Counter
	audit         *prometheus.CounterVec
	rowsDone      *prometheus.GaugeVec
	rowsPlanned   *prometheus.GaugeVec
	rate          *prometheus.GaugeVec
	eta           *prometheus.GaugeVec
	finished      *prometheus.GaugeVec
	alerts        *alertMetrics
	migrations    *migrationMetrics
}

// ThrottleState is what the throttle is doing, read at every scrape.
type ThrottleState struct {
	State        string  // full, capped, throttled, recovering or paused
	Limit        float64 // rows/s in force (the lower of the cap and the adaptive limit); 0: none
	Latency      time.Duration
	Baseline     time.Duration
	LagSeconds   float64
	Slowdowns    int
	Attempts     int // batches counted by the throttle
	Failures     int // of which failed or retried
	FailureLimit float64
}

// New creates the metrics of one run of command (apply, verify, cleanup,
// rollback, migrate).
func New(command string) *Recorder {
	r := &Recorder{reg: prometheus.NewRegistry(), tables: map[string]bool{}, command: command, progress: map[[2]string]*window{}}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		r.reg.MustRegister(v)
		return v
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		r.reg.MustRegister(v)
		return v
	}
	r.rowsEncrypted = counter("pgphi_rows_encrypted_total", "Rows whose protected values were encrypted and committed, by phase (backfill, catchup) and table.", "phase", "table")
	r.rowsRestored = counter("pgphi_rows_restored_total", "Rows whose plaintext rollback restored from the ciphertext, by table.", "table")
	r.rowsVerified = counter("pgphi_rows_verified_total", "Rows read by a verification (decrypt and compare), by table.", "table")
	r.valsVerified = counter("pgphi_values_verified_total", "Values decrypted and compared with their plaintext, by table.", "table")
	r.rowsFailed = counter("pgphi_rows_failed_total", "Rows whose value could not be encrypted (recorded in pgphi.failures by key, never by value), by table.", "table")
	r.mismatches = counter("pgphi_verification_mismatches_total", "Values whose ciphertext did not verify against the plaintext, by table.", "table")
	r.batches = counter("pgphi_batches_total", "Batch transactions by phase, table and result (ok, retried after a transient error, failed, unencryptable).", "phase", "table", "result")
	r.errors = counter("pgphi_errors_total", "Errors by class (SQLSTATE or kind, never a message) and scope: batch (a batch transaction, retried or not) or run (the error the command ended with; the same error may be counted once in each scope).", "class", "scope")
	r.audit = counter("pgphi_audit_records_total", "Audit records this process appended, by event.", "event")
	r.lockRetries = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgphi_lock_retries_total", Help: "DDL attempts that did not get their lock within apply.lock_timeout and were retried."})
	r.lockWait = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgphi_lock_wait_seconds_total", Help: "Seconds spent waiting for locks that were not granted, backoff included."})
	r.reg.MustRegister(r.lockRetries, r.lockWait)
	r.rowsDone = gauge("pgphi_rows_done", "Rows done so far in a phase, across every process working on the plan.", "phase", "table")
	r.rowsPlanned = gauge("pgphi_rows_planned", "Rows a phase has to do (the table's rows when it was chunked).", "phase", "table")
	r.rate = gauge("pgphi_rate_rows_per_second", "Rows per second over the last 10 seconds, by phase and table.", "phase", "table")
	r.eta = gauge("pgphi_eta_seconds", "Estimated seconds until the phase is done at the current rate (-1: unknown).", "phase", "table")
	r.finished = gauge("pgphi_run_finished", "1 once the command has ended, labelled with its result (success, failure, refused).", "result")
	r.info = gauge("pgphi_info", "Always 1: pgphi's version, the command and the plan id.", "version", "command", "plan_id")
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgphi_up", Help: "1 while this pgphi process serves metrics."})
	up.Set(1)
	start := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgphi_start_time_seconds", Help: "When the command started, seconds since the epoch."})
	start.SetToCurrentTime()
	r.reg.MustRegister(up, start, &throttleCollector{r: r},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.info.WithLabelValues(version(), command, "").Set(1)
	r.registerAlerts()
	r.registerMigrations()
	return r
}

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

// Registry is the registry the handler serves (tests gather from it).
func (r *Recorder) Registry() *prometheus.Registry { return r.reg }

// SetPlan records the plan id and the qualified names of its tables: the
// only table names that ever appear in a label.
func (r *Recorder) SetPlan(planID string, tables []string) {
	if r == nil {
		return
	}
	if !planIDRE.MatchString(planID) {
		planID = "other"
	}
	r.mu.Lock()
	for _, t := range tables {
		r.tables[t] = true
	}
	r.mu.Unlock()
	r.info.Reset()
	r.info.WithLabelValues(version(), r.command, planID).Set(1)
}

// SetThrottle makes every scrape read the throttle's state from fn.
func (r *Recorder) SetThrottle(fn func() ThrottleState) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.throttle = fn
	r.mu.Unlock()
}

func (r *Recorder) table(t string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tables[t] {
		return t
	}
	return "other"
}

func word(w string, allowed []string) string {
	if slices.Contains(allowed, w) {
		return w
	}
	return "other"
}

// Class returns class when it is shaped like an error class pgphi produces
// ("SQLSTATE 55P03", "unencryptable value", "policy: refused"), else "error".
func Class(class string) string {
	if classRE.MatchString(class) {
		return class
	}
	return "error"
}

// Batch records one batch transaction: rows committed in a phase (backfill,
// catchup, restore) of table, with its result (ok, retried, failed,
// unencryptable) and, unless ok, the error's class.
func (r *Recorder) Batch(phase, table string, rows int, result, class string) {
	if r == nil {
		return
	}
	phase, table, result = word(phase, phases), r.table(table), word(result, results)
	r.batches.WithLabelValues(phase, table, result).Inc()
	switch result {
	case "ok":
		switch phase {
		case "restore":
			r.rowsRestored.WithLabelValues(table).Add(float64(rows))
		case "reindex":
			// Terms rewritten, nothing encrypted: the batches count them.
		default:
			r.rowsEncrypted.WithLabelValues(phase, table).Add(float64(rows))
		}
		return
	case "unencryptable":
		r.rowsFailed.WithLabelValues(table).Inc()
	}
	r.errors.WithLabelValues(Class(class), "batch").Inc()
}

// Verified records a verification of table: rows read, values compared,
// values that did not verify.
func (r *Recorder) Verified(table string, rows, values, mismatches int64) {
	if r == nil {
		return
	}
	table = r.table(table)
	r.rowsVerified.WithLabelValues(table).Add(float64(rows))
	r.valsVerified.WithLabelValues(table).Add(float64(values))
	r.mismatches.WithLabelValues(table).Add(float64(mismatches))
}

// LockRetry records a lock not granted in time, retried after waiting wait
// (lock_timeout plus backoff).
func (r *Recorder) LockRetry(wait time.Duration) {
	if r == nil {
		return
	}
	r.lockRetries.Inc()
	r.lockWait.Add(wait.Seconds())
}

// Error counts the error the run ended with, by its class.
func (r *Recorder) Error(class string) {
	if r == nil {
		return
	}
	r.errors.WithLabelValues(Class(class), "run").Inc()
}

// AuditRecord counts an audit record appended by this process.
func (r *Recorder) AuditRecord(event string) {
	if r == nil {
		return
	}
	r.audit.WithLabelValues(word(event, events)).Inc()
}

// Finished marks the end of the command with its result (success, failure
// or refused).
func (r *Recorder) Finished(result string) {
	if r == nil {
		return
	}
	r.finished.WithLabelValues(word(result, events)).Set(1)
}

// ProgressFactory is engine.ProgressFactory's shape.
type ProgressFactory = func(label string, total int64, poll func(context.Context) (int64, error)) interface{ Stop() }

// Progress wraps a progress display so that every poll also sets
// pgphi_rows_done, pgphi_rows_planned, the rate and the ETA of the phase.
// label is "PHASE TABLE" (for example "backfill public.patient"). No extra
// query is made: the metrics follow the display's own polls.
func (r *Recorder) Progress(inner ProgressFactory) ProgressFactory {
	if r == nil {
		return inner
	}
	return func(label string, total int64, poll func(context.Context) (int64, error)) interface{ Stop() } {
		phase, table, _ := strings.Cut(label, " ")
		phase, table = word(phase, phases), r.table(table)
		r.rowsPlanned.WithLabelValues(phase, table).Set(float64(total))
		w := &window{}
		observe := func(ctx context.Context) (int64, error) {
			n, err := poll(ctx)
			if err == nil {
				rate, eta := w.observe(time.Now(), n, total)
				r.rowsDone.WithLabelValues(phase, table).Set(float64(n))
				r.rate.WithLabelValues(phase, table).Set(rate)
				r.eta.WithLabelValues(phase, table).Set(eta)
			}
			return n, err
		}
		if inner == nil {
			return nopStop{}
		}
		return inner(label, total, observe)
	}
}

type nopStop struct{}

func (nopStop) Stop() {}

// window is the rate over the last 10 seconds of polls.
type window struct {
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at   time.Time
	rows int64
}

func (w *window) observe(now time.Time, n, total int64) (rate, eta float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples = append(w.samples, sample{now, n})
	for len(w.samples) > 2 && now.Sub(w.samples[0].at) > 10*time.Second {
		w.samples = w.samples[1:]
	}
	a, b := w.samples[0], w.samples[len(w.samples)-1]
	if s := b.at.Sub(a.at).Seconds(); s > 0 {
		rate = max(float64(b.rows-a.rows)/s, 0)
	}
	switch {
	case n >= total:
		eta = 0
	case rate > 0:
		eta = float64(total-n) / rate
	default:
		eta = -1
	}
	return rate, eta
}

// throttleCollector reads the throttle at scrape time.
type throttleCollector struct{ r *Recorder }

var (
	descState     = prometheus.NewDesc("pgphi_throttle_state", "1 for the throttle's current state: full (no limit), capped (max_rate), throttled (canary slow), recovering, paused (replication lag).", []string{"state"}, nil)
	descLimit     = prometheus.NewDesc("pgphi_throttle_limit_rows_per_second", "The row rate in force (the lower of max_rate and the adaptive limit); 0: none.", nil, nil)
	descLatency   = prometheus.NewDesc("pgphi_canary_latency_seconds", "Latency of the canary query (median of the last three readings).", nil, nil)
	descBaseline  = prometheus.NewDesc("pgphi_canary_baseline_seconds", "Latency of the canary query measured before the work began.", nil, nil)
	descLag       = prometheus.NewDesc("pgphi_replication_lag_seconds", "Highest replay lag of the standbys pgphi watches (pg_stat_replication; only with apply.max_replication_lag).", nil, nil)
	descSlowdowns = prometheus.NewDesc("pgphi_throttle_slowdowns_total", "Times the canary made the throttle slow down.", nil, nil)
	descRatio     = prometheus.NewDesc("pgphi_batch_failure_ratio", "Failed or retried batches over all batches, as the throttle counts them (it stops the run above max_failure_rate, default 0.05).", nil, nil)
	descFailLimit = prometheus.NewDesc("pgphi_batch_failure_ratio_limit", "The failure ratio above which the run stops.", nil, nil)
)

func (c *throttleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descLimit, descLatency, descBaseline, descLag, descSlowdowns, descRatio, descFailLimit} {
		ch <- d
	}
}

func (c *throttleCollector) Collect(ch chan<- prometheus.Metric) {
	c.r.mu.Lock()
	fn := c.r.throttle
	c.r.mu.Unlock()
	if fn == nil {
		return
	}
	s := fn()
	for _, st := range states {
		v := 0.0
		if st == s.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, st)
	}
	ratio := 0.0
	if s.Attempts > 0 {
		ratio = float64(s.Failures) / float64(s.Attempts)
	}
	ch <- prometheus.MustNewConstMetric(descLimit, prometheus.GaugeValue, s.Limit)
	ch <- prometheus.MustNewConstMetric(descLatency, prometheus.GaugeValue, s.Latency.Seconds())
	ch <- prometheus.MustNewConstMetric(descBaseline, prometheus.GaugeValue, s.Baseline.Seconds())
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, s.LagSeconds)
	ch <- prometheus.MustNewConstMetric(descSlowdowns, prometheus.CounterValue, float64(s.Slowdowns))
	ch <- prometheus.MustNewConstMetric(descRatio, prometheus.GaugeValue, ratio)
	ch <- prometheus.MustNewConstMetric(descFailLimit, prometheus.GaugeValue, s.FailureLimit)
}
