package telemetry_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/millrace/millrace/platform/telemetry"
)

// otlpReceiver is an OTLP/HTTP traces endpoint that keeps what it receives.
// It answers with status (200 unless set otherwise).
type otlpReceiver struct {
	mu       sync.Mutex
	status   int
	requests int
	spans    []string // span names
	services []string // service.name of each span's resource
	header   http.Header
}

func startReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	rcv := &otlpReceiver{status: http.StatusOK}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		rcv.requests++
		rcv.header = r.Header.Clone()
		if rcv.status != http.StatusOK {
			w.WriteHeader(rcv.status)
			return
		}
		for _, rs := range req.GetResourceSpans() {
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					rcv.spans = append(rcv.spans, s.GetName())
					rcv.services = append(rcv.services, service)
				}
			}
		}
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return rcv, srv.URL
}

func (r *otlpReceiver) setStatus(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = code
}

func (r *otlpReceiver) received() (spans, services []string, header http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.spans...), append([]string(nil), r.services...), r.header
}

func TestTracingExportsOnShutdown(t *testing.T) {
	rcv, base := startReceiver(t)
	tr, err := telemetry.NewTracing(telemetry.Config{
		Endpoint: base + "/v1/traces", ServiceName: "orders-worker", Headers: map[string]string{"x-api-key": "secret"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if endpoint, ok := tr.Exporting(); !ok || endpoint != base+"/v1/traces" {
		t.Errorf("Exporting() = %q, %v; want the endpoint, true", endpoint, ok)
	}
	_, span := tr.Provider().Tracer("test").Start(context.Background(), "place order")
	if !span.IsRecording() || !span.SpanContext().IsSampled() {
		t.Error("a root span is not sampled while exporting with the default sampler")
	}
	span.End()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	spans, services, header := rcv.received()
	if len(spans) != 1 || spans[0] != "place order" || services[0] != "orders-worker" {
		t.Fatalf("received spans %v of services %v, want [place order] of orders-worker", spans, services)
	}
	if header.Get("x-api-key") != "secret" {
		t.Errorf("export request header x-api-key = %q, want the configured one", header.Get("x-api-key"))
	}
}

func TestTracingModes(t *testing.T) {
	sampledParent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 1},
		SpanID:     trace.SpanID{0x00, 0xf0, 1},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	cases := []struct {
		name   string
		cfg    telemetry.Config
		parent trace.SpanContext // invalid: a root span
		// What the started span must look like.
		wantValid, wantRecording, wantSampled bool
		wantParentIDs                         bool // same trace and span id as the parent
		describe                              string
	}{
		{name: "default, new trace: ids for logs, nothing recorded", cfg: telemetry.Config{},
			wantValid: true, describe: "not exported"},
		{name: "default, sampled caller: recorded and passed on as sampled", cfg: telemetry.Config{}, parent: sampledParent,
			wantValid: true, wantRecording: true, wantSampled: true, describe: "not exported"},
		{name: "disabled, new trace: no span", cfg: telemetry.Config{Disabled: true},
			describe: "disabled"},
		{name: "disabled, caller's context passes through unchanged", cfg: telemetry.Config{Disabled: true}, parent: sampledParent,
			wantValid: true, wantSampled: true, wantParentIDs: true, describe: "disabled"},
		{name: "exporting with always_off", cfg: telemetry.Config{Endpoint: "http://127.0.0.1:1/v1/traces", Sampler: telemetry.SamplerAlwaysOff},
			wantValid: true, describe: "OTLP/HTTP to http://127.0.0.1:1/v1/traces"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := telemetry.NewTracing(tc.cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_ = tr.Shutdown(ctx)
			})
			if !strings.Contains(tr.String(), tc.describe) {
				t.Errorf("String() = %q, want it to mention %q", tr.String(), tc.describe)
			}
			ctx := context.Background()
			if tc.parent.IsValid() {
				ctx = trace.ContextWithRemoteSpanContext(ctx, tc.parent)
			}
			_, span := tr.Provider().Tracer("test").Start(ctx, "op")
			defer span.End()
			sc := span.SpanContext()
			if sc.IsValid() != tc.wantValid || span.IsRecording() != tc.wantRecording || sc.IsSampled() != tc.wantSampled {
				t.Errorf("span valid %v recording %v sampled %v; want %v %v %v",
					sc.IsValid(), span.IsRecording(), sc.IsSampled(), tc.wantValid, tc.wantRecording, tc.wantSampled)
			}
			if tc.parent.IsValid() && sc.TraceID() != tc.parent.TraceID() {
				t.Errorf("trace id %s, want the caller's %s", sc.TraceID(), tc.parent.TraceID())
			}
			if gotSame := sc.SpanID() == tc.parent.SpanID(); tc.parent.IsValid() && gotSame != tc.wantParentIDs {
				t.Errorf("span id %s equals the parent's: %v, want %v", sc.SpanID(), gotSame, tc.wantParentIDs)
			}

			// Whatever the mode, what goes out names the same trace.
			if tc.parent.IsValid() {
				carrier := propagation.MapCarrier{}
				telemetry.Propagator().Inject(trace.ContextWithSpan(context.Background(), span), carrier)
				if !strings.Contains(carrier.Get("traceparent"), tc.parent.TraceID().String()) {
					t.Errorf("traceparent %q does not carry the caller's trace %s", carrier.Get("traceparent"), tc.parent.TraceID())
				}
			}
		})
	}
}

func TestTracingLogsExportFailuresOnce(t *testing.T) {
	rcv, base := startReceiver(t)
	rcv.setStatus(http.StatusBadRequest) // not retried by the exporter
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedBuffer{mu: &mu, b: &logs}, nil))
	tr, err := telemetry.NewTracing(telemetry.Config{Endpoint: base + "/v1/traces"}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	flushSpan := func() {
		_, span := tr.Provider().Tracer("test").Start(ctx, "op")
		span.End()
		if err := tr.ForceFlush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
	}
	flushSpan()
	flushSpan()
	rcv.setStatus(http.StatusOK)
	flushSpan()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if n := strings.Count(out, "exporting spans failed"); n != 1 {
		t.Errorf("logged the failure %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "exporting spans works again"); n != 1 {
		t.Errorf("logged the recovery %d times, want once:\n%s", n, out)
	}
	if spans, _, _ := rcv.received(); len(spans) != 1 {
		t.Errorf("received %d spans after recovery, want 1", len(spans))
	}
}

type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
