package serverapi

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts API calls by call and result and times them.
type metrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bayeux_api_calls_total",
			Help: "Server API calls by call (publish, presence, ...), transport (http, grpc) and result (ok or an error code).",
		}, []string{"call", "transport", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bayeux_api_call_seconds",
			Help:    "Server API call duration by call.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
		}, []string{"call"}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.duration)
	}
	return m
}

func (m *metrics) observe(call, transport, result string, start time.Time) {
	m.calls.WithLabelValues(call, transport, result).Inc()
	m.duration.WithLabelValues(call).Observe(time.Since(start).Seconds())
}
