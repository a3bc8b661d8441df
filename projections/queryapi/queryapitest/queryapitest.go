// Package queryapitest runs real query edges for tests: the read models on
// a SQLite file in the test's directory, fed events the way the projection
// runners are fed from Kafka, and HTTP servers serving them through
// queryapi, whose health and answers a test can break on purpose. It is
// for tests only, like net/http/httptest.
package queryapitest

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/projectiontest"
	"github.com/millrace/millrace/projections/queryapi"
	"github.com/millrace/millrace/projections/sales"
)

// ReadModels are the real read models on one SQLite file: what a gateway
// reads in-process, and what query edges serve.
type ReadModels struct {
	Orders        *orders.Projection
	Sales         *sales.Projection
	Commands      *commands.Projection
	Notifications *notifications.Reactor

	runners []*projections.Runner
	mu      sync.Mutex
	offsets map[string]int64
}

// NewReadModels sets up the read models in tb.TempDir().
func NewReadModels(tb testing.TB) *ReadModels {
	tb.Helper()
	db := projectiontest.OpenDB(tb)
	m := &ReadModels{
		Orders:   orders.New(db),
		Sales:    sales.New(db),
		Commands: commands.New(db),
		offsets:  map[string]int64{},
	}
	var err error
	m.Notifications, err = notifications.New(context.Background(), db, nil)
	if err != nil {
		tb.Fatalf("set up notifications: %v", err)
	}
	for _, p := range []projections.Projection{m.Orders, m.Sales, m.Commands} {
		r, err := projections.NewRunner(context.Background(), db, p, nil)
		if err != nil {
			tb.Fatalf("set up projection %s: %v", p.Name(), err)
		}
		m.runners = append(m.runners, r)
	}
	return m
}

// Deps are the read models as a query edge serves them.
func (m *ReadModels) Deps() queryapi.Deps {
	return queryapi.Deps{Orders: m.Orders, Sales: m.Sales, Notifications: m.Notifications, Commands: m.Commands, Progress: m}
}

// Reached reports whether the read model named projection has handled every
// position given on its topics, from the positions its runner stored, as
// projections.Manager does.
func (m *ReadModels) Reached(ctx context.Context, projection string, positions []projections.Position) (bool, error) {
	for _, r := range m.runners {
		if r.Name() != projection {
			continue
		}
		have, err := r.Positions(ctx)
		if err != nil {
			return false, err
		}
		for _, want := range positions {
			if !slices.Contains(r.Topics(), want.Topic) {
				continue
			}
			if !slices.ContainsFunc(have, func(p projections.Position) bool {
				return p.Topic == want.Topic && p.Partition == want.Partition && p.Offset >= want.Offset
			}) {
				return false, nil
			}
		}
		return true, nil
	}
	return false, &projections.UnknownProjectionError{Name: projection}
}

// Feed delivers v to every read model as consumption from Kafka would, at
// the next offset of its topic. It is safe for concurrent use.
func (m *ReadModels) Feed(tb testing.TB, v events.Message, opts ...projectiontest.Option) {
	tb.Helper()
	typ, ok := events.Lookup(v.Name())
	if !ok {
		tb.Fatalf("no type %s", v.Name())
	}
	topic := typ.Topic
	if r, ok := v.(events.CommandRejected); ok && strings.HasPrefix(r.CommandType, "users.") {
		topic = events.TopicUserEvents
	}
	msg := projectiontest.Message(tb, v, opts...)
	m.mu.Lock()
	defer m.mu.Unlock()
	offset := m.offsets[topic]
	m.offsets[topic]++
	for _, r := range m.runners {
		if err := r.Handle(projectiontest.Delivered(msg, topic, 0, offset)); err != nil {
			tb.Fatalf("feed %s: %v", v.Name(), err)
		}
	}
	for _, h := range m.Notifications.GroupHandlers() {
		ev := h.NewEvent()
		if reflect.TypeOf(ev) != reflect.PointerTo(reflect.TypeOf(v)) {
			continue
		}
		if err := json.Unmarshal(msg.Payload, ev); err != nil {
			tb.Fatalf("decode %s: %v", v.Name(), err)
		}
		if err := h.Handle(cqrs.CtxWithOriginalMessage(context.Background(), msg), ev); err != nil {
			tb.Fatalf("notify of %s: %v", v.Name(), err)
		}
	}
}

// Edge is one query edge on 127.0.0.1: GET /healthz and queryapi under
// /query/v1/, counting the queries it answers.
type Edge struct {
	// Port is where the edge listens on 127.0.0.1.
	Port int
	// URL is its base URL.
	URL string

	srv       *httptest.Server
	queries   atomic.Int64
	failing   atomic.Bool
	unhealthy atomic.Bool
}

// StartEdge serves the read models as a query edge until the test ends.
func StartEdge(tb testing.TB, m *ReadModels) *Edge {
	tb.Helper()
	qh, err := queryapi.New(queryapi.Config{}, m.Deps())
	if err != nil {
		tb.Fatal(err)
	}
	e := &Edge{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if e.unhealthy.Load() {
			http.Error(w, "unhealthy on purpose", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle(queryapi.Prefix, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.queries.Add(1)
		if e.failing.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"code":"internal","message":"failing on purpose"}`)
			return
		}
		qh.ServeHTTP(w, r)
	}))
	e.srv = httptest.NewServer(mux)
	tb.Cleanup(e.srv.Close)
	_, port, _ := net.SplitHostPort(e.srv.Listener.Addr().String())
	e.Port, _ = strconv.Atoi(port)
	e.URL = e.srv.URL
	return e
}

// Queries is how many queries reached the edge.
func (e *Edge) Queries() int64 { return e.queries.Load() }

// Fail makes every query answer 500 (true) or be served again (false).
func (e *Edge) Fail(on bool) { e.failing.Store(on) }

// Unhealthy makes /healthz answer 503 (true) or 200 again (false).
func (e *Edge) Unhealthy(on bool) { e.unhealthy.Store(on) }

// Close stops the edge: connections are refused from then on.
func (e *Edge) Close() { e.srv.Close() }
