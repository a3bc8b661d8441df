package upstream

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the client's Prometheus metrics. The gauges are read from
// the pool when scraped, so they are never out of date.
type metrics struct {
	pool *pool

	stale, instances, ejected *prometheus.Desc

	resolveErrors *prometheus.CounterVec
	requests      *prometheus.CounterVec
	retries       *prometheus.CounterVec
	ejections     *prometheus.CounterVec
}

// Request results, the result label of millrace_upstream_requests_total.
const (
	resultOK          = "ok"           // the instance answered (2xx, or a 4xx about the request)
	resultError       = "error"        // no answer: refused, reset, timed out
	resultServerError = "server_error" // 5xx, or a path the instance does not serve
	resultEjected     = "ejected"      // not sent: the breaker opened meanwhile
)

func newMetrics(p *pool, reg prometheus.Registerer) (*metrics, error) {
	svc := prometheus.Labels{"service": p.service}
	m := &metrics{
		pool: p,
		stale: prometheus.NewDesc("millrace_discovery_stale",
			"1 while the client serves from instances the registry has not confirmed (registry unreachable, or no healthy instance reported).",
			nil, svc),
		instances: prometheus.NewDesc("millrace_discovery_instances",
			"Instances of the service the client knows.", nil, svc),
		ejected: prometheus.NewDesc("millrace_discovery_ejected_instances",
			"Known instances whose outlier breaker is open.", nil, svc),
		resolveErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_discovery_resolve_errors_total", Help: "Failed queries of the registry.", ConstLabels: svc,
		}, nil),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_upstream_requests_total", Help: "Requests sent to instances, by instance and result (ok, error, server_error, ejected).", ConstLabels: svc,
		}, []string{"instance", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_upstream_retries_total", Help: "Requests retried on another instance.", ConstLabels: svc,
		}, nil),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_upstream_ejections_total", Help: "Times an instance's outlier breaker opened.", ConstLabels: svc,
		}, []string{"instance"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m, m.resolveErrors, m.requests, m.retries, m.ejections} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register upstream metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Describe implements prometheus.Collector for the gauges.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.stale
	ch <- m.instances
	ch <- m.ejected
}

// Collect implements prometheus.Collector for the gauges.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.pool.status()
	stale := 0.0
	if st.Stale {
		stale = 1
	}
	known, ejected := m.pool.size()
	ch <- gauge(m.stale, stale)
	ch <- gauge(m.instances, float64(known))
	ch <- gauge(m.ejected, float64(ejected))
}

func gauge(d *prometheus.Desc, v float64) prometheus.Metric {
	g, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return g
}
