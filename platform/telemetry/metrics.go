package telemetry

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns the one metrics registry of a process, with the Go
// runtime and process collectors registered. Pass it (as a
// prometheus.Registerer) to everything that has metrics, and serve it with
// MetricsHandler.
func NewRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if err := register(reg,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	); err != nil {
		return nil, fmt.Errorf("create metrics registry: %w", err)
	}
	return reg, nil
}

// MetricsHandler serves the metrics of reg in the Prometheus text format (or
// OpenMetrics when the scraper asks for it), gzipped on request. A collector
// that fails is logged to logger and left out; the rest are still served. A
// scrape that takes longer than 30 s is answered with 503. A nil logger
// discards logs.
func MetricsHandler(reg *prometheus.Registry, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          slogPrinter{logger},
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          reg,
		Timeout:           30 * time.Second,
		EnableOpenMetrics: true,
	})
}

// slogPrinter adapts slog to promhttp's Logger.
type slogPrinter struct{ logger *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	p.logger.Warn("serving metrics", "error", fmt.Sprint(v...))
}

// register registers every collector and reports every failure at once.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, fmt.Errorf("register metrics: %w", err))
		}
	}
	return errors.Join(errs...)
}

// constMetric is prometheus.NewConstMetric that reports a mismatch of label
// values as a collection error instead of panicking.
func constMetric(desc *prometheus.Desc, typ prometheus.ValueType, value float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(desc, typ, value, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
