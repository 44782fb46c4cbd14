// Package alert owns the four alert thresholds of a long pgphi command and
// the fan-out of an alert that fires: the failure rate of batches (above
// 5 %, the run stops), the canary's response time (above 2x its baseline,
// the run throttles), the storage a table takes (above 150 % of the plan's
// estimate) and the accuracy of encrypted search checked against the
// plaintext answer (below 95 %, verification fails).
//
// An alert is a threshold, a measured number, its limit, a unit and, where
// it concerns one table, the table's qualified name: never a value, a key
// or a search term. It fires at most once per threshold and table in a run
// (a slow canary measured every half second is one alert, not thousands);
// Firing lists what fired. Sinks receive it: synchronous ones (metrics,
// the progress line, logs) in Fire's goroutine, the slow ones (the audit
// trail, the on_alert hook) in one dispatcher goroutine that Close drains,
// so a hook that takes seconds never stalls the throttle or a batch.
//
// A nil *Monitor fires nothing.
package alert

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Threshold names one of the four thresholds.
type Threshold string

// The thresholds, with the names the metrics, the audit trail and the hook
// context use.
const (
	FailureRate    Threshold = "failure_rate"
	ResponseTime   Threshold = "response_time"
	Storage        Threshold = "storage"
	SearchAccuracy Threshold = "search_accuracy"
)

// Thresholds lists every threshold, in a fixed order.
var Thresholds = []Threshold{FailureRate, ResponseTime, Storage, SearchAccuracy}

// The default limits. Response time and storage are factors of a baseline
// measured in the run (the canary before the work began; the plan's storage
// estimate).
const (
	DefaultMaxFailureRate = 0.05
	DefaultSlowFactor     = 2.0
	DefaultStorageFactor  = 1.5
	DefaultMinAccuracy    = 0.95
)

// Alert is one threshold crossed. Measured and Limit are in Unit: "ratio"
// (failure rate, accuracy), "seconds" (response time) or "bytes" (storage).
type Alert struct {
	Threshold Threshold `json:"threshold"`
	Measured  float64   `json:"measured"`
	Limit     float64   `json:"limit"`
	Unit      string    `json:"unit"`
	Table     string    `json:"table,omitempty"` // qualified table name; empty for the whole run
}

// Above reports whether the threshold fires when Measured is above Limit
// (all but search accuracy, which fires below).
func (a Alert) Above() bool { return a.Threshold != SearchAccuracy }

// String is the operator's line: "ALERT storage public.patient: 310.2 MB > 200.0 MB".
func (a Alert) String() string {
	op := ">"
	if !a.Above() {
		op = "<"
	}
	where := ""
	if a.Table != "" {
		where = " " + a.Table
	}
	return fmt.Sprintf("ALERT %s%s: %s %s limit %s", a.Threshold, where, format(a.Measured, a.Unit), op, format(a.Limit, a.Unit))
}

func format(v float64, unit string) string {
	switch unit {
	case "ratio":
		return fmt.Sprintf("%.1f%%", 100*v)
	case "seconds":
		if v < 1 {
			return fmt.Sprintf("%.1fms", 1000*v)
		}
		return fmt.Sprintf("%.2fs", v)
	case "bytes":
		switch {
		case v >= 1<<30:
			return fmt.Sprintf("%.2f GiB", v/(1<<30))
		case v >= 1<<20:
			return fmt.Sprintf("%.1f MiB", v/(1<<20))
		case v >= 1<<10:
			return fmt.Sprintf("%.1f KiB", v/(1<<10))
		}
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%g", v)
}

// Sink receives an alert that fired.
type Sink func(ctx context.Context, a Alert)

// Monitor fires alerts to its sinks, once per threshold and table.
type Monitor struct {
	mu     sync.Mutex
	fired  map[[2]string]bool
	firing []Alert
	sync   []Sink
	slow   []Sink
	queue  chan Alert
	sendMu sync.RWMutex // held for reading while sending, for writing while closing the queue
	done   chan struct{}
	closed bool
	ctx    context.Context
}

// New creates a monitor whose slow sinks run in one goroutine under ctx
// (detached from its cancellation: an alert raised while the run is being
// interrupted is still recorded).
func New(ctx context.Context) *Monitor {
	m := &Monitor{fired: map[[2]string]bool{}, queue: make(chan Alert, 64), done: make(chan struct{}), ctx: context.WithoutCancel(ctx)}
	go m.dispatch()
	return m
}

// OnFire adds a sink called in the goroutine that fires (keep it quick).
func (m *Monitor) OnFire(s Sink) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.sync = append(m.sync, s)
	m.mu.Unlock()
}

// OnFireAsync adds a sink called in the dispatcher goroutine, in the order
// the alerts fired.
func (m *Monitor) OnFireAsync(s Sink) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.slow = append(m.slow, s)
	m.mu.Unlock()
}

// Fire raises a unless its threshold already fired for its table in this
// run. It reports whether a was raised now.
func (m *Monitor) Fire(a Alert) bool {
	if m == nil {
		return false
	}
	k := [2]string{string(a.Threshold), a.Table}
	m.mu.Lock()
	if m.fired[k] || m.closed {
		m.mu.Unlock()
		return false
	}
	m.fired[k] = true
	m.firing = append(m.firing, a)
	sinks := append([]Sink(nil), m.sync...)
	m.mu.Unlock()
	for _, s := range sinks {
		s(m.ctx, a)
	}
	m.sendMu.RLock()
	defer m.sendMu.RUnlock()
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if !closed {
		m.queue <- a
	}
	return true
}

// Firing lists the alerts raised so far.
func (m *Monitor) Firing() []Alert {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Alert(nil), m.firing...)
}

// Summary is a short text of the thresholds that fired, for the progress
// line ("ALERT storage, response_time"): "" when none did.
func (m *Monitor) Summary() string {
	var names []string
	for _, a := range m.Firing() {
		if !slices.Contains(names, string(a.Threshold)) {
			names = append(names, string(a.Threshold))
		}
	}
	if len(names) == 0 {
		return ""
	}
	return "ALERT " + strings.Join(names, ", ")
}

// Close stops accepting alerts and waits until the slow sinks have handled
// every alert raised.
func (m *Monitor) Close() {
	if m == nil {
		return
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.done
		return
	}
	m.closed = true
	m.mu.Unlock()
	m.sendMu.Lock()
	close(m.queue)
	m.sendMu.Unlock()
	<-m.done
}

func (m *Monitor) dispatch() {
	defer close(m.done)
	for a := range m.queue {
		m.mu.Lock()
		sinks := append([]Sink(nil), m.slow...)
		m.mu.Unlock()
		for _, s := range sinks {
			s(m.ctx, a)
		}
	}
}
