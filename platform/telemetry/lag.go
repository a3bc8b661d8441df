package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/platform/kafka"
)

// Defaults of LagConfig.
const (
	DefaultLagTimeout = 5 * time.Second
	DefaultLagMaxAge  = 5 * time.Second
)

// LagConfig configures NewLagCollector.
type LagConfig struct {
	// Kafka is the cluster to inspect. Required.
	Kafka kafka.Config
	// Timeout bounds one inspection of the cluster. Default 5 s.
	Timeout time.Duration
	// MaxAge is how long an inspection is reused: scrapes that come sooner
	// (several Prometheus servers, a dashboard refresh) share it. Default 5 s.
	MaxAge time.Duration
	// Logger receives a warning when inspections start failing and a note
	// when they work again. Default: discard.
	Logger *slog.Logger
}

// LagCollector reports, when scraped, how far every consumer group on the
// cluster is behind on each partition, by calling kafka.Inspect. Lag is the
// end offset minus the group's committed offset, or minus the start offset
// when the group committed nothing; partitions whose lag cannot be known
// are left out.
//
// Metrics:
//
//	millrace_kafka_consumer_lag{group,topic,partition}  gauge, messages
//	millrace_kafka_inspect_success                      gauge, 1 if the last inspection worked
//	millrace_kafka_inspect_duration_seconds             gauge, how long it took
//	millrace_kafka_inspections_total                    counter
//
// One inspection lists topics, offsets and groups with a fresh admin client:
// a handful of round trips to the brokers. At most one runs at a time, and
// its result is reused for MaxAge. LagCollector is safe for concurrent use.
type LagCollector struct {
	cfg LagConfig

	lag, success, duration, inspections *prometheus.Desc

	mu      sync.Mutex
	last    time.Time // when the cached inspection finished; zero: none yet
	rows    []lagRow
	ok      bool
	took    time.Duration
	count   int64
	failing bool
}

type lagRow struct {
	group, topic, partition string
	lag                     int64
}

// NewLagCollector returns a collector of consumer lag; register it with the
// process's registry.
func NewLagCollector(cfg LagConfig) (*LagCollector, error) {
	if len(cfg.Kafka.Brokers) == 0 {
		return nil, fmt.Errorf("create consumer lag collector: no kafka brokers given")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultLagTimeout
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultLagMaxAge
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &LagCollector{
		cfg: cfg,
		lag: prometheus.NewDesc("millrace_kafka_consumer_lag",
			"Messages a consumer group has still to consume on a partition: end offset minus committed offset.",
			[]string{"group", "topic", "partition"}, nil),
		success: prometheus.NewDesc("millrace_kafka_inspect_success",
			"1 if the last inspection of the Kafka cluster for consumer lag worked, else 0.", nil, nil),
		duration: prometheus.NewDesc("millrace_kafka_inspect_duration_seconds",
			"How long the last inspection of the Kafka cluster for consumer lag took.", nil, nil),
		inspections: prometheus.NewDesc("millrace_kafka_inspections_total",
			"Inspections of the Kafka cluster for consumer lag (scrapes within the reuse window share one).", nil, nil),
	}, nil
}

// Describe implements prometheus.Collector.
func (c *LagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.success
	ch <- c.duration
	ch <- c.inspections
}

// Collect implements prometheus.Collector: it inspects the cluster unless
// the last inspection is younger than MaxAge.
func (c *LagCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last.IsZero() || time.Since(c.last) >= c.cfg.MaxAge {
		c.inspect()
	}
	for _, r := range c.rows {
		ch <- constMetric(c.lag, prometheus.GaugeValue, float64(r.lag), r.group, r.topic, r.partition)
	}
	success := 0.0
	if c.ok {
		success = 1
	}
	ch <- constMetric(c.success, prometheus.GaugeValue, success)
	ch <- constMetric(c.duration, prometheus.GaugeValue, c.took.Seconds())
	ch <- constMetric(c.inspections, prometheus.CounterValue, float64(c.count))
}

// inspect refreshes the cached rows; c.mu is held.
func (c *LagCollector) inspect() {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	start := time.Now()
	ov, err := kafka.Inspect(ctx, c.cfg.Kafka)
	c.took = time.Since(start)
	c.last = time.Now()
	c.count++
	c.ok = err == nil
	c.rows = c.rows[:0]
	if err != nil {
		if !c.failing {
			c.failing = true
			c.cfg.Logger.Warn("consumer lag unknown: inspecting kafka failed", "brokers", c.cfg.Kafka.Brokers, "error", err)
		}
		return
	}
	if c.failing {
		c.failing = false
		c.cfg.Logger.Info("consumer lag known again: inspecting kafka works", "brokers", c.cfg.Kafka.Brokers)
	}
	for _, g := range ov.Groups {
		for _, t := range g.Topics {
			for _, p := range t.Partitions {
				if p.Lag < 0 {
					continue // unknown
				}
				c.rows = append(c.rows, lagRow{group: g.Name, topic: t.Topic, partition: itoa(int64(p.Partition)), lag: p.Lag})
			}
		}
	}
}
