package upstream_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway/upstream"
	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/consul/consultest"
	"github.com/millrace/millrace/platform/discovery"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/queryapi/queryapitest"
)

const (
	someUser  = "7f1c2c7e-1f40-4a1b-9d1e-0a1b2c3d4e5f"
	someOrder = "0b8e4d8a-5c55-4c36-9a2e-1d2b3c4d5e6f"
)

var someDay = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

// readModels returns read models with one user and one paid order.
func readModels(t *testing.T) *queryapitest.ReadModels {
	m := queryapitest.NewReadModels(t)
	m.Feed(t, events.UserRegistered{UserID: someUser, Email: "ada@example.com", FullName: "Ada", RegisteredAt: someDay})
	m.Feed(t, events.OrderPlaced{OrderID: someOrder, UserID: someUser, Currency: "EUR", TotalCents: 2500, PlacedAt: someDay,
		Lines: []events.PricedLine{{SKU: "BOOK-1", Quantity: 2, UnitPriceCents: 1250, LineTotalCents: 2500}}})
	return m
}

// TestWeightedBalancing sends 600 reads to three edges of weights 1, 2
// and 3: each gets its share.
func TestWeightedBalancing(t *testing.T) {
	for _, r := range registries(t) {
		t.Run(r.name, func(t *testing.T) {
			m := readModels(t)
			edges := []*queryapitest.Edge{queryapitest.StartEdge(t, m), queryapitest.StartEdge(t, m), queryapitest.StartEdge(t, m)}
			for i, e := range edges {
				register(t, r.registrar, "weighted", e, i+1, 0)
			}
			c := start(t, upstream.Config{Resolver: r.resolver, Service: "weighted"})
			waitStatus(t, c, "three instances are known", instances(3))

			const n = 600
			for range n {
				if _, err := c.Order(t.Context(), someOrder); err != nil {
					t.Fatalf("read order: %v", err)
				}
			}
			for i, e := range edges {
				want := float64(n*(i+1)) / 6
				if got := float64(e.Queries()); math.Abs(got-want) > 0.05*want {
					t.Errorf("edge of weight %d answered %v of %d reads, want %v ±5%%", i+1, got, n, want)
				}
			}
		})
	}
}

// TestRetryAndEjection: a failing edge's reads are retried on the others,
// it is ejected after EjectAfter failures, and it is tried again after
// its cool-down.
func TestRetryAndEjection(t *testing.T) {
	for _, r := range registries(t) {
		t.Run(r.name, func(t *testing.T) {
			m := readModels(t)
			good1, good2, bad := queryapitest.StartEdge(t, m), queryapitest.StartEdge(t, m), queryapitest.StartEdge(t, m)
			gone := queryapitest.StartEdge(t, m)
			for _, e := range []*queryapitest.Edge{good1, good2, bad, gone} {
				register(t, r.registrar, "retry", e, 1, 0)
			}
			badID := discovery.NewID("retry", "127.0.0.1", bad.Port)
			goneID := discovery.NewID("retry", "127.0.0.1", gone.Port)
			metrics := prometheus.NewRegistry()
			c := start(t, upstream.Config{
				Resolver: r.resolver, Service: "retry", Registerer: metrics,
				// A cool-down far longer than the 40 reads below take, so
				// that no ejected edge is tried again during them.
				EjectAfter: 3, CoolDown: 2 * time.Second, Attempts: 4,
			})
			waitStatus(t, c, "four instances are known", instances(4))

			bad.Fail(true) // answers 500
			gone.Close()   // refuses connections, still registered
			for i := range 40 {
				o, err := c.Order(t.Context(), someOrder)
				if err != nil || o.OrderID != someOrder {
					t.Fatalf("read %d: %+v, %v; want the order from a healthy edge", i, o, err)
				}
			}
			if q := bad.Queries(); q != 3 {
				t.Errorf("failing edge got %d queries, want exactly 3 before its ejection", q)
			}
			st := c.Status()
			for _, in := range st.Instances {
				if want := in.ID == badID || in.ID == goneID; in.Ejected != want {
					t.Errorf("instance %s ejected = %v, want %v", in.ID, in.Ejected, want)
				}
			}
			if got := metric(t, metrics, "millrace_upstream_retries_total", nil); got != 6 {
				t.Errorf("retries = %v, want 6 (3 per broken edge)", got)
			}
			for _, id := range []string{badID, goneID} {
				if got := metric(t, metrics, "millrace_upstream_ejections_total", map[string]string{"instance": id}); got != 1 {
					t.Errorf("ejections of %s = %v, want 1", id, got)
				}
			}
			if got := metric(t, metrics, "millrace_discovery_ejected_instances", nil); got != 2 {
				t.Errorf("ejected instances gauge = %v, want 2", got)
			}

			// Recovered: after the cool-down a read tries it again, and a
			// success brings it back.
			bad.Fail(false)
			before := bad.Queries()
			deadline := time.Now().Add(30 * time.Second)
			for bad.Queries() == before {
				if time.Now().After(deadline) {
					t.Fatalf("the recovered edge got no query 30s after its cool-down of 2s")
				}
				if _, err := c.Order(t.Context(), someOrder); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			for _, in := range c.Status().Instances {
				if in.ID == badID && in.Ejected {
					t.Errorf("recovered instance still ejected after answering")
				}
			}
		})
	}
}

// resolverLog records the index each query was made with and whether its
// answer held an instance.
type resolverLog struct {
	upstream.Resolver
	mu    sync.Mutex
	calls []call
}

type call struct {
	index uint64
	ids   []string
}

func (l *resolverLog) Healthy(ctx context.Context, service string, index uint64) ([]discovery.Instance, uint64, error) {
	list, next, err := l.Resolver.Healthy(ctx, service, index)
	if err == nil {
		var ids []string
		for _, in := range list {
			ids = append(ids, in.ID)
		}
		l.mu.Lock()
		l.calls = append(l.calls, call{index, ids})
		l.mu.Unlock()
	}
	return list, next, err
}

// firstWith returns the index of the query whose answer first held id.
func (l *resolverLog) firstWith(id string) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.calls {
		if slices.Contains(c.ids, id) {
			return c.index, true
		}
	}
	return 0, false
}

// TestWatchDrivenUpdates: a new instance reaches the client through a
// blocking query, and a deregistered one leaves it.
func TestWatchDrivenUpdates(t *testing.T) {
	for _, r := range registries(t) {
		t.Run(r.name, func(t *testing.T) {
			m := readModels(t)
			a, b := queryapitest.StartEdge(t, m), queryapitest.StartEdge(t, m)
			idA := register(t, r.registrar, "watch", a, 1, 0)
			log := &resolverLog{Resolver: r.resolver}
			c := start(t, upstream.Config{Resolver: log, Service: "watch"})
			waitStatus(t, c, "A is known", instances(1))

			idB := register(t, r.registrar, "watch", b, 1, 0)
			waitStatus(t, c, "B is known", instances(2))
			index, ok := log.firstWith(idB)
			if !ok || index == 0 {
				t.Fatalf("B arrived by a query with index %d (found %v); want a blocking query (index > 0)", index, ok)
			}
			for range 10 {
				if _, err := c.Order(t.Context(), someOrder); err != nil {
					t.Fatal(err)
				}
			}
			if b.Queries() == 0 {
				t.Errorf("the new instance got no reads")
			}

			if err := r.registrar.Deregister(t.Context(), idA); err != nil {
				t.Fatal(err)
			}
			st := waitStatus(t, c, "A is gone", instances(1))
			if st.Instances[0].ID != idB {
				t.Fatalf("instances = %+v, want only B", st.Instances)
			}
			before := a.Queries()
			for range 10 {
				if _, err := c.Order(t.Context(), someOrder); err != nil {
					t.Fatal(err)
				}
			}
			if a.Queries() != before {
				t.Errorf("the deregistered instance still got reads")
			}
		})
	}
}

// TestConsulStoppedThenStarted: with the agent gone the client keeps
// serving from the instances it knew, reports stale in its status and
// metrics, and is up to date again once the agent is back (and the
// instances' registries have registered them again).
func TestConsulStoppedThenStarted(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{})
	client := agent.Client(t)
	reg := consul.NewRegistry(client, consul.RegistryConfig{RetryInterval: 200 * time.Millisecond})
	t.Cleanup(func() { _ = reg.Close() })
	m := readModels(t)
	var edges []*queryapitest.Edge
	for range 3 {
		e := queryapitest.StartEdge(t, m)
		register(t, reg, "restart", e, 1, time.Second)
		edges = append(edges, e)
	}
	metrics := prometheus.NewRegistry()
	c := start(t, upstream.Config{
		Resolver: consul.NewResolver(client, consul.ResolverConfig{}), Service: "restart", Registerer: metrics,
		RetryMin: 100 * time.Millisecond, RetryMax: 500 * time.Millisecond,
	})
	waitStatus(t, c, "three instances are known", instances(3))
	labels := map[string]string{"service": "restart"}
	if got := metric(t, metrics, "millrace_discovery_stale", labels); got != 0 {
		t.Fatalf("stale gauge = %v before the stop", got)
	}

	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, c, "stale", func(s upstream.Status) bool { return s.Stale })
	if len(st.Instances) != 3 || !strings.Contains(st.Reason, "unreachable") || st.StaleSince == nil {
		t.Errorf("status while Consul is down = %+v, want stale with the 3 known instances and why", st)
	}
	if got := metric(t, metrics, "millrace_discovery_stale", labels); got != 1 {
		t.Errorf("stale gauge = %v while Consul is down, want 1", got)
	}
	if got := metric(t, metrics, "millrace_discovery_instances", labels); got != 3 {
		t.Errorf("instances gauge = %v while Consul is down, want 3", got)
	}
	before := edges[0].Queries() + edges[1].Queries() + edges[2].Queries()
	for i := range 30 {
		if _, err := c.Order(t.Context(), someOrder); err != nil {
			t.Fatalf("read %d with Consul down: %v", i, err)
		}
	}
	if after := edges[0].Queries() + edges[1].Queries() + edges[2].Queries(); after-before != 30 {
		t.Errorf("edges answered %d of 30 reads while Consul was down", after-before)
	}

	if err := agent.Restart(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, "up to date again", instances(3))
	if got := metric(t, metrics, "millrace_discovery_stale", labels); got != 0 {
		t.Errorf("stale gauge = %v after Consul returned, want 0", got)
	}
	if got := metric(t, metrics, "millrace_discovery_resolve_errors_total", labels); got == 0 {
		t.Errorf("no resolve errors counted while Consul was down")
	}
	if _, err := c.Order(t.Context(), someOrder); err != nil {
		t.Fatal(err)
	}
}

// TestUnavailable: when no instance can answer, a query fails at once with
// ErrUnavailable and says why.
func TestUnavailable(t *testing.T) {
	t.Run("every instance fails", func(t *testing.T) {
		mem := discovery.NewMemory(discovery.MemoryConfig{})
		t.Cleanup(func() { _ = mem.Close() })
		m := readModels(t)
		e := queryapitest.StartEdge(t, m)
		register(t, mem, "down", e, 1, 0)
		e.Fail(true)
		c := start(t, upstream.Config{Resolver: mem, Service: "down"})
		_, err := c.Order(t.Context(), someOrder)
		if !errors.Is(err, upstream.ErrUnavailable) || !strings.Contains(err.Error(), "500") {
			t.Fatalf("err = %v, want ErrUnavailable naming the 500", err)
		}
	})
	t.Run("no instance registered", func(t *testing.T) {
		mem := discovery.NewMemory(discovery.MemoryConfig{})
		t.Cleanup(func() { _ = mem.Close() })
		c := start(t, upstream.Config{Resolver: mem, Service: "nobody"})
		_, err := c.Order(t.Context(), someOrder)
		if !errors.Is(err, upstream.ErrUnavailable) || !strings.Contains(err.Error(), "0 instances known") {
			t.Fatalf("err = %v, want ErrUnavailable saying no instance is known", err)
		}
	})
	t.Run("the registry never answered", func(t *testing.T) {
		// A Consul address nothing listens on.
		client, err := consul.NewClient(consul.Config{Address: "127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		c := start(t, upstream.Config{Resolver: consul.NewResolver(client, consul.ResolverConfig{}), Service: "x",
			AttemptTimeout: 300 * time.Millisecond})
		_, err = c.Order(t.Context(), someOrder)
		if !errors.Is(err, upstream.ErrUnavailable) || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("err = %v, want ErrUnavailable saying the registry is unreachable", err)
		}
		if st := c.Status(); st.Resolved || st.Serving() {
			t.Errorf("status = %+v, want unresolved and not serving", st)
		}
	})
	t.Run("a not-found answer is not retried", func(t *testing.T) {
		mem := discovery.NewMemory(discovery.MemoryConfig{})
		t.Cleanup(func() { _ = mem.Close() })
		m := readModels(t)
		a, b := queryapitest.StartEdge(t, m), queryapitest.StartEdge(t, m)
		register(t, mem, "nf", a, 1, 0)
		register(t, mem, "nf", b, 1, 0)
		c := start(t, upstream.Config{Resolver: mem, Service: "nf"})
		waitStatus(t, c, "two instances", instances(2))
		_, err := c.Order(t.Context(), "no-such-order")
		if !errors.Is(err, orders.ErrNotFound) {
			t.Fatalf("err = %v, want orders.ErrNotFound", err)
		}
		if total := a.Queries() + b.Queries(); total != 1 {
			t.Errorf("a not-found was sent %d times, want once", total)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	_, err := upstream.New(upstream.Config{Attempts: -1, RetryMin: time.Second, RetryMax: time.Millisecond})
	if err == nil {
		t.Fatal("New accepted a config without resolver")
	}
	for _, w := range []string{"no resolver", "attempts -1", "retry max"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}
