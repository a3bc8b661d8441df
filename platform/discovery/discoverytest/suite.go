// Package discoverytest is the shared test suite of the discovery port:
// every implementation (the in-process discovery.Memory, platform/consul)
// runs the same cases, so that code written against the port behaves the
// same on either. It starts real HTTP servers and, for the crash case, a
// child process that it kills with SIGKILL.
package discoverytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/discovery"
)

// Harness is one implementation under test.
type Harness struct {
	Registrar discovery.Registrar
	Resolver  discovery.Resolver
	// Timeout bounds every wait for a change to show. Default 30 s; a
	// killed instance shows as critical within about one check interval
	// (1 s in the suite) plus the check's timeout.
	Timeout time.Duration
}

// CheckInterval is the health-check interval of every registration the
// suite makes.
const CheckInterval = time.Second

// Run runs the suite. newHarness is called once per case; cases use
// service names of their own, so one registry may serve them all.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	cases := []struct {
		name string
		run  func(t *testing.T, s *suite)
	}{
		{"register reports the instance with tags, metadata and weight", testRegister},
		{"two instances of a service are listed with their own ids", testTwoInstances},
		{"registering an id again replaces its registration", testReplace},
		{"deregister removes the instance and tolerates an unknown id", testDeregister},
		{"a blocking query returns when an instance appears", testBlockingQuery},
		{"a blocking query ends when its context is cancelled", testBlockingCancel},
		{"an unknown service has no instances", testUnknownService},
		{"a failing health check makes the instance critical, a passing one healthy", testFailingCheck},
		{"a killed instance goes critical and drops out", testKilled},
		{"an invalid registration is refused", testInvalid},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			if h.Timeout == 0 {
				h.Timeout = 30 * time.Second
			}
			s := &suite{h: h, service: fmt.Sprintf("suite-%d-%d", i, time.Now().UnixNano()%1e9)}
			c.run(t, s)
		})
	}
}

type suite struct {
	h       Harness
	service string
}

// server is an HTTP server with a health endpoint that can be made to fail.
type server struct {
	port    int
	failing atomic.Bool
	checks  atomic.Int64
}

// serve starts a server on 127.0.0.1 answering /healthz.
func serve(t *testing.T) *server {
	t.Helper()
	s := &server{}
	h := http.NewServeMux()
	h.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		s.checks.Add(1)
		if s.failing.Load() {
			http.Error(w, "failing on purpose", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s.port, _ = strconv.Atoi(port)
	return s
}

// registration is a valid registration of the suite's service at port.
func (s *suite) registration(port int) discovery.Registration {
	return discovery.Registration{
		ID:      discovery.NewID(s.service, "127.0.0.1", port),
		Service: s.service,
		Address: "127.0.0.1",
		Port:    port,
		Role:    "query",
		Version: "1.2.3",
		Weight:  3,
		Zone:    "zone-a",
		Tags:    []string{"extra"},
		Meta:    map[string]string{"owner": "suite"},
		Check:   discovery.Check{Interval: CheckInterval, Timeout: CheckInterval / 2},
	}
}

func (s *suite) register(t *testing.T, r discovery.Registration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), s.h.Timeout)
	defer cancel()
	if err := s.h.Registrar.Register(ctx, r); err != nil {
		t.Fatalf("register %s: %v", r.ID, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
		defer cancel()
		_ = s.h.Registrar.Deregister(ctx, r.ID)
	})
}

// waitFor follows the service with blocking queries until cond holds, and
// returns the answer that satisfied it. It fails the test when the
// harness's timeout passes first.
func (s *suite) waitFor(t *testing.T, what string, cond func([]discovery.Instance) bool) ([]discovery.Instance, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), s.h.Timeout)
	defer cancel()
	var (
		index uint64
		last  []discovery.Instance
	)
	for {
		list, next, err := s.h.Resolver.Healthy(ctx, s.service, index)
		if err != nil {
			t.Fatalf("waiting until %s: resolve %s: %v (last answer %s)", what, s.service, err, ids(last))
		}
		if next == 0 {
			t.Fatalf("resolve %s answered index 0", s.service)
		}
		if cond(list) {
			return list, next
		}
		last, index = list, next
	}
}

func ids(list []discovery.Instance) []string {
	out := []string{}
	for _, in := range list {
		out = append(out, in.ID)
	}
	slices.Sort(out)
	return out
}

func has(id string) func([]discovery.Instance) bool {
	return func(list []discovery.Instance) bool { return slices.Contains(ids(list), id) }
}

func hasNot(id string) func([]discovery.Instance) bool {
	return func(list []discovery.Instance) bool { return !slices.Contains(ids(list), id) }
}

func testRegister(t *testing.T, s *suite) {
	srv := serve(t)
	r := s.registration(srv.port)
	s.register(t, r)
	list, _ := s.waitFor(t, "the instance is healthy", has(r.ID))
	if len(list) != 1 {
		t.Fatalf("instances = %v, want only %s", ids(list), r.ID)
	}
	in := list[0]
	if in.Service != s.service || in.Address != "127.0.0.1" || in.Port != srv.port {
		t.Errorf("instance = %s %s:%d, want %s 127.0.0.1:%d", in.Service, in.Address, in.Port, s.service, srv.port)
	}
	if in.Role != "query" || in.Version != "1.2.3" || in.Weight != 3 || in.Zone != "zone-a" {
		t.Errorf("role, version, weight, zone = %q %q %d %q; want query 1.2.3 3 zone-a", in.Role, in.Version, in.Weight, in.Zone)
	}
	for _, tag := range []string{"role=query", "version=1.2.3", "extra"} {
		if !slices.Contains(in.Tags, tag) {
			t.Errorf("tags %v lack %q", in.Tags, tag)
		}
	}
	if in.Meta["owner"] != "suite" || in.Meta["weight"] != "3" || in.Meta["zone"] != "zone-a" {
		t.Errorf("meta = %v, want owner=suite weight=3 zone=zone-a", in.Meta)
	}
	if in.HostPort() != net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.port)) {
		t.Errorf("HostPort = %s", in.HostPort())
	}
}

func testTwoInstances(t *testing.T, s *suite) {
	a, b := serve(t), serve(t)
	ra, rb := s.registration(a.port), s.registration(b.port)
	if ra.ID == rb.ID {
		t.Fatalf("NewID gave one id %s to two ports", ra.ID)
	}
	rb.Weight = 7
	s.register(t, ra)
	s.register(t, rb)
	list, _ := s.waitFor(t, "both instances are healthy", func(l []discovery.Instance) bool { return len(l) == 2 })
	weights := map[string]int{}
	for _, in := range list {
		weights[in.ID] = in.Weight
	}
	if weights[ra.ID] != 3 || weights[rb.ID] != 7 {
		t.Errorf("weights = %v, want %s:3 %s:7", weights, ra.ID, rb.ID)
	}
}

func testReplace(t *testing.T, s *suite) {
	srv := serve(t)
	r := s.registration(srv.port)
	s.register(t, r)
	s.waitFor(t, "the instance is healthy", has(r.ID))
	r.Weight, r.Zone = 9, "zone-b"
	s.register(t, r)
	list, _ := s.waitFor(t, "the new weight shows", func(l []discovery.Instance) bool {
		return len(l) == 1 && l[0].Weight == 9
	})
	if list[0].Zone != "zone-b" {
		t.Errorf("zone = %q after re-registering, want zone-b", list[0].Zone)
	}
}

func testDeregister(t *testing.T, s *suite) {
	srv := serve(t)
	r := s.registration(srv.port)
	s.register(t, r)
	_, index := s.waitFor(t, "the instance is healthy", has(r.ID))
	if err := s.h.Registrar.Deregister(t.Context(), r.ID); err != nil {
		t.Fatalf("deregister: %v", err)
	}
	// The blocking query from the last index must wake for the removal.
	ctx, cancel := context.WithTimeout(t.Context(), s.h.Timeout)
	defer cancel()
	for {
		list, next, err := s.h.Resolver.Healthy(ctx, s.service, index)
		if err != nil {
			t.Fatalf("instance still listed after deregister: %v", err)
		}
		if len(list) == 0 {
			break
		}
		index = next
	}
	if err := s.h.Registrar.Deregister(t.Context(), r.ID); err != nil {
		t.Errorf("deregister twice: %v, want no error", err)
	}
	if err := s.h.Registrar.Deregister(t.Context(), "no-such-instance"); err != nil {
		t.Errorf("deregister an unknown id: %v, want no error", err)
	}
}

func testBlockingQuery(t *testing.T, s *suite) {
	a, b := serve(t), serve(t)
	ra, rb := s.registration(a.port), s.registration(b.port)
	s.register(t, ra)
	_, index := s.waitFor(t, "the first instance is healthy", has(ra.ID))

	type answer struct {
		list  []discovery.Instance
		index uint64
		err   error
	}
	ctx, cancel := context.WithTimeout(t.Context(), s.h.Timeout)
	defer cancel()
	got := make(chan answer, 1)
	go func() {
		// One blocking query, from the index of the last answer. It can
		// return only because something changed (or the wait ran out,
		// which the suite's timeout is far below).
		var a answer
		for {
			a.list, a.index, a.err = s.h.Resolver.Healthy(ctx, s.service, index)
			if a.err != nil || len(a.list) == 2 {
				break
			}
			index = a.index
		}
		got <- a
	}()
	s.register(t, rb)
	a2 := <-got
	if a2.err != nil {
		t.Fatalf("blocking query: %v", a2.err)
	}
	if !slices.Equal(ids(a2.list), ids([]discovery.Instance{{ID: ra.ID}, {ID: rb.ID}})) {
		t.Errorf("blocking query answered %v, want %s and %s", ids(a2.list), ra.ID, rb.ID)
	}
	if a2.index == index {
		t.Errorf("blocking query answered the index it was given (%d) with a changed list", index)
	}
}

func testBlockingCancel(t *testing.T, s *suite) {
	srv := serve(t)
	r := s.registration(srv.port)
	s.register(t, r)
	_, index := s.waitFor(t, "the instance is healthy", has(r.ID))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, _, err := s.h.Resolver.Healthy(ctx, s.service, index)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("blocking query after cancel returned %v, want context.Canceled", err)
	}
}

func testUnknownService(t *testing.T, s *suite) {
	list, index, err := s.h.Resolver.Healthy(t.Context(), s.service+"-unknown", 0)
	if err != nil {
		t.Fatalf("resolve an unknown service: %v", err)
	}
	if len(list) != 0 || index == 0 {
		t.Fatalf("unknown service: %d instances, index %d; want none and an index above 0", len(list), index)
	}
}

func testFailingCheck(t *testing.T, s *suite) {
	bad, good := serve(t), serve(t)
	rb, rg := s.registration(bad.port), s.registration(good.port)
	s.register(t, rb)
	s.register(t, rg)
	s.waitFor(t, "both are healthy", func(l []discovery.Instance) bool { return len(l) == 2 })

	bad.failing.Store(true)
	list, _ := s.waitFor(t, "the failing instance drops out", hasNot(rb.ID))
	if !slices.Equal(ids(list), []string{rg.ID}) {
		t.Fatalf("healthy = %v, want only %s", ids(list), rg.ID)
	}
	if bad.checks.Load() == 0 {
		t.Fatalf("the failing instance dropped out without being checked")
	}
	bad.failing.Store(false)
	s.waitFor(t, "the recovered instance is back", has(rb.ID))
}

func testKilled(t *testing.T, s *suite) {
	child := StartChild(t)
	live := serve(t)
	rc, rl := s.registration(child.Port), s.registration(live.port)
	s.register(t, rc)
	s.register(t, rl)
	s.waitFor(t, "both are healthy", func(l []discovery.Instance) bool { return len(l) == 2 })

	child.Kill(t)
	list, _ := s.waitFor(t, "the killed instance drops out", hasNot(rc.ID))
	if !slices.Equal(ids(list), []string{rl.ID}) {
		t.Fatalf("healthy after the kill = %v, want only %s", ids(list), rl.ID)
	}
}

func testInvalid(t *testing.T, s *suite) {
	srv := serve(t)
	cases := []struct {
		name   string
		change func(*discovery.Registration)
	}{
		{"no port", func(r *discovery.Registration) { r.Port = 0 }},
		{"wildcard address", func(r *discovery.Registration) { r.Address = "0.0.0.0" }},
		{"weight too high", func(r *discovery.Registration) { r.Weight = discovery.MaxWeight + 1 }},
		{"interval below a second", func(r *discovery.Registration) { r.Check.Interval = 10 * time.Millisecond }},
		{"service name with a space", func(r *discovery.Registration) { r.Service = "two words" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := s.registration(srv.port)
			c.change(&r)
			if err := s.h.Registrar.Register(t.Context(), r); err == nil {
				_ = s.h.Registrar.Deregister(t.Context(), r.ID)
				t.Fatalf("Register accepted a registration with %s", c.name)
			}
		})
	}
	list, _, err := s.h.Resolver.Healthy(t.Context(), s.service, 0)
	if err != nil || len(list) != 0 {
		t.Fatalf("after refused registrations: %v, %v; want no instances", ids(list), err)
	}
}

// Logger returns a logger writing to the test's log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
