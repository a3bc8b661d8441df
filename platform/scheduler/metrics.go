package scheduler

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the scheduler's Prometheus metrics:
//
//	millrace_scheduler_fires_total{job,trigger}       attempts published (trigger schedule, misfire, queue, manual, retry)
//	millrace_scheduler_lateness_seconds{job}          how late runs fired after their scheduled time
//	millrace_scheduler_failures_total{job,outcome}    failed attempts and runs (rejected, timed_out, failed)
//	millrace_scheduler_runs_total{job,outcome}        finished runs
//	millrace_scheduler_skipped_total{job,reason}      due times not run (misfire, blocked, queue_full)
//	millrace_scheduler_leader{scheduler_instance}             1 while this instance leads
//	millrace_scheduler_journal_errors_total           records the journal refused
type metrics struct {
	fires         *prometheus.CounterVec
	lateness      *prometheus.HistogramVec
	failures      *prometheus.CounterVec
	runs          *prometheus.CounterVec
	skipped       *prometheus.CounterVec
	leader        prometheus.Gauge
	journalErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, instance string) (*metrics, error) {
	m := &metrics{
		fires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_scheduler_fires_total",
			Help: "Commands published by the scheduler, by job and trigger (schedule, misfire, queue, manual, retry).",
		}, []string{"job", "trigger"}),
		lateness: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "millrace_scheduler_lateness_seconds",
			Help:    "How long after its scheduled time a run fired.",
			Buckets: []float64{0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600},
		}, []string{"job"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_scheduler_failures_total",
			Help: "Failed attempts and runs, by job and outcome (rejected, timed_out, failed).",
		}, []string{"job", "outcome"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_scheduler_runs_total",
			Help: "Runs finished, by job and outcome.",
		}, []string{"job", "outcome"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_scheduler_skipped_total",
			Help: "Due times not run, by job and reason (misfire, blocked, queue_full).",
		}, []string{"job", "reason"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "millrace_scheduler_leader",
			Help:        "1 while this scheduler instance leads (fires the jobs), else 0.",
			ConstLabels: prometheus.Labels{"scheduler_instance": instance},
		}),
		journalErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millrace_scheduler_journal_errors_total",
			Help: "Run records the journal could not take.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.fires, m.lateness, m.failures, m.runs, m.skipped, m.leader, m.journalErrors} {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register scheduler metrics: %w", err)
	}
	return m, nil
}
