package telemetry_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/platform/telemetry"
)

// routes is a mux router like the gateway's.
func routes(seen *trace.SpanContext) *mux.Router {
	r := mux.NewRouter()
	r.HandleFunc("/v1/orders/{id}/pay", func(w http.ResponseWriter, r *http.Request) {
		*seen = trace.SpanContextFromContext(r.Context())
		w.WriteHeader(http.StatusAccepted)
	}).Methods(http.MethodPost)
	r.HandleFunc("/v1/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		*seen = trace.SpanContextFromContext(r.Context())
		_, _ = w.Write([]byte(`{}`)) // no WriteHeader: 200
	}).Methods(http.MethodGet)
	r.HandleFunc("/v1/broken", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "store down", http.StatusServiceUnavailable)
	})
	r.HandleFunc("/v1/panics", func(http.ResponseWriter, *http.Request) {
		panic("handler bug")
	})
	return r
}

// server is an HTTP handler instrumented the way cmd/millrace wires the
// gateway: HTTP.Handler around the gateway, whose governance may answer
// before routing (here: 429 for order 9).
func server(t *testing.T, tp trace.TracerProvider, reg prometheus.Registerer, seen *trace.SpanContext, logs io.Writer) http.Handler {
	t.Helper()
	r := routes(seen)
	logger := slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	h, err := telemetry.NewHTTP(telemetry.HTTPConfig{TracerProvider: tp, Registerer: reg, Route: telemetry.MuxRoute(r), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	governed := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/v1/orders/9" {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		r.ServeHTTP(w, req)
	})
	return h.Handler(governed)
}

func TestHTTPHandler(t *testing.T) {
	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	cases := []struct {
		name        string
		method      string
		path        string
		traceparent string
		wantCode    int
		wantSpan    string
		wantRoute   string // label value
		wantError   bool
	}{
		{name: "route template names the span and continues the caller's trace", method: "POST", path: "/v1/orders/42/pay",
			traceparent: "00-" + callerTrace + "-00f067aa0ba902b7-01",
			wantCode:    202, wantSpan: "POST /v1/orders/{id}/pay", wantRoute: "/v1/orders/{id}/pay"},
		{name: "implicit 200 without a caller trace starts a new trace", method: "GET", path: "/v1/orders/7",
			wantCode: 200, wantSpan: "GET /v1/orders/{id}", wantRoute: "/v1/orders/{id}"},
		{name: "no route matched", method: "GET", path: "/nowhere",
			wantCode: 404, wantSpan: "GET", wantRoute: telemetry.UnmatchedRoute},
		{name: "method not allowed", method: "DELETE", path: "/v1/orders/7",
			wantCode: 405, wantSpan: "DELETE", wantRoute: telemetry.UnmatchedRoute},
		{name: "a 5xx marks the span as an error", method: "GET", path: "/v1/broken",
			wantCode: 503, wantSpan: "GET /v1/broken", wantRoute: "/v1/broken", wantError: true},
		{name: "a request refused before routing counts under its route", method: "GET", path: "/v1/orders/9",
			wantCode: 429, wantSpan: "GET /v1/orders/{id}", wantRoute: "/v1/orders/{id}"},
		{name: "an unknown method is not a label value", method: "BREW", path: "/nowhere",
			wantCode: 404, wantSpan: "_OTHER", wantRoute: telemetry.UnmatchedRoute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sr, tp := recorder(t)
			reg := registry(t)
			var seen trace.SpanContext
			var logs bytes.Buffer
			srv := server(t, tp, reg, &seen, &logs)

			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(""))
			if tc.traceparent != "" {
				req.Header.Set("traceparent", tc.traceparent)
			}
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			if rec.Code != tc.wantCode {
				t.Fatalf("status %d, want %d", rec.Code, tc.wantCode)
			}

			spans := sr.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans ended, want 1", len(spans))
			}
			span := spans[0]
			if span.Name() != tc.wantSpan {
				t.Errorf("span name %q, want %q", span.Name(), tc.wantSpan)
			}
			if span.SpanKind() != trace.SpanKindServer {
				t.Errorf("span kind %v, want server", span.SpanKind())
			}
			attrs := attrMap(span.Attributes())
			if got := attrs["http.response.status_code"]; got != attribute.IntValue(tc.wantCode) {
				t.Errorf("http.response.status_code = %v, want %d", got.Emit(), tc.wantCode)
			}
			if tc.wantRoute != telemetry.UnmatchedRoute && attrs["http.route"].AsString() != tc.wantRoute {
				t.Errorf("http.route = %q, want %q", attrs["http.route"].AsString(), tc.wantRoute)
			}
			if gotErr := span.Status().Code == codes.Error; gotErr != tc.wantError {
				t.Errorf("span status %v, want error %v", span.Status(), tc.wantError)
			}
			if tc.traceparent != "" {
				if got := span.SpanContext().TraceID().String(); got != callerTrace {
					t.Errorf("trace id %s, want the caller's %s", got, callerTrace)
				}
				if got := span.Parent().SpanID().String(); got != "00f067aa0ba902b7" || !span.Parent().IsRemote() {
					t.Errorf("parent %s (remote %v), want the caller's span 00f067aa0ba902b7", got, span.Parent().IsRemote())
				}
			} else if span.Parent().IsValid() {
				t.Errorf("span has parent %s, want a root span", span.Parent().SpanID())
			}
			if seen.IsValid() && seen.SpanID() != span.SpanContext().SpanID() {
				t.Errorf("handler saw span %s in its context, want the server span %s", seen.SpanID(), span.SpanContext().SpanID())
			}

			method, _, _ := strings.Cut(tc.wantSpan, " ")
			var logged map[string]any
			if err := json.Unmarshal(logs.Bytes(), &logged); err != nil {
				t.Fatalf("decode the log record %q: %v", logs.String(), err)
			}
			for k, want := range map[string]any{"msg": "http request", "method": method, "route": tc.wantRoute, "path": tc.path,
				"status": float64(tc.wantCode), "trace_id": span.SpanContext().TraceID().String()} {
				if logged[k] != want {
					t.Errorf("log %s = %v, want %v", k, logged[k], want)
				}
			}

			want := map[string]string{"route": tc.wantRoute, "method": method, "code": strconv.Itoa(tc.wantCode)}
			if m := series(t, reg, "millrace_http_requests_total", want); m == nil || m.GetCounter().GetValue() != 1 {
				t.Errorf("millrace_http_requests_total%s is not 1", labels(want))
			}
			delete(want, "code")
			if m := series(t, reg, "millrace_http_request_duration_seconds", want); m == nil || m.GetHistogram().GetSampleCount() != 1 {
				t.Errorf("millrace_http_request_duration_seconds%s has not 1 sample", labels(want))
			}
			if m := gather(t, reg, "millrace_http_requests_in_flight"); m == nil || m.GetMetric()[0].GetGauge().GetValue() != 0 {
				t.Errorf("millrace_http_requests_in_flight is not back to 0")
			}
		})
	}
}

func TestHTTPHandlerPanic(t *testing.T) {
	sr, tp := recorder(t)
	reg := registry(t)
	var seen trace.SpanContext
	srv := server(t, tp, reg, &seen, io.Discard)

	func() {
		defer func() {
			if recover() == nil {
				t.Error("the handler's panic did not reach net/http")
			}
		}()
		srv.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/panics", nil))
	}()

	spans := sr.Ended()
	if len(spans) != 1 || spans[0].Status().Code != codes.Error {
		t.Fatalf("want one ended error span, got %d spans", len(spans))
	}
	want := map[string]string{"route": "/v1/panics", "method": "GET", "code": "500"}
	if m := series(t, reg, "millrace_http_requests_total", want); m == nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("millrace_http_requests_total%s is not 1", labels(want))
	}
}

func TestHTTPWithoutRoute(t *testing.T) {
	// Without HTTPConfig.Route every request is unmatched: never a raw path.
	sr, tp := recorder(t)
	reg := registry(t)
	h, err := telemetry.NewHTTP(telemetry.HTTPConfig{TracerProvider: tp, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	var seen trace.SpanContext
	h.Handler(routes(&seen)).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/orders/1", nil))
	if spans := sr.Ended(); len(spans) != 1 || spans[0].Name() != "GET" {
		t.Errorf("span names %v, want [GET]", names(spans))
	}
	want := map[string]string{"route": telemetry.UnmatchedRoute, "method": "GET", "code": "200"}
	if m := series(t, reg, "millrace_http_requests_total", want); m == nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("millrace_http_requests_total%s is not 1", labels(want))
	}
}

func TestNewHTTPNeedsRegisterer(t *testing.T) {
	if _, err := telemetry.NewHTTP(telemetry.HTTPConfig{}); err == nil {
		t.Fatal("NewHTTP without a registerer succeeded")
	}
}

func attrMap(kvs []attribute.KeyValue) map[string]attribute.Value {
	m := make(map[string]attribute.Value, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value
	}
	return m
}
