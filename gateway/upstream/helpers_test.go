package upstream_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/millrace/millrace/gateway/upstream"
	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/consul/consultest"
	"github.com/millrace/millrace/platform/discovery"
	"github.com/millrace/millrace/platform/discovery/discoverytest"
	"github.com/millrace/millrace/projections/queryapi/queryapitest"
)

// registry is one implementation of discovery the client runs on.
type registry struct {
	name      string
	registrar discovery.Registrar
	resolver  upstream.Resolver
}

// registries returns the in-process registry and a real Consul agent of
// the test's own.
func registries(t *testing.T) []registry {
	t.Helper()
	mem := discovery.NewMemory(discovery.MemoryConfig{Logger: discoverytest.Logger(t)})
	t.Cleanup(func() { _ = mem.Close() })
	agent := consultest.Start(t, consultest.Options{})
	client := agent.Client(t)
	reg := consul.NewRegistry(client, consul.RegistryConfig{Logger: discoverytest.Logger(t)})
	t.Cleanup(func() { _ = reg.Close() })
	return []registry{
		{"in-process", mem, mem},
		{"consul", reg, consul.NewResolver(client, consul.ResolverConfig{})},
	}
}

// register announces edge as an instance of service with weight. The check
// interval is long, so that an edge broken on purpose stays listed while
// the client deals with it.
func register(t *testing.T, r discovery.Registrar, service string, edge *queryapitest.Edge, weight int, interval time.Duration) string {
	t.Helper()
	if interval == 0 {
		interval = 30 * time.Second
	}
	id := discovery.NewID(service, "127.0.0.1", edge.Port)
	err := r.Register(t.Context(), discovery.Registration{
		ID: id, Service: service, Address: "127.0.0.1", Port: edge.Port,
		Role: "query", Version: "test", Weight: weight, Zone: "local",
		Check: discovery.Check{Interval: interval, Timeout: time.Second},
	})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	t.Cleanup(func() { _ = r.Deregister(context.Background(), id) })
	return id
}

// start builds a client on res and runs it until the test ends.
func start(t *testing.T, cfg upstream.Config) *upstream.Client {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = discoverytest.Logger(t)
	}
	c, err := upstream.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return c
}

// waitStatus polls the client's status until cond holds, failing after
// 30 s.
func waitStatus(t *testing.T, c *upstream.Client, what string, cond func(upstream.Status) bool) upstream.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := c.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting until %s: status after 30s: %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func instances(n int) func(upstream.Status) bool {
	return func(s upstream.Status) bool { return !s.Stale && len(s.Instances) == n }
}

// metric returns the value of a gauge or counter with the given labels.
func metric(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if matches(m, labels) {
				switch {
				case m.Gauge != nil:
					return m.GetGauge().GetValue()
				case m.Counter != nil:
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func matches(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := labels[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}
