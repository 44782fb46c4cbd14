package serve

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// endpoints are the only values of the endpoint label.
var endpoints = []string{"encrypt", "decrypt", "search", "columns", "flags", "healthz", "other"}

// serverMetrics are serve's metrics: counts by endpoint, status and refusal
// code, and latency; labels are fixed words and status codes.
type serverMetrics struct {
	requests *prometheus.CounterVec
	values   *prometheus.CounterVec
	refusals *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newServerMetrics(reg prometheus.Registerer) *serverMetrics {
	m := &serverMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgphi_serve_requests_total",
			Help: "HTTP requests answered, by endpoint and status code."}, []string{"endpoint", "status"}),
		values: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgphi_serve_values_total",
			Help: "Values encrypted or decrypted, and rows found, by endpoint."}, []string{"endpoint"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgphi_serve_refusals_total",
			Help: "Requests refused (and audited), by endpoint and error code."}, []string{"endpoint", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pgphi_serve_request_duration_seconds",
			Help:    "Time to answer a request, by endpoint.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}, []string{"endpoint"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.values, m.refusals, m.latency)
	}
	return m
}

func (m *serverMetrics) observe(endpoint string, status int, code string, values int, seconds float64) {
	m.requests.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
	if values > 0 {
		m.values.WithLabelValues(endpoint).Add(float64(values))
	}
	if refusal(status) {
		m.refusals.WithLabelValues(endpoint, code).Inc()
	}
	m.latency.WithLabelValues(endpoint).Observe(seconds)
}
