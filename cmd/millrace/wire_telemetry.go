package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/telemetry"
	"github.com/millrace/millrace/projections"
)

// observability is what one millrace process traces and measures with: the
// tracer provider, the process's one metrics registry, and the
// instrumentation built on them. newObservability builds it before the
// platform; buildPlatform instruments the parts with it; runDev serves
// /metrics and instruments the HTTP server with it, and shuts it down last.
type observability struct {
	tracing   *telemetry.Tracing // nil when the caller brought its own provider
	provider  trace.TracerProvider
	registry  *prometheus.Registry
	logger    *slog.Logger
	publisher *telemetry.Publisher
	consumer  *telemetry.Consumer
	positions *projectionPositions
}

// observabilityFromEnv builds tracing from the OTEL_* variables getenv
// reads (see telemetry.ConfigFromEnv) and the instrumentation on a fresh
// registry.
func observabilityFromEnv(getenv func(string) string, logger *slog.Logger) (*observability, error) {
	cfg, err := telemetry.ConfigFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	return newObservability(cfg, logger)
}

// newObservability builds tracing from cfg and the instrumentation on a
// fresh registry.
func newObservability(cfg telemetry.Config, logger *slog.Logger) (*observability, error) {
	tracing, err := telemetry.NewTracing(cfg, logger.With("component", "tracing"))
	if err != nil {
		return nil, err
	}
	o, err := observabilityWith(tracing.Provider(), logger)
	if err != nil {
		return nil, errors.Join(err, tracing.Shutdown(context.Background()))
	}
	o.tracing = tracing
	return o, nil
}

// observabilityWith builds the instrumentation on a fresh registry for the
// given tracer provider, which the caller shuts down.
func observabilityWith(tp trace.TracerProvider, logger *slog.Logger) (*observability, error) {
	reg, err := telemetry.NewRegistry()
	if err != nil {
		return nil, err
	}
	pub, err := telemetry.NewPublisher(telemetry.PublisherConfig{TracerProvider: tp, Registerer: reg})
	if err != nil {
		return nil, err
	}
	positions := &projectionPositions{}
	if err := reg.Register(telemetry.NewProjectionCollector(positions, 0)); err != nil {
		return nil, fmt.Errorf("register projection positions: %w", err)
	}
	return &observability{
		provider:  tp,
		registry:  reg,
		logger:    logger,
		publisher: pub,
		consumer: telemetry.NewConsumer(telemetry.ConsumerConfig{
			TracerProvider: tp,
			Logger:         logger.With("component", "router"),
		}),
		positions: positions,
	}, nil
}

// withTraceIDs returns logger with trace_id and span_id added to every
// record logged with a context that holds a span.
func withTraceIDs(logger *slog.Logger) *slog.Logger {
	return slog.New(telemetry.NewLogHandler(logger.Handler()))
}

// registerer is where the parts register their metrics.
func (o *observability) registerer() prometheus.Registerer { return o.registry }

// tracePublisher returns pub with a producer span per message, whose trace
// context it writes as the message's traceparent.
func (o *observability) tracePublisher(pub message.Publisher) message.Publisher {
	return o.publisher.Wrap(pub)
}

// routerOuter is the middleware to run outermost on every router handler
// (router.Config.Outer): a consumer span per message, so that the stack's
// retry and poison events land on it.
func (o *observability) routerOuter() []message.HandlerMiddleware {
	return []message.HandlerMiddleware{o.consumer.Middleware}
}

// watch registers the collectors read on every scrape: the consumer lag of
// every group on the cluster and the outbox backlog.
func (o *observability) watch(kcfg kafka.Config, outbox telemetry.Backlog) error {
	lag, err := telemetry.NewLagCollector(telemetry.LagConfig{Kafka: kcfg, Logger: o.logger.With("component", "metrics")})
	if err != nil {
		return err
	}
	if err := errors.Join(
		o.registry.Register(lag),
		o.registry.Register(telemetry.NewOutboxCollector(outbox, 0)),
	); err != nil {
		return fmt.Errorf("register collectors: %w", err)
	}
	return nil
}

// watchProjection adds a projection runner (one version of a projection)
// to millrace_projection_position.
func (o *observability) watchProjection(r *projections.Runner) {
	o.positions.add(r)
}

// handler serves the process's HTTP: /metrics from the registry, and every
// other path from app, traced and measured. route names a request's route
// template (see telemetry.HTTPConfig.Route); nil labels every request
// "unmatched".
func (o *observability) handler(app http.Handler, route func(*http.Request) string) (http.Handler, error) {
	instrumented, err := telemetry.NewHTTP(telemetry.HTTPConfig{
		TracerProvider: o.provider,
		Registerer:     o.registry,
		Route:          route,
		Logger:         o.logger.With("component", "http"),
	})
	if err != nil {
		return nil, err
	}
	traced := instrumented.Handler(app)
	metrics := telemetry.MetricsHandler(o.registry, o.logger.With("component", "metrics"))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			metrics.ServeHTTP(w, r)
			return
		}
		traced.ServeHTTP(w, r)
	}), nil
}

// routeNamer is implemented by an HTTP edge that can name the route
// template of a request (the gateway).
type routeNamer interface {
	Route(r *http.Request) string
}

// routeOf returns edge's route namer, or nil when it has none.
func routeOf(edge any) func(*http.Request) string {
	if n, ok := edge.(routeNamer); ok {
		return n.Route
	}
	return nil
}

// describeTraces says in a few words where spans go, for the ready banner.
func (o *observability) describeTraces() string {
	if o.tracing == nil {
		return "provided by the caller"
	}
	return o.tracing.String()
}

// shutdown exports the spans still buffered, waiting at most timeout.
func (o *observability) shutdown(timeout time.Duration) error {
	if o.tracing == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return o.tracing.Shutdown(ctx)
}

// projectionPositions reports the positions of the projection runners of
// this process. It is safe for concurrent use.
type projectionPositions struct {
	mu      sync.Mutex
	runners []*projections.Runner
}

func (p *projectionPositions) add(r *projections.Runner) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.runners = append(p.runners, r)
}

// ProjectionPositions implements telemetry.PositionSource.
func (p *projectionPositions) ProjectionPositions(ctx context.Context) ([]telemetry.ProjectionPosition, error) {
	p.mu.Lock()
	runners := append([]*projections.Runner(nil), p.runners...)
	p.mu.Unlock()
	var out []telemetry.ProjectionPosition
	for _, r := range runners {
		positions, err := r.Positions(ctx)
		if err != nil {
			return nil, fmt.Errorf("read positions of projection %s v%d: %w", r.Name(), r.Version(), err)
		}
		for _, pos := range positions {
			out = append(out, telemetry.ProjectionPosition{
				Projection: r.Name(), Version: r.Version(), Topic: pos.Topic, Partition: pos.Partition, Offset: pos.Offset,
			})
		}
	}
	return out, nil
}
