package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgphi/pgphi/internal/alert"
)

// The alert thresholds, table sizes against the plan's estimate, and the
// search accuracy oracle's result.
type alertMetrics struct {
	firing     *prometheus.GaugeVec
	measured   *prometheus.GaugeVec
	limit      *prometheus.GaugeVec
	tableSize  *prometheus.GaugeVec
	expected   *prometheus.GaugeVec
	dbSize     prometheus.Gauge
	accuracy   *prometheus.GaugeVec
	accQueries *prometheus.GaugeVec
}

func (r *Recorder) registerAlerts() {
	a := &alertMetrics{
		firing:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgphi_alert", Help: "1 once the run crossed the alert threshold (failure_rate > 5 %, response_time > 2x baseline, storage > 150 % of the plan's estimate, search_accuracy < 95 %), else 0."}, []string{"threshold"}),
		measured:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgphi_alert_measured", Help: "The measurement that crossed the threshold when it fired (ratio, seconds or bytes)."}, []string{"threshold"}),
		limit:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgphi_alert_limit", Help: "The limit the measurement crossed (ratio, seconds or bytes)."}, []string{"threshold"}),
		tableSize:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgphi_table_size_bytes", Help: "A protected table's total size (heap, TOAST and indexes: pg_total_relation_size), read during the run."}, []string{"table"}),
		expected:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgphi_table_expected_size_bytes", Help: "The plan's estimate of the table's size once encrypted (sampled value sizes, ciphertext overhead, blind index terms, old row versions)."}, []string{"table"}),
		dbSize:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgphi_database_size_bytes", Help: "The database's size (pg_database_size), read during the run."}),
		accuracy:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgphi_search_accuracy_ratio", Help: "Share of sampled searches whose encrypted answer equalled the plaintext answer, by table (the oracle check of apply and verify)."}, []string{"table"}),
		accQueries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgphi_search_accuracy_queries", Help: "Searches the accuracy oracle ran, by table."}, []string{"table"}),
	}
	r.reg.MustRegister(a.firing, a.measured, a.limit, a.tableSize, a.expected, a.dbSize, a.accuracy, a.accQueries)
	for _, t := range alert.Thresholds {
		a.firing.WithLabelValues(string(t)).Set(0)
	}
	r.alerts = a
}

// Alert records an alert that fired: pgphi_alert{threshold} becomes 1 with
// its measurement and limit.
func (r *Recorder) Alert(a alert.Alert) {
	if r == nil {
		return
	}
	th := string(a.Threshold)
	known := false
	for _, t := range alert.Thresholds {
		known = known || t == a.Threshold
	}
	if !known {
		th = "other"
	}
	r.alerts.firing.WithLabelValues(th).Set(1)
	r.alerts.measured.WithLabelValues(th).Set(a.Measured)
	r.alerts.limit.WithLabelValues(th).Set(a.Limit)
}

// TableSize records a table's size and the plan's estimate of it
// (expected 0: no estimate).
func (r *Recorder) TableSize(table string, bytes, expected int64) {
	if r == nil {
		return
	}
	table = r.table(table)
	r.alerts.tableSize.WithLabelValues(table).Set(float64(bytes))
	if expected > 0 {
		r.alerts.expected.WithLabelValues(table).Set(float64(expected))
	}
}

// DatabaseSize records the database's size.
func (r *Recorder) DatabaseSize(bytes int64) {
	if r == nil {
		return
	}
	r.alerts.dbSize.Set(float64(bytes))
}

// SearchAccuracy records the accuracy oracle's result for a table: queries
// run and the share answered exactly.
func (r *Recorder) SearchAccuracy(table string, queries int, ratio float64) {
	if r == nil {
		return
	}
	table = r.table(table)
	r.alerts.accuracy.WithLabelValues(table).Set(ratio)
	r.alerts.accQueries.WithLabelValues(table).Set(float64(queries))
}
