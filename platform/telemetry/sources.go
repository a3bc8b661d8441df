package telemetry

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultSourceTimeout bounds one read of a ProjectionCollector's or an
// OutboxCollector's source.
const DefaultSourceTimeout = 5 * time.Second

// ProjectionPosition is how far one projection got on one partition.
type ProjectionPosition struct {
	Projection string
	// Version is the projection's version: during a rebuild, the old and
	// the new version report side by side.
	Version   int
	Topic     string
	Partition int32
	// Offset is the offset of the last message the projection handled.
	Offset int64
}

// PositionSource reports the positions of projections. It must be safe for
// concurrent use; the context lives as long as one scrape.
type PositionSource interface {
	ProjectionPositions(ctx context.Context) ([]ProjectionPosition, error)
}

// ProjectionCollector reports, when scraped, the position of every
// projection on every partition it has handled messages from:
//
//	millrace_projection_position{projection,version,topic,partition}  gauge, offset
//
// Compare it with the topic's end offsets (or watch the projection's
// consumer lag) to see how far behind a projection, or a rebuild, is. A
// source that fails is reported to the registry as a collection error.
type ProjectionCollector struct {
	src     PositionSource
	timeout time.Duration
	desc    *prometheus.Desc
}

// NewProjectionCollector returns a collector reading src on every scrape,
// for at most timeout (DefaultSourceTimeout when 0).
func NewProjectionCollector(src PositionSource, timeout time.Duration) *ProjectionCollector {
	if timeout <= 0 {
		timeout = DefaultSourceTimeout
	}
	return &ProjectionCollector{
		src:     src,
		timeout: timeout,
		desc: prometheus.NewDesc("millrace_projection_position",
			"Offset of the last message a projection handled, by projection, version, topic and partition.",
			[]string{"projection", "version", "topic", "partition"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *ProjectionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *ProjectionCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	positions, err := c.src.ProjectionPositions(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for _, p := range positions {
		ch <- constMetric(c.desc, prometheus.GaugeValue, float64(p.Offset),
			p.Projection, itoa(int64(p.Version)), p.Topic, itoa(int64(p.Partition)))
	}
}

// Backlog reports how many outbox rows wait to be published;
// *commandstore.Store implements it. It must be safe for concurrent use; the
// context lives as long as one scrape.
type Backlog interface {
	Pending(ctx context.Context) (int, error)
}

// OutboxCollector reports, when scraped, the outbox backlog:
//
//	millrace_outbox_backlog  gauge, rows written but not yet published
//
// A backlog that grows means the relay cannot publish (the broker is down or
// slow). A source that fails is reported to the registry as a collection error.
type OutboxCollector struct {
	src     Backlog
	timeout time.Duration
	desc    *prometheus.Desc
}

// NewOutboxCollector returns a collector reading src on every scrape, for at
// most timeout (DefaultSourceTimeout when 0).
func NewOutboxCollector(src Backlog, timeout time.Duration) *OutboxCollector {
	if timeout <= 0 {
		timeout = DefaultSourceTimeout
	}
	return &OutboxCollector{
		src:     src,
		timeout: timeout,
		desc: prometheus.NewDesc("millrace_outbox_backlog",
			"Outbox rows written by command handlers but not yet published to Kafka.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *OutboxCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *OutboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	n, err := c.src.Pending(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	ch <- constMetric(c.desc, prometheus.GaugeValue, float64(n))
}
