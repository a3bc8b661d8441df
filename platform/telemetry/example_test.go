package telemetry_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/gorilla/mux"

	"github.com/millrace/millrace/platform/telemetry"
)

// A process reads the standard OpenTelemetry variables once, in main, and
// builds its tracer provider from them.
func ExampleConfigFromEnv() {
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
		"OTEL_SERVICE_NAME":           "orders-worker",
	}
	cfg, err := telemetry.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		fmt.Println(err)
		return
	}
	tracing, err := telemetry.NewTracing(cfg, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tracing.Shutdown(context.Background())
	fmt.Println(tracing)
	// Output: OTLP/HTTP to http://127.0.0.1:4318/v1/traces as orders-worker, sampler parentbased_always_on
}

// An HTTP server measured by route template, and its metrics served.
func ExampleHTTP() {
	reg, err := telemetry.NewRegistry()
	if err != nil {
		fmt.Println(err)
		return
	}
	routes := mux.NewRouter()
	routes.HandleFunc("/v1/orders/{id}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"status":"placed"}`)
	})
	h, err := telemetry.NewHTTP(telemetry.HTTPConfig{Registerer: reg, Route: telemetry.MuxRoute(routes)})
	if err != nil {
		fmt.Println(err)
		return
	}
	server := h.Handler(routes)
	for _, path := range []string{"/v1/orders/42", "/v1/orders/43", "/v1/nowhere"} {
		server.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
	}

	scrape := httptest.NewRecorder()
	telemetry.MetricsHandler(reg, nil).ServeHTTP(scrape, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(scrape.Body.String(), "\n") {
		if strings.HasPrefix(line, "millrace_http_requests_total") {
			fmt.Println(line)
		}
	}
	// Output:
	// millrace_http_requests_total{code="200",method="GET",route="/v1/orders/{id}"} 2
	// millrace_http_requests_total{code="404",method="GET",route="unmatched"} 1
}
