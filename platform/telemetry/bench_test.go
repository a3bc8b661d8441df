package telemetry_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/telemetry"
)

// tracingModes are the tracer providers a process runs with.
func tracingModes(b *testing.B) []struct {
	name string
	tp   trace.TracerProvider
} {
	b.Helper()
	off, err := telemetry.NewTracing(telemetry.Config{Disabled: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	dev, err := telemetry.NewTracing(telemetry.Config{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	// Recording into a processor that keeps nothing: the cost of the span
	// itself, without an exporter's.
	recording := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(discard{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	b.Cleanup(func() { _ = recording.Shutdown(context.Background()) })
	return []struct {
		name string
		tp   trace.TracerProvider
	}{
		{"disabled", off.Provider()},
		{"dev-default", dev.Provider()},
		{"recording", recording},
	}
}

// discard is a span processor that keeps nothing.
type discard struct{}

func (discard) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discard) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discard) Shutdown(context.Context) error                  { return nil }
func (discard) ForceFlush(context.Context) error                { return nil }

// gatewayRoutes is a mux router with the gateway's routes.
func gatewayRoutes() *mux.Router {
	r := mux.NewRouter()
	for _, p := range []string{"/v1/users", "/v1/orders", "/v1/orders/{id}/pay", "/v1/orders/{id}/cancel", "/v1/orders/{id}/ship",
		"/v1/commands/{id}", "/v1/orders/{id}", "/v1/users/{id}/orders", "/v1/users/{id}/notifications", "/v1/reports/sales", "/healthz"} {
		r.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	}
	return r
}

// BenchmarkHTTPHandler measures what HTTP.Handler adds to a request that
// matches a route (a second route match, the span, the metrics); "bare" is
// the router alone.
func BenchmarkHTTPHandler(b *testing.B) {
	req := httptest.NewRequest("GET", "/v1/users/42/orders", nil)
	for _, mode := range tracingModes(b) {
		b.Run(mode.name, func(b *testing.B) {
			r := gatewayRoutes()
			h, err := telemetry.NewHTTP(telemetry.HTTPConfig{TracerProvider: mode.tp, Registerer: prometheus.NewRegistry(), Route: telemetry.MuxRoute(r)})
			if err != nil {
				b.Fatal(err)
			}
			srv := h.Handler(r)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				srv.ServeHTTP(w, req)
			}
		})
	}
	b.Run("bare", func(b *testing.B) {
		r := gatewayRoutes()
		w := httptest.NewRecorder()
		b.ReportAllocs()
		for b.Loop() {
			r.ServeHTTP(w, req)
		}
	})
}

// BenchmarkConsumerMiddleware measures the consumer span per message.
func BenchmarkConsumerMiddleware(b *testing.B) {
	for _, mode := range tracingModes(b) {
		b.Run(mode.name, func(b *testing.B) {
			h := telemetry.NewConsumer(telemetry.ConsumerConfig{TracerProvider: mode.tp}).Middleware(func(*message.Message) ([]*message.Message, error) { return nil, nil })
			msg := message.NewMessage("11111111-1111-1111-1111-111111111111", []byte(`{}`))
			// Unsampled, as every trace millrace dev starts itself.
			msg.Metadata.Set(cloudevents.Traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
			msg.Metadata.Set(cloudevents.Type, "orders.order-placed.v1")
			msg.Metadata.Set(cloudevents.KafkaTopic, "orders.events")
			msg.Metadata.Set(cloudevents.KafkaPartition, "2")
			msg.Metadata.Set(cloudevents.KafkaOffset, "1234")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := h(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
