package telemetry_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/millrace/millrace/platform/commandstore"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/sqlite"
	"github.com/millrace/millrace/platform/telemetry"
)

// positions is a PositionSource of fixed positions.
type positions []telemetry.ProjectionPosition

func (p positions) ProjectionPositions(context.Context) ([]telemetry.ProjectionPosition, error) {
	return p, nil
}

// failingBacklog is a Backlog whose store is unreachable.
type failingBacklog struct{}

func (failingBacklog) Pending(context.Context) (int, error) {
	return 0, errors.New("count pending outbox rows: database is closed")
}

// TestExpositionPassesPromtool registers every collector of the package on
// one registry, makes some traffic, scrapes it over HTTP and lints the
// result with promtool.
func TestExpositionPassesPromtool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := startBroker(t)
	if err := kafka.EnsureTopics(ctx, cfg, kafka.Topic{Name: "orders.events", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	produce(t, cfg, "orders.events", 3)
	commit(t, ctx, cfg, "projection.orders.v1.orders.events", "orders.events", 1)

	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	store, err := commandstore.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}

	_, tp := recorder(t)
	reg := registry(t)
	r := mux.NewRouter()
	r.HandleFunc("/v1/orders/{id}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	httpInst, err := telemetry.NewHTTP(telemetry.HTTPConfig{TracerProvider: tp, Registerer: reg, Route: telemetry.MuxRoute(r)})
	if err != nil {
		t.Fatal(err)
	}
	pubInst, err := telemetry.NewPublisher(telemetry.PublisherConfig{TracerProvider: tp, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	lag, err := telemetry.NewLagCollector(telemetry.LagConfig{Kafka: cfg})
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(lag,
		telemetry.NewProjectionCollector(positions{{Projection: "orders", Version: 1, Topic: "orders.events", Partition: 0, Offset: 0}}, 0),
		telemetry.NewOutboxCollector(store, 0),
	)

	// HTTP traffic: a matched route, a 404.
	srv := httptest.NewServer(httpInst.Handler(r))
	defer srv.Close()
	for _, path := range []string{"/v1/orders/1", "/v1/orders/2", "/missing"} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	// Message traffic: one publish.
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer ps.Close()
	if err := pubInst.Wrap(ps).Publish("orders.commands", message.NewMessage(uuid.NewString(), nil)); err != nil {
		t.Fatal(err)
	}

	exposition := scrape(t, reg)
	promtoolCheck(t, exposition)

	families := parseExposition(t, exposition)
	for _, name := range []string{
		"millrace_http_requests_total", "millrace_http_request_duration_seconds", "millrace_http_requests_in_flight",
		"millrace_publish_messages_total", "millrace_publish_duration_seconds",
		"millrace_kafka_consumer_lag", "millrace_kafka_inspect_success", "millrace_kafka_inspect_duration_seconds", "millrace_kafka_inspections_total",
		"millrace_projection_position", "millrace_outbox_backlog",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if _, ok := families[name]; !ok {
			t.Errorf("exposition has no %s", name)
		}
	}
	for _, want := range []string{
		`millrace_http_requests_total{code="200",method="GET",route="/v1/orders/{id}"} 2`,
		`millrace_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`millrace_kafka_consumer_lag{group="projection.orders.v1.orders.events",partition="0",topic="orders.events"} 2`,
		`millrace_projection_position{partition="0",projection="orders",topic="orders.events",version="1"} 0`,
		`millrace_outbox_backlog 0`,
	} {
		if !strings.Contains(string(exposition), want+"\n") {
			t.Errorf("exposition lacks %s", want)
		}
	}
}

// TestFailingSourceLeavesTheRest checks that a collector whose source fails
// does not take the whole scrape down.
func TestFailingSourceLeavesTheRest(t *testing.T) {
	reg := registry(t)
	reg.MustRegister(telemetry.NewOutboxCollector(failingBacklog{}, 0))
	exposition := scrape(t, reg)
	if strings.Contains(string(exposition), "millrace_outbox_backlog") {
		t.Error("a backlog was reported although its source failed")
	}
	if !strings.Contains(string(exposition), "go_goroutines") {
		t.Error("the other collectors were not served")
	}
	// The failure is counted after the scrape that saw it.
	if again := scrape(t, reg); !strings.Contains(string(again), `promhttp_metric_handler_errors_total{cause="gathering"} 1`) {
		t.Error("the failure is not counted in promhttp_metric_handler_errors_total")
	}
}

// parseExposition parses a text exposition into metric families.
func parseExposition(t *testing.T, exposition []byte) map[string]struct{} {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(string(exposition)))
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	out := make(map[string]struct{}, len(mfs))
	for name := range mfs {
		out[name] = struct{}{}
	}
	return out
}
