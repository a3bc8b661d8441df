package telemetry

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// UnmatchedRoute is the route label of requests no route matched (404, 405)
// and of every request when HTTPConfig.Route is nil.
const UnmatchedRoute = "unmatched"

// HTTPConfig configures NewHTTP.
type HTTPConfig struct {
	// TracerProvider creates the server spans. Default: no spans.
	TracerProvider trace.TracerProvider
	// Registerer receives the HTTP metrics. Required.
	Registerer prometheus.Registerer
	// Propagator reads the caller's trace context. Default [Propagator].
	Propagator propagation.TextMapPropagator
	// Route returns the route template a request is for, such as
	// /v1/orders/{id}, or "" when no route matches. It names spans and
	// labels metrics, so it must return a template, never a raw path. It is
	// called once per request, before the request is served, so that a
	// request refused before routing (a 429) still counts under its route.
	// MuxRoute builds one for a gorilla/mux router. Default: every request
	// is [UnmatchedRoute].
	Route func(*http.Request) string
	// Logger receives one debug record per request, with the method,
	// route, status and duration (and, through [LogHandler], the trace and
	// span ids). Default: discard.
	Logger *slog.Logger
}

// HTTP instruments an HTTP server: a server span and RED metrics per
// request, labelled with the route template.
//
// Metrics:
//
//	millrace_http_requests_total{route,method,code}       counter
//	millrace_http_request_duration_seconds{route,method}  histogram
//	millrace_http_requests_in_flight                      gauge
//
// HTTP is safe for concurrent use.
type HTTP struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	route      func(*http.Request) string
	logger     *slog.Logger
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	inFlight   prometheus.Gauge
}

// httpBuckets cover fast reads to a `Prefer: wait=30` command, in seconds.
func httpBuckets() []float64 {
	return []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
}

// NewHTTP registers the HTTP metrics with cfg.Registerer.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	if cfg.Registerer == nil {
		return nil, errors.New("create HTTP instrumentation: no prometheus registerer given")
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = Propagator()
	}
	if cfg.Route == nil {
		cfg.Route = func(*http.Request) string { return "" }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &HTTP{
		tracer:     cfg.TracerProvider.Tracer(instrumentation),
		propagator: cfg.Propagator,
		route:      cfg.Route,
		logger:     cfg.Logger,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_http_requests_total",
			Help: "HTTP requests served, by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "millrace_http_request_duration_seconds",
			Help:    "Time from receiving an HTTP request to finishing its response, by route template and method.",
			Buckets: httpBuckets(),
		}, []string{"route", "method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "millrace_http_requests_in_flight",
			Help: "HTTP requests being served.",
		}),
	}
	if err := register(cfg.Registerer, h.requests, h.duration, h.inFlight); err != nil {
		return nil, fmt.Errorf("create HTTP instrumentation: %w", err)
	}
	return h, nil
}

// MuxRoute returns an HTTPConfig.Route for a gorilla/mux router: the path
// template of the route router matches for a request, "" when none does
// (including a path that matches with the wrong method). It matches the
// request a second time, besides the router's own match.
func MuxRoute(router *mux.Router) func(*http.Request) string {
	return func(r *http.Request) string {
		var m mux.RouteMatch
		if !router.Match(r, &m) || m.MatchErr != nil || m.Route == nil {
			return ""
		}
		tmpl, err := m.Route.GetPathTemplate()
		if err != nil {
			return ""
		}
		return tmpl
	}
}

// Handler wraps next, the whole server. It continues the caller's trace
// from the traceparent header (or starts one), serves the request with the
// server span in its context, and records the span and the metrics when the
// response is done. The span is named "METHOD /route/{template}"; a 5xx
// marks it as an error.
func (h *HTTP) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.inFlight.Inc()
		defer h.inFlight.Dec()

		method := knownMethod(r.Method)
		route := h.route(r)
		name := method
		if route != "" {
			name = method + " " + route
		}
		ctx := h.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := h.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer))
		if span.IsRecording() {
			span.SetAttributes(
				semconv.HTTPRequestMethodKey.String(method),
				semconv.URLPath(r.URL.Path),
				semconv.URLScheme(scheme(r)),
				semconv.ServerAddress(r.Host),
				semconv.UserAgentOriginal(r.UserAgent()),
			)
			if route != "" {
				span.SetAttributes(semconv.HTTPRoute(route))
			}
		}
		if route == "" {
			route = UnmatchedRoute
		}
		sw := &statusWriter{ResponseWriter: w}

		served := false
		defer func() {
			status := sw.status
			switch {
			case !served:
				status = http.StatusInternalServerError // the handler panicked
			case status == 0:
				status = http.StatusOK
			}
			span.SetAttributes(semconv.HTTPResponseStatusCode(status))
			if status >= 500 {
				span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
				span.SetStatus(codes.Error, http.StatusText(status))
			}
			span.End()

			took := time.Since(start)
			h.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
			h.duration.WithLabelValues(route, method).Observe(took.Seconds())
			if h.logger.Enabled(ctx, slog.LevelDebug) {
				h.logger.LogAttrs(ctx, slog.LevelDebug, "http request",
					slog.String("method", method), slog.String("route", route), slog.String("path", r.URL.Path),
					slog.Int("status", status), slog.Duration("duration", took))
			}
		}()
		next.ServeHTTP(sw, r.WithContext(ctx))
		served = true
	})
}

// knownMethod returns m when it is a standard method, else _OTHER, so that
// the method label cannot grow without bound.
func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	default:
		return "_OTHER"
	}
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// statusWriter remembers the status code of the response. Unwrap lets
// http.ResponseController reach the underlying writer's optional methods.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx answers other than 101 are interim; the final status follows.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush implements http.Flusher for handlers that assert it directly.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker for handlers that assert it directly.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return conn, rw, err
}
