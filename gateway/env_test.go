package gateway_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/schema"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/projectiontest"
	"github.com/millrace/millrace/projections/sales"
	"github.com/millrace/millrace/schemas"
)

// env is one gateway wired to real parts: the schema validator, the
// projections on a SQLite file in t.TempDir(), and a persistent gochannel
// pub/sub whose command topics are recorded as they are published.
type env struct {
	t       testing.TB
	handler http.Handler
	pubsub  *gochannel.GoChannel
	db      *sql.DB
	logs    *bytes.Buffer

	validator *schema.Validator
	commands  *commands.Projection
	orders    *orders.Projection
	sales     *sales.Projection
	notifs    *notifications.Reactor

	runners map[string]*projections.Runner // by projection name

	mu        sync.Mutex
	published []*message.Message
	offsets   map[string]int64 // next offset per topic, for feeding runners
	// publishedCh receives every recorded message too, for feeders.
	publishedCh chan *message.Message
}

// newEnv builds an env; change, when given, adjusts the gateway's config.
func newEnv(t testing.TB, change ...func(*gateway.Config)) *env {
	t.Helper()
	e := &env{
		t:           t,
		db:          projectiontest.OpenDB(t),
		logs:        &bytes.Buffer{},
		runners:     map[string]*projections.Runner{},
		offsets:     map[string]int64{},
		publishedCh: make(chan *message.Message, 64),
	}
	v, err := schema.New(schemas.FS())
	if err != nil {
		t.Fatalf("compile schemas: %v", err)
	}
	e.validator = v
	e.commands = commands.New(e.db)
	e.orders = orders.New(e.db)
	e.sales = sales.New(e.db)
	e.notifs, err = notifications.New(context.Background(), e.db, nil)
	if err != nil {
		t.Fatalf("set up notifications: %v", err)
	}
	for _, p := range []projections.Projection{e.commands, e.orders, e.sales} {
		r, err := projections.NewRunner(context.Background(), e.db, p, nil)
		if err != nil {
			t.Fatalf("set up projection %s: %v", p.Name(), err)
		}
		e.runners[p.Name()] = r
	}

	e.pubsub = gochannel.NewGoChannel(gochannel.Config{
		Persistent: true,
		// Publish returns once the recorder has the message: a test reads
		// e.published right after the response, without waiting.
		BlockPublishUntilSubscriberAck: true,
		PreserveContext:                true,
	}, nil)
	e.record(events.TopicUserCommands, events.TopicOrderCommands)

	cfg := gateway.Config{
		MaxBodyBytes: 1024,
		MaxWait:      5 * time.Second,
		Logger:       slog.New(slog.NewJSONHandler(&lockedWriter{w: e.logs, mu: &e.mu}, nil)),
	}
	for _, c := range change {
		c(&cfg)
	}
	g, err := gateway.New(cfg, e.deps())
	if err != nil {
		t.Fatalf("new gateway: %v", err)
	}
	e.handler = g.Handler()
	return e
}

// deps returns the gateway's dependencies: the env's real parts.
func (e *env) deps() gateway.Deps {
	return gateway.Deps{
		Publisher:     e.pubsub,
		Validator:     e.validator,
		Commands:      e.commands,
		Orders:        e.orders,
		Sales:         e.sales,
		Notifications: e.notifs,
	}
}

// record subscribes to topics and keeps every message published to them.
// The subscribers end with the test.
func (e *env) record(topics ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, topic := range topics {
		ch, err := e.pubsub.Subscribe(ctx, topic)
		if err != nil {
			e.t.Fatalf("subscribe to %s: %v", topic, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for msg := range ch {
				e.mu.Lock()
				e.published = append(e.published, msg)
				e.mu.Unlock()
				select {
				case e.publishedCh <- msg:
				default: // nobody feeds from it in this test
				}
				msg.Ack()
			}
		}()
	}
	e.t.Cleanup(func() {
		cancel()
		if err := e.pubsub.Close(); err != nil {
			e.t.Errorf("close pub/sub: %v", err)
		}
		wg.Wait()
	})
}

// publishedMessages returns what was published so far.
func (e *env) publishedMessages() []*message.Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*message.Message(nil), e.published...)
}

// assertNothingPublished fails the test if any command was published.
func (e *env) assertNothingPublished(t *testing.T) {
	t.Helper()
	if msgs := e.publishedMessages(); len(msgs) != 0 {
		t.Errorf("published %d messages, want none; first: %s %s", len(msgs),
			msgs[0].Metadata.Get(cloudevents.Type), msgs[0].Payload)
	}
}

// feed delivers msg to the named projections as the Kafka subscriber would,
// at the next offset of topic. It is safe to call from any goroutine.
func (e *env) feed(msg *message.Message, topic string, projectionNames ...string) error {
	e.mu.Lock()
	offset := e.offsets[topic]
	e.offsets[topic]++
	e.mu.Unlock()
	for _, name := range projectionNames {
		if err := e.runners[name].Handle(projectiontest.Delivered(msg, topic, 0, offset)); err != nil {
			return err
		}
	}
	return nil
}

// mustFeed is feed for the test goroutine.
func (e *env) mustFeed(t *testing.T, v events.Message, opts ...projectiontest.Option) {
	t.Helper()
	typ, ok := events.Lookup(v.Name())
	if !ok {
		t.Fatalf("no type %s", v.Name())
	}
	topic := typ.Topic
	if r, ok := v.(events.CommandRejected); ok && strings.HasPrefix(r.CommandType, "users.") {
		topic = events.TopicUserEvents
	}
	msg := projectiontest.Message(t, v, opts...)
	if err := e.feed(msg, topic, "commands", "orders", "sales"); err != nil {
		t.Fatalf("feed %s: %v", v.Name(), err)
	}
	// The notifications reactor, as its cqrs event group would run it.
	for _, h := range e.notifs.GroupHandlers() {
		ev := h.NewEvent()
		if reflect.TypeOf(ev) != reflect.PointerTo(reflect.TypeOf(v)) {
			continue
		}
		if err := json.Unmarshal(msg.Payload, ev); err != nil {
			t.Fatalf("decode %s: %v", v.Name(), err)
		}
		if err := h.Handle(cqrs.CtxWithOriginalMessage(context.Background(), msg), ev); err != nil {
			t.Fatalf("notify of %s: %v", v.Name(), err)
		}
	}
}

// do sends one request to the gateway and returns the recorded response.
func (e *env) do(method, path, contentType, body string, header ...string) *httptest.ResponseRecorder {
	return e.doContext(context.Background(), method, path, contentType, body, header...)
}

func (e *env) doContext(ctx context.Context, method, path, contentType, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(ctx, method, path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec
}

// post sends a JSON body.
func (e *env) post(path, body string, header ...string) *httptest.ResponseRecorder {
	return e.do(http.MethodPost, path, "application/json", body, header...)
}

// problemBody is a problem+json response as a client reads it.
type problemBody struct {
	Type      string             `json:"type"`
	Title     string             `json:"title"`
	Status    int                `json:"status"`
	Detail    string             `json:"detail"`
	Instance  string             `json:"instance"`
	Errors    []schema.Violation `json:"errors"`
	Offset    *int64             `json:"offset"`
	Parameter string             `json:"parameter"`
	CommandID string             `json:"command_id"`
	Code      string             `json:"code"`
	Reason    string             `json:"reason"`
}

// assertProblem checks that rec is a problem of the given status and type,
// and returns it.
func assertProblem(t *testing.T, rec *httptest.ResponseRecorder, status int, problemType string) problemBody {
	t.Helper()
	if rec.Code != status {
		t.Errorf("status = %d, want %d; body: %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	assertCommonHeaders(t, rec)
	var p problemBody
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("decode problem: %v; body: %s", err, rec.Body)
	}
	if p.Type != problemType {
		t.Errorf("problem type = %q, want %q; detail: %s", p.Type, problemType, p.Detail)
	}
	if p.Status != status {
		t.Errorf("problem status = %d, want %d", p.Status, status)
	}
	if p.Title == "" || p.Detail == "" || p.Instance == "" {
		t.Errorf("problem lacks title, detail or instance: %s", rec.Body)
	}
	return p
}

// assertCommonHeaders checks what every response carries.
func assertCommonHeaders(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
	}
	if body := rec.Body.Bytes(); len(body) > 0 && body[len(body)-1] != '\n' {
		t.Errorf("body does not end with a newline: %q", body)
	}
}

// decodeJSON decodes rec's body as JSON into v, checking the status.
func decodeJSON(t *testing.T, rec *httptest.ResponseRecorder, status int, v any) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body: %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	assertCommonHeaders(t, rec)
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("decode body: %v; body: %s", err, rec.Body)
	}
}

// acceptedBody is the body of a 202.
type acceptedBody struct {
	CommandID string `json:"command_id"`
	Status    string `json:"status"`
	Links     struct {
		Command  string `json:"command"`
		Resource string `json:"resource"`
	} `json:"links"`
}

// lockedWriter serialises writes of the gateway's logger with the test's reads.
type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// logRecords returns the gateway's log records.
func (e *env) logRecords(t *testing.T) []map[string]any {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	var records []map[string]any
	dec := json.NewDecoder(bytes.NewReader(e.logs.Bytes()))
	for dec.More() {
		var r map[string]any
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("decode log record: %v", err)
		}
		records = append(records, r)
	}
	return records
}

// padding returns n bytes of filler for a JSON string value.
func padding(n int) string { return strings.Repeat("x", n) }
