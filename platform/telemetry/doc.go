// Package telemetry makes a millrace process observable: OpenTelemetry traces
// that follow one request from the HTTP edge through Kafka to every handler
// and projection, Prometheus metrics on a registry of the process's own, and
// trace ids in slog records.
//
// Everything here is a middleware, a decorator or a collector; business code
// never calls this package. cmd/millrace builds the parts once per process and
// passes them in:
//
//   - [Tracing] builds the tracer provider from a [Config] (filled from the
//     standard OTEL_* variables by [ConfigFromEnv]): an OTLP/HTTP exporter
//     when an endpoint is set, nothing exported otherwise.
//   - [HTTP] wraps the gateway: a server span and RED metrics per request,
//     named by the route template (see [MuxRoute]).
//   - [Consumer] is a Watermill router middleware: a consumer span per handled
//     message, continuing the trace of the message's traceparent metadata.
//     (Handler RED metrics, retries, poisoning and breakers are measured by
//     platform/router's stack, on the same registry.)
//   - [Publisher] decorates a Watermill publisher: a producer span per
//     message, whose context it writes as the message's traceparent.
//   - [NewRegistry] and [MetricsHandler] serve /metrics; [LagCollector],
//     [ProjectionCollector] and [OutboxCollector] report consumer lag,
//     projection positions and the outbox backlog when scraped.
//   - [LogHandler] adds trace_id and span_id to slog records.
//
// Trace context travels as W3C traceparent and tracestate: HTTP headers at
// the edge, message metadata (and so Kafka headers, the CloudEvents
// distributed-tracing extension) between processes.
//
// Nothing in this package uses OpenTelemetry's or Prometheus's global state:
// no otel.SetTracerProvider, no default registerer.
package telemetry
