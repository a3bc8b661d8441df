package main

// This test is in package main, not main_test: it builds the platform with
// buildPlatform, exactly as `millrace dev` wires it, but with an in-memory
// span recorder for a tracer provider, which only an internal test can pass in.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/platform/kafka"
)

// A client that sends traceparent: its trace id and span id.
const (
	clientTrace = "0af7651916cd43dd8448eb211c80319c"
	clientSpan  = "b7ad6b7169203331"
)

// telemetryPlatform is millrace built by buildPlatform on an embedded
// broker, served by the handler runDev serves, with every span recorded.
type telemetryPlatform struct {
	spans    *tracetest.SpanRecorder
	obs      *observability
	app      *app
	base     string
	logs     *syncBuffer
	routeful bool // the gateway names route templates
}

func startTelemetryPlatform(t *testing.T) *telemetryPlatform {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	cfg := devConfig{DataDir: t.TempDir(), Partitions: 2}
	cfg.setDefaults()

	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	logs := &syncBuffer{}
	logger := withTraceIDs(slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	obs, err := observabilityWith(tp, logger)
	if err != nil {
		t.Fatal(err)
	}
	p, err := buildPlatform(ctx, cfg, broker.Addrs(), logger, obs)
	if err != nil {
		t.Fatalf("build platform: %v", err)
	}
	route := routeOf(p.gateway)
	h, err := obs.handler(p.HTTPHandler(), route)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)

	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run platform: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("close platform: %v", err)
		}
		_ = tp.Shutdown(context.Background())
		_ = broker.Close()
		if t.Failed() {
			lines := strings.Split(logs.String(), "\n")
			t.Logf("last logs:\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("platform stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("platform not ready after 60s")
	}
	return &telemetryPlatform{spans: sr, obs: obs, app: p, base: srv.URL, logs: logs, routeful: route != nil}
}

// TestTelemetry runs one order through millrace and checks what an operator
// sees of it: one trace from the HTTP request to the projections, the
// metrics, and the dashboard's queries.
func TestTelemetry(t *testing.T) {
	tp := startTelemetryPlatform(t)

	user := post(t, tp.base+"/v1/users", `{"email":"ada@example.com","name":"Ada Lovelace"}`, nil)
	userID, _ := user["aggregate_id"].(string)
	if userID == "" {
		t.Fatalf("register user: no aggregate_id in %v", user)
	}
	order := post(t, tp.base+"/v1/orders",
		`{"user_id":"`+userID+`","lines":[{"sku":"SKU-1","quantity":2,"unit_price_cents":250}]}`,
		map[string]string{"traceparent": "00-" + clientTrace + "-" + clientSpan + "-01"})
	orderID, _ := order["aggregate_id"].(string)
	commandID, _ := order["command_id"].(string)
	if orderID == "" || commandID == "" {
		t.Fatalf("place order: no aggregate_id or command_id in %v", order)
	}
	waitUntil(t, 30*time.Second, "the order in the orders projection", func() bool {
		res, err := http.Get(tp.base + "/v1/orders/" + orderID)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})

	t.Run("one trace from the request to the projections", func(t *testing.T) {
		var spans map[string]sdktrace.ReadOnlySpan
		// Every span of the trace, the relay's publish included: it ends
		// once the broker acknowledged, which may be after the consumers
		// handled the event.
		waitUntil(t, 30*time.Second, "the spans of the order's trace", func() bool {
			spans = traceSpans(tp.spans.Ended(), clientTrace)
			for _, name := range []string{"POST /v1/orders", "publish orders.commands", "orders", "publish orders.events",
				"projection.orders.orders.events", "projection.sales.orders.events", "notifications.orders.events"} {
				if _, ok := spans[name]; !ok {
					return false
				}
			}
			return true
		})
		if !tp.routeful {
			t.Fatal("the gateway does not name route templates (no Gateway.Route)")
		}
		serverName := "POST /v1/orders"
		server, ok := spans[serverName]
		if !ok {
			t.Fatalf("no server span %q in the trace; spans: %v", serverName, keys(spans))
		}
		if server.SpanKind() != trace.SpanKindServer || server.Parent().SpanID().String() != clientSpan {
			t.Errorf("server span: kind %v parent %s, want a server span under the client's %s", server.SpanKind(), server.Parent().SpanID(), clientSpan)
		}
		// Each hop is the child of the one before: HTTP → command → handler →
		// outbox → event → projections and reactor.
		for _, link := range []struct{ child, parent string }{
			{"publish orders.commands", serverName},
			{"orders", "publish orders.commands"},
			{"publish orders.events", "orders"},
			{"projection.orders.orders.events", "publish orders.events"},
			{"projection.sales.orders.events", "publish orders.events"},
			{"notifications.orders.events", "publish orders.events"},
		} {
			child, ok := spans[link.child]
			if !ok {
				t.Errorf("no span %q in the trace; spans: %v", link.child, keys(spans))
				continue
			}
			parent := spans[link.parent]
			if parent == nil || child.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Errorf("span %q has parent %s, want %q", link.child, child.Parent().SpanID(), link.parent)
			}
		}
		if s := spans["orders"]; s != nil {
			attrs := map[string]string{}
			for _, kv := range s.Attributes() {
				attrs[string(kv.Key)] = kv.Value.Emit()
			}
			if attrs["messaging.message.id"] != commandID || attrs["messaging.destination.name"] != "orders.commands" || attrs["messaging.kafka.offset"] == "" {
				t.Errorf("command handler span attributes %v, want the command %s read from orders.commands at an offset", attrs, commandID)
			}
		}
	})

	t.Run("logs carry the trace id", func(t *testing.T) {
		// At debug level the HTTP edge and every handler log once per
		// request and message; their records name the client's trace.
		want := map[string]bool{"http request": false, "message handled": false}
		for _, line := range strings.Split(tp.logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil || rec["trace_id"] != clientTrace {
				continue
			}
			if msg, _ := rec["msg"].(string); msg == "http request" || (msg == "message handled" && rec["handler"] == "orders") {
				want[msg] = true
			}
		}
		for msg, found := range want {
			if !found {
				t.Errorf("no %q record with trace_id %s", msg, clientTrace)
			}
		}
	})

	t.Run("the exposition passes promtool and has every part's metrics", func(t *testing.T) {
		exposition := scrapeMetrics(t, tp.base)
		lintMetrics(t, exposition)
		placed := `millrace_http_requests_total{code="201",method="POST",route="/v1/orders"} 1`
		for _, want := range []string{
			placed,
			`millrace_publish_messages_total{outcome="success",topic="orders.commands"} 1`,
			`millrace_publish_messages_total{outcome="success",topic="orders.events"} 1`,
			`millrace_outbox_backlog 0`,
			`millrace_kafka_inspect_success 1`,
		} {
			if !strings.Contains(exposition, want+"\n") {
				t.Errorf("exposition lacks %s", want)
			}
		}
		for _, re := range []string{
			`millrace_projection_position\{partition="\d",projection="orders",topic="orders.events",version="1"\} \d+`,
			`millrace_kafka_consumer_lag\{group="orders",partition="\d",topic="orders.commands"\} \d+`,
			`millrace_handler_messages_total\{handler="orders",outcome="success"\} 1`,
		} {
			if !regexp.MustCompile(re).MatchString(exposition) {
				t.Errorf("exposition has no line matching %s", re)
			}
		}
	})

	t.Run("every metric the dashboard queries is registered", func(t *testing.T) {
		exposed := familyNames(t, scrapeMetrics(t, tp.base))
		registered := registeredNames(tp.obs.registry)
		queried, exprs := dashboardQueries(t, "../../deploy/grafana/millrace.json")
		if len(queried) < 10 {
			t.Fatalf("found only %d metric names in the dashboard", len(queried))
		}
		for _, name := range queried {
			switch {
			case exposed[name]:
			case registered[name]:
				// Registered, but no series yet: a metric of something that
				// has not happened in this run (a retry, a poisoned message).
				t.Logf("%s is registered but has no series yet", name)
			default:
				t.Errorf("the dashboard queries %s, which no part of millrace registers", name)
			}
		}
		checkPromQL(t, exprs)
	})
}

// traceSpans returns the spans of the trace traceID, by name.
func traceSpans(all []sdktrace.ReadOnlySpan, traceID string) map[string]sdktrace.ReadOnlySpan {
	out := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range all {
		if s.SpanContext().TraceID().String() == traceID {
			out[s.Name()] = s
		}
	}
	return out
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// post sends a command and waits for its outcome (Prefer: wait=10); it
// returns the decoded answer, which must be 201 Created.
func post(t *testing.T, url, body string, headers map[string]string) map[string]any {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Prefer", "wait=10")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("POST %s: status %d, want 201: %s", url, res.StatusCode, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("POST %s: decode %s: %v", url, raw, err)
	}
	return out
}

func scrapeMetrics(t *testing.T, base string) string {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d, %v", res.StatusCode, err)
	}
	return string(raw)
}

// promtool returns the path of promtool, failing the test when it is not
// installed.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: run `make test`, which installs it (scripts/test-deps.sh), or `apt-get install prometheus`")
	}
	return path
}

// lintMetrics runs `promtool check metrics` on an exposition.
func lintMetrics(t *testing.T, exposition string) {
	t.Helper()
	cmd := exec.Command(promtool(t), "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func familyNames(t *testing.T, exposition string) map[string]bool {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(exposition))
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	out := map[string]bool{}
	for name := range mfs {
		out[name] = true
	}
	return out
}

// registeredNames lists the metric families every registered collector
// describes, whether or not they have series yet.
func registeredNames(reg *prometheus.Registry) map[string]bool {
	ch := make(chan *prometheus.Desc)
	go func() {
		reg.Describe(ch)
		close(ch)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	out := map[string]bool{}
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			out[m[1]] = true
		}
	}
	return out
}

// dashboardQueries returns the metric families a Grafana dashboard's panels
// query (histogram series mapped to their family) and the queries.
func dashboardQueries(t *testing.T, path string) ([]string, []string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	metric := regexp.MustCompile(`\b(millrace_[a-z0-9_]+|go_[a-z0-9_]+|process_[a-z0-9_]+)\b`)
	seen := map[string]bool{}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
			for _, name := range metric.FindAllString(tg.Expr, -1) {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if strings.HasSuffix(name, suffix) && strings.HasSuffix(strings.TrimSuffix(name, suffix), "_seconds") {
						name = strings.TrimSuffix(name, suffix)
					}
				}
				seen[name] = true
			}
		}
	}
	names := keys(seen)
	return names, exprs
}

// checkPromQL has promtool parse every dashboard query, as the expressions
// of recording rules, with Grafana's variables replaced.
func checkPromQL(t *testing.T, exprs []string) {
	t.Helper()
	vars := regexp.MustCompile(`\$\{?[a-zA-Z_]+\}?`)
	var b bytes.Buffer
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		e = strings.NewReplacer("$__rate_interval", "1m", "$__range", "1h", "$__interval", "1m").Replace(e)
		e = vars.ReplaceAllString(e, ".*")
		q, _ := json.Marshal(e)
		fmt.Fprintf(&b, "      - record: dashboard:query%d\n        expr: %s\n", i, q)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool(t), "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("a dashboard query is not valid PromQL: %v\n%s", err, out)
	}
}

// waitUntil polls cond until it holds or d has passed.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not there after %s", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
