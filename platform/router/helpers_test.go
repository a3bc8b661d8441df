package router_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/sqlite"
)

// env is a router with the stack, a real poison store in a SQLite file,
// and a GoChannel pub/sub whose Publish returns once the message was acked,
// so a test that publishes knows the message's outcome when Publish returns.
type env struct {
	t      *testing.T
	pubsub *gochannel.GoChannel
	router *message.Router
	stack  *router.Stack
	store  *poison.Store
	reg    *prometheus.Registry
	done   chan error
}

// newEnv builds an env; cfg.Poison and cfg.Registerer are filled in.
func newEnv(t *testing.T, cfg router.Config) *env {
	t.Helper()
	ctx := t.Context()
	pubsub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = pubsub.Close() })
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "poison.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	store, err := poison.New(ctx, db, poison.Config{Publisher: pubsub})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	reg := prometheus.NewRegistry()
	cfg.Poison = store
	cfg.Registerer = reg
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = 20 * time.Second
	}
	r, stack, err := router.New(cfg)
	if err != nil {
		t.Fatalf("router.New: %v", err)
	}
	return &env{t: t, pubsub: pubsub, router: r, stack: stack, store: store, reg: reg}
}

// handle adds a handler consuming topic.
func (e *env) handle(name, topic string, h message.NoPublishHandlerFunc) *message.Handler {
	return e.router.AddNoPublisherHandler(name, topic, e.pubsub, h)
}

// run starts the router and stops it when the test ends.
func (e *env) run() {
	e.t.Helper()
	e.done = make(chan error, 1)
	go func() { e.done <- e.router.Run(context.Background()) }()
	e.t.Cleanup(func() { e.close() })
	select {
	case <-e.router.Running():
	case err := <-e.done:
		e.t.Fatalf("router stopped before running: %v", err)
	case <-time.After(10 * time.Second):
		e.t.Fatal("router not running after 10s")
	}
}

// close closes the router and waits for Run to return; it returns Close's error.
func (e *env) close() error {
	if e.done == nil {
		return nil
	}
	err := e.router.Close()
	<-e.done
	e.done = nil
	return err
}

// publish publishes msgs to topic one by one, each returning once handled.
func (e *env) publish(topic string, msgs ...*message.Message) {
	e.t.Helper()
	for _, m := range msgs {
		if err := e.pubsub.Publish(topic, m); err != nil {
			e.t.Fatalf("publish to %s: %v", topic, err)
		}
	}
}

// publishAsync publishes msg in a goroutine owned by the test; the returned
// channel is closed once Publish returned.
func (e *env) publishAsync(topic string, msg *message.Message) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.pubsub.Publish(topic, msg) // fails only after Close, which the test caused
	}()
	e.t.Cleanup(func() { <-done })
	return done
}

// entries lists the poison entries that match f.
func (e *env) entries(f poison.Filter) []poison.Entry {
	e.t.Helper()
	got, err := e.store.List(context.Background(), f)
	if err != nil {
		e.t.Fatalf("list poison entries: %v", err)
	}
	return got
}

// newMsg returns a message with a fresh id, the given key and payload.
func newMsg(key, payload string) *message.Message {
	m := message.NewMessage(uuid.NewString(), []byte(payload))
	m.Metadata.Set(cloudevents.Type, "test.thing.v1")
	if key != "" {
		m.Metadata.Set(cloudevents.PartitionKey, key)
	}
	return m
}

// metric returns the value of the counter or gauge name with the given
// labels ("k=v" pairs), summed over the series that match; 0 when absent.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want []string) bool {
	for _, kv := range want {
		k, v, _ := strings.Cut(kv, "=")
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// calls counts a handler's calls, safe for concurrent use.
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) add(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[id]++
	return c.n[id]
}

func (c *calls) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// fastRules are rules with short waits for tests: retries 1 ms apart.
func fastRules(mut func(*router.HandlerRules)) router.Rules {
	r := router.DefaultRules()
	h := &r.Defaults
	h.Retry.InitialInterval = router.Duration(time.Millisecond)
	h.Retry.MaxInterval = router.Duration(2 * time.Millisecond)
	h.Retry.Jitter = 0
	if mut != nil {
		mut(h)
	}
	return r
}

var errTransient = fmt.Errorf("dependency unavailable")
