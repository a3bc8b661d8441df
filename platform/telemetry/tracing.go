package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// instrumentation is the name of the tracers this package creates.
const instrumentation = "github.com/millrace/millrace/platform/telemetry"

// Propagator returns the propagator every part of millrace uses: W3C Trace
// Context (traceparent and tracestate), the format of the CloudEvents
// distributed-tracing extension.
func Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// Tracing is a process's tracer provider. Which one depends on its Config:
//
//   - Disabled: a no-op provider. No spans are created; incoming trace context
//     is passed on unchanged, so traces of other services still link through.
//   - An endpoint: an SDK provider with a batching OTLP/HTTP exporter and the
//     configured sampler.
//   - Neither (the default of millrace dev): an SDK provider with no
//     exporter, sampling parentbased_always_off. New traces get a trace id
//     (logs and Kafka headers carry it, so they can be correlated) but their
//     spans are not recorded, which costs next to nothing; a request that
//     arrives with a sampled traceparent is recorded and passed on as
//     sampled, so the services downstream keep the caller's decision.
//
// Tracing is safe for concurrent use. The caller owns it and calls Shutdown
// once, after everything that creates spans has stopped.
type Tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil when disabled
	cfg      Config
}

// NewTracing builds the tracer provider cfg describes. It does not connect
// to the endpoint: export failures are logged to logger (once when exports
// start failing, once when they recover) and never fail the caller. A nil
// logger discards logs.
func NewTracing(cfg Config, logger *slog.Logger) (*Tracing, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tracing configuration: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Disabled {
		return &Tracing{provider: noop.NewTracerProvider(), cfg: cfg}, nil
	}

	res := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(cfg.ServiceName))
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if cfg.exporting() {
		exp, err := otlptracehttp.New(context.Background(),
			otlptracehttp.WithEndpointURL(cfg.Endpoint),
			otlptracehttp.WithHeaders(cfg.Headers),
		)
		if err != nil {
			return nil, fmt.Errorf("create OTLP/HTTP exporter for %s: %w", cfg.Endpoint, err)
		}
		opts = append(opts,
			sdktrace.WithBatcher(&loggingExporter{SpanExporter: exp, logger: logger, endpoint: cfg.Endpoint}),
			sdktrace.WithSampler(sampler(cfg)),
		)
	} else {
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	return &Tracing{provider: tp, sdk: tp, cfg: cfg}, nil
}

// sampler returns the sampler cfg names.
func sampler(cfg Config) sdktrace.Sampler {
	switch cfg.Sampler {
	case SamplerAlwaysOn:
		return sdktrace.AlwaysSample()
	case SamplerAlwaysOff:
		return sdktrace.NeverSample()
	case SamplerTraceIDRatio:
		return sdktrace.TraceIDRatioBased(cfg.ratio())
	case SamplerParentBasedAlwaysOff:
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case SamplerParentBasedTraceIDRatio:
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.ratio()))
	default:
		return sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
}

// Provider returns the tracer provider to pass to HTTP, Consumer and
// Publisher. It stays usable after Shutdown, creating spans that go nowhere.
func (t *Tracing) Provider() trace.TracerProvider { return t.provider }

// Exporting reports whether spans are exported, and where to.
func (t *Tracing) Exporting() (endpoint string, ok bool) {
	return t.cfg.Endpoint, t.cfg.exporting()
}

// String describes the tracing setup in a few words, for a start-up banner.
func (t *Tracing) String() string {
	switch {
	case t.cfg.Disabled:
		return "disabled (OTEL_SDK_DISABLED)"
	case t.cfg.exporting():
		return fmt.Sprintf("OTLP/HTTP to %s as %s, sampler %s", t.cfg.Endpoint, t.cfg.ServiceName, t.cfg.Sampler)
	default:
		return "not exported (set OTEL_EXPORTER_OTLP_ENDPOINT to export)"
	}
}

// ForceFlush exports the spans buffered now, waiting at most until ctx is
// done.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.ForceFlush(ctx); err != nil {
		return fmt.Errorf("flush spans: %w", err)
	}
	return nil
}

// Shutdown exports the spans still buffered and stops the exporter, waiting
// at most until ctx is done. Spans started later are dropped.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down tracing: %w", err)
	}
	return nil
}

// loggingExporter reports export failures through slog, once per change
// between failing and working, instead of through OpenTelemetry's global
// error handler, which would print every failed batch to stderr.
type loggingExporter struct {
	sdktrace.SpanExporter
	logger   *slog.Logger
	endpoint string

	mu      sync.Mutex
	failing bool
}

func (e *loggingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case err != nil && !e.failing:
		e.failing = true
		e.logger.Warn("exporting spans failed; spans are dropped until the endpoint answers",
			"endpoint", e.endpoint, "spans", len(spans), "error", err)
	case err == nil && e.failing:
		e.failing = false
		e.logger.Info("exporting spans works again", "endpoint", e.endpoint)
	}
	// The batch processor can do nothing with the error but hand it to the
	// global error handler; it has been logged.
	return nil
}
