package gateway_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/projections/orders"
)

// newGoverned builds a gateway under rules on the env's real parts, with
// wrap (when given) decorating its dependencies, and points e at it.
func newGoverned(t testing.TB, rules gateway.Rules, wrap func(gateway.Deps) gateway.Deps) (*env, *gateway.Gateway) {
	t.Helper()
	e := newEnv(t)
	deps := e.deps()
	if wrap != nil {
		deps = wrap(deps)
	}
	g, err := gateway.New(gateway.Config{
		MaxBodyBytes: 1024,
		MaxWait:      5 * time.Second,
		Logger:       slog.New(slog.NewJSONHandler(&lockedWriter{w: e.logs, mu: &e.mu}, nil)),
		Rules:        rules,
	}, deps)
	if err != nil {
		t.Fatalf("new gateway: %v", err)
	}
	e.handler = g.Handler()
	return e, g
}

// request is one request from a client, identified by its remote address
// and optional headers.
func (e *env) request(method, path, remoteAddr string, header ...string) *httptest.ResponseRecorder {
	var body string
	if method == http.MethodPost {
		body = `{"user_id":"` + someUser + `","lines":[{"sku":"PEN","quantity":1,"unit_price_cents":100}]}`
	}
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = remoteAddr
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec
}

const (
	clientA = "192.0.2.1:40001"
	clientB = "192.0.2.2:40002"
)

var orderPath = "/v1/orders/" + existingOrder

// assertRateLimited checks a 429 problem with a Retry-After of at least one
// second and the RateLimit-* fields.
func assertRateLimited(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	p := assertProblem(t, rec, http.StatusTooManyRequests, gateway.ProblemRateLimited)
	ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Errorf("Retry-After = %q, want whole seconds >= 1", rec.Header().Get("Retry-After"))
	}
	if rec.Header().Get("RateLimit-Remaining") != "0" || rec.Header().Get("RateLimit-Limit") == "" {
		t.Errorf("RateLimit-Limit %q, RateLimit-Remaining %q; want the limit and 0",
			rec.Header().Get("RateLimit-Limit"), rec.Header().Get("RateLimit-Remaining"))
	}
	if !strings.Contains(p.Detail, "Retry after") {
		t.Errorf("detail does not say when to retry: %s", p.Detail)
	}
}

// slow is one request per 100 s: a bucket that does not refill while a
// test runs.
const slow = 0.01

func TestRateLimitBurst(t *testing.T) {
	e, _ := newGoverned(t, gateway.Rules{RateLimits: []gateway.RateLimit{
		{Route: "GET /v1/orders/{id}", PerClient: true, Rate: slow, Burst: 5},
	}}, nil)
	for i := range 5 {
		rec := e.request(http.MethodGet, orderPath, clientA)
		if rec.Code != http.StatusNotFound {
			t.Fatalf("request %d: status %d, want 404 (admitted, no such order); body %s", i+1, rec.Code, rec.Body)
		}
		if got, want := rec.Header().Get("RateLimit-Remaining"), strconv.Itoa(4-i); got != want {
			t.Errorf("request %d: RateLimit-Remaining = %q, want %s", i+1, got, want)
		}
	}
	rec := e.request(http.MethodGet, orderPath, clientA)
	assertRateLimited(t, rec)
	if ra, _ := strconv.Atoi(rec.Header().Get("Retry-After")); ra < 90 || ra > 100 {
		t.Errorf("Retry-After = %d s, want about 100 s (one token at %v per second)", ra, slow)
	}
	if reset, _ := strconv.Atoi(rec.Header().Get("RateLimit-Reset")); reset < 490 || reset > 500 {
		t.Errorf("RateLimit-Reset = %d s, want about 500 s (five tokens at %v per second)", reset, slow)
	}
	// HEAD is governed as GET.
	assertRateLimited(t, e.request(http.MethodHead, orderPath, clientA))
	// The health check is never limited.
	if rec := e.request(http.MethodGet, "/healthz", clientA); rec.Code != http.StatusOK {
		t.Errorf("GET /healthz: status %d, want 200", rec.Code)
	}
}

func TestRateLimitPerClient(t *testing.T) {
	rule := gateway.RateLimit{Route: gateway.AllRoutes, PerClient: true, Rate: slow, Burst: 2}
	for _, tc := range []struct {
		name     string
		idHeader string
		// a and b send the requests of client A and B.
		a, b func(e *env) *httptest.ResponseRecorder
	}{
		{"by remote IP", "",
			func(e *env) *httptest.ResponseRecorder { return e.request(http.MethodGet, orderPath, clientA) },
			func(e *env) *httptest.ResponseRecorder { return e.request(http.MethodGet, orderPath, clientB) }},
		{"by trusted header, from one IP", "X-Client-ID",
			func(e *env) *httptest.ResponseRecorder {
				return e.request(http.MethodGet, orderPath, clientA, "X-Client-ID", "shop-frontend")
			},
			func(e *env) *httptest.ResponseRecorder {
				return e.request(http.MethodGet, orderPath, clientA, "X-Client-ID", "billing")
			}},
		{"header ignored unless trusted", "",
			func(e *env) *httptest.ResponseRecorder {
				return e.request(http.MethodGet, orderPath, clientA, "X-Client-ID", "shop-frontend")
			},
			func(e *env) *httptest.ResponseRecorder { return e.request(http.MethodGet, orderPath, clientB) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newGoverned(t, gateway.Rules{
				Clients:    gateway.ClientRules{IDHeader: tc.idHeader},
				RateLimits: []gateway.RateLimit{rule},
			}, nil)
			for range 2 {
				if rec := tc.a(e); rec.Code == http.StatusTooManyRequests {
					t.Fatalf("client A limited within its burst")
				}
			}
			assertRateLimited(t, tc.a(e))
			for i := range 2 {
				if rec := tc.b(e); rec.Code != http.StatusNotFound {
					t.Errorf("client B request %d: status %d, want 404 (client A's limit is not B's)", i+1, rec.Code)
				}
			}
			assertRateLimited(t, tc.b(e))
		})
	}

	t.Run("a client's own header identifies it across addresses", func(t *testing.T) {
		e, _ := newGoverned(t, gateway.Rules{
			Clients:    gateway.ClientRules{IDHeader: "X-Client-ID"},
			RateLimits: []gateway.RateLimit{rule},
		}, nil)
		e.request(http.MethodGet, orderPath, clientA, "X-Client-ID", "shop")
		e.request(http.MethodGet, orderPath, clientB, "X-Client-ID", "shop")
		assertRateLimited(t, e.request(http.MethodGet, orderPath, "198.51.100.7:1", "X-Client-ID", "shop"))
	})
}

func TestRateLimitRoutes(t *testing.T) {
	type step struct {
		method, path string
		limited      bool
	}
	get := func(limited bool) step { return step{http.MethodGet, orderPath, limited} }
	post := func(limited bool) step { return step{http.MethodPost, "/v1/orders", limited} }
	sales := func(limited bool) step { return step{http.MethodGet, "/v1/reports/sales?date=2025-01-31", limited} }
	for _, tc := range []struct {
		name   string
		limits []gateway.RateLimit
		steps  []step
	}{
		{"a route's limit leaves other routes alone",
			[]gateway.RateLimit{{Route: "POST /v1/orders", PerClient: true, Rate: slow, Burst: 1}},
			[]step{post(false), post(true), get(false), get(false), sales(false)}},
		{"a shared limit counts every client",
			[]gateway.RateLimit{{Route: "GET /v1/orders/{id}", Rate: slow, Burst: 2}},
			[]step{get(false), {http.MethodGet, orderPath, false}, get(true), sales(false)}},
		{"* counts every route together",
			[]gateway.RateLimit{{Route: gateway.AllRoutes, PerClient: true, Rate: slow, Burst: 3}},
			[]step{get(false), post(false), sales(false), get(true), {http.MethodGet, "/no/such/path", true}}},
		{"a refused request takes no token from the other limits",
			[]gateway.RateLimit{
				{Route: "POST /v1/orders", PerClient: true, Rate: slow, Burst: 1},
				{Route: gateway.AllRoutes, PerClient: true, Rate: slow, Burst: 3},
			},
			// POST takes 1 of *'s 3; the refused POSTs take none; two GETs
			// take the rest.
			[]step{post(false), post(true), post(true), get(false), get(false), get(true)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newGoverned(t, gateway.Rules{RateLimits: tc.limits}, nil)
			for i, s := range tc.steps {
				rec := e.request(s.method, s.path, clientA)
				if got := rec.Code == http.StatusTooManyRequests; got != s.limited {
					t.Errorf("step %d, %s %s: status %d, want limited=%v", i+1, s.method, s.path, rec.Code, s.limited)
				}
			}
		})
	}
}

func TestRateLimitForgetsLeastRecentClient(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxTracked int
		// limited is whether client A is still limited after two other
		// clients came.
		limited bool
	}{
		{"bounded below the clients seen", 2, false},
		{"room for every client", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newGoverned(t, gateway.Rules{
				Clients:    gateway.ClientRules{MaxTracked: tc.maxTracked},
				RateLimits: []gateway.RateLimit{{Route: gateway.AllRoutes, PerClient: true, Rate: slow, Burst: 1}},
			}, nil)
			e.request(http.MethodGet, orderPath, clientA)
			assertRateLimited(t, e.request(http.MethodGet, orderPath, clientA))
			e.request(http.MethodGet, orderPath, clientB)
			e.request(http.MethodGet, orderPath, "192.0.2.3:1")
			rec := e.request(http.MethodGet, orderPath, clientA)
			if got := rec.Code == http.StatusTooManyRequests; got != tc.limited {
				t.Errorf("client A: status %d, want limited=%v", rec.Code, tc.limited)
			}
		})
	}
}

// blockingOrders holds every Order call until release is closed or the
// call's context ends. It decorates the real orders projection, to hold
// requests inside the gateway on purpose.
type blockingOrders struct {
	gateway.OrderQueries
	entered chan struct{}
	release chan struct{}
}

func (b blockingOrders) Order(ctx context.Context, id string) (orders.Order, error) {
	b.entered <- struct{}{}
	select {
	case <-b.release:
		return b.OrderQueries.Order(ctx, id)
	case <-ctx.Done():
		return orders.Order{}, ctx.Err()
	}
}

func TestConcurrencyLimit(t *testing.T) {
	const max = 3
	block := blockingOrders{entered: make(chan struct{}, max), release: make(chan struct{})}
	e, _ := newGoverned(t, gateway.Rules{MaxInFlight: max}, func(d gateway.Deps) gateway.Deps {
		block.OrderQueries = d.Orders
		d.Orders = block
		return d
	})

	var wg sync.WaitGroup
	held := make(chan int, max)
	for range max {
		wg.Go(func() { held <- e.request(http.MethodGet, orderPath, clientA).Code })
	}
	for range max {
		<-block.entered // all max requests are inside the gateway
	}

	rec := e.request(http.MethodGet, orderPath, clientB)
	p := assertProblem(t, rec, http.StatusServiceUnavailable, gateway.ProblemOverloaded)
	if rec.Header().Get("Retry-After") != "1" {
		t.Errorf("Retry-After = %q, want 1", rec.Header().Get("Retry-After"))
	}
	if !strings.Contains(p.Detail, strconv.Itoa(max)) {
		t.Errorf("detail does not name the limit: %s", p.Detail)
	}
	if rec := e.request(http.MethodGet, "/healthz", clientB); rec.Code != http.StatusOK {
		t.Errorf("GET /healthz while full: status %d, want 200 (not governed)", rec.Code)
	}

	close(block.release)
	wg.Wait()
	close(held)
	for code := range held {
		if code != http.StatusNotFound {
			t.Errorf("held request: status %d, want 404 once released", code)
		}
	}
	if rec := e.request(http.MethodGet, orderPath, clientB); rec.Code != http.StatusNotFound {
		t.Errorf("after the held requests finished: status %d, want 404", rec.Code)
	}
}

func TestRequestTimeout(t *testing.T) {
	block := blockingOrders{entered: make(chan struct{}, 8), release: make(chan struct{})}
	defer close(block.release)
	e, _ := newGoverned(t, gateway.Rules{Timeouts: gateway.TimeoutRules{
		Default: time.Minute,
		Routes:  map[string]time.Duration{"GET /v1/orders/{id}": 20 * time.Millisecond},
	}}, func(d gateway.Deps) gateway.Deps {
		block.OrderQueries = d.Orders
		d.Orders = block
		return d
	})

	rec := e.request(http.MethodGet, orderPath, clientA)
	p := assertProblem(t, rec, http.StatusGatewayTimeout, gateway.ProblemTimeout)
	if !strings.Contains(p.Detail, "20ms") {
		t.Errorf("detail does not name the timeout: %s", p.Detail)
	}
	// Another route keeps the default.
	if rec := e.request(http.MethodGet, "/v1/reports/sales?date=2025-01-31", clientA); rec.Code != http.StatusOK {
		t.Errorf("GET sales: status %d, want 200", rec.Code)
	}
	var timedOut bool
	for _, r := range e.logRecords(t) {
		timedOut = timedOut || r["msg"] == "request timed out"
	}
	if !timedOut {
		t.Error("no log record of the timeout")
	}
}

// flakyOrders fails every Order call while failing is set, and counts the
// calls that reach it. It decorates the real orders projection.
type flakyOrders struct {
	gateway.OrderQueries
	failing *atomic.Bool
	calls   *atomic.Int64
}

var errDiskIO = errors.New("disk I/O error")

func (f flakyOrders) Order(ctx context.Context, id string) (orders.Order, error) {
	f.calls.Add(1)
	if f.failing.Load() {
		return orders.Order{}, errDiskIO
	}
	return f.OrderQueries.Order(ctx, id)
}

func TestReadEdgeBreaker(t *testing.T) {
	failing, calls := &atomic.Bool{}, &atomic.Int64{}
	e, _ := newGoverned(t, gateway.Rules{Breakers: gateway.BreakerRules{
		Default: gateway.BreakerRule{Failures: 3, OpenFor: 100 * time.Millisecond, Successes: 1},
	}}, func(d gateway.Deps) gateway.Deps {
		d.Orders = flakyOrders{OrderQueries: d.Orders, failing: failing, calls: calls}
		return d
	})

	// Answers are not failures: many "not found" keep the breaker closed.
	for range 10 {
		if rec := e.request(http.MethodGet, orderPath, clientA); rec.Code != http.StatusNotFound {
			t.Fatalf("status %d, want 404", rec.Code)
		}
	}

	failing.Store(true)
	for i := range 3 {
		if rec := e.request(http.MethodGet, orderPath, clientA); rec.Code != http.StatusInternalServerError {
			t.Fatalf("failing call %d: status %d, want 500", i+1, rec.Code)
		}
	}
	before := calls.Load()
	rec := e.request(http.MethodGet, orderPath, clientA)
	p := assertProblem(t, rec, http.StatusServiceUnavailable, gateway.ProblemUnavailable)
	if rec.Header().Get("Retry-After") != "1" {
		t.Errorf("Retry-After = %q, want 1 (open_for 100ms, rounded up)", rec.Header().Get("Retry-After"))
	}
	if !strings.Contains(p.Detail, "orders") {
		t.Errorf("detail does not name the edge: %s", p.Detail)
	}
	if calls.Load() != before {
		t.Errorf("the open breaker let a call through to the store")
	}
	// Other edges are not affected.
	if rec := e.request(http.MethodGet, "/v1/reports/sales?date=2025-01-31", clientA); rec.Code != http.StatusOK {
		t.Errorf("GET sales while the orders breaker is open: status %d, want 200", rec.Code)
	}

	// The store recovers; once the breaker probes, reads go through again.
	failing.Store(false)
	waitUntil(t, 10*time.Second, "the breaker to close", func() bool {
		return e.request(http.MethodGet, orderPath, clientA).Code == http.StatusNotFound
	})
	for range 5 {
		if rec := e.request(http.MethodGet, orderPath, clientA); rec.Code != http.StatusNotFound {
			t.Fatalf("after closing: status %d, want 404", rec.Code)
		}
	}
	logs := e.logRecords(t)
	var opened, closed bool
	for _, r := range logs {
		opened = opened || strings.HasPrefix(r["msg"].(string), "read edge breaker opened") && r["edge"] == "orders"
		closed = closed || strings.HasPrefix(r["msg"].(string), "read edge breaker closed") && r["edge"] == "orders"
	}
	if !opened || !closed {
		t.Errorf("logs: opened=%v closed=%v, want both", opened, closed)
	}
}

func TestReadEdgeBreakerTimeouts(t *testing.T) {
	// A store that hangs: every read times out, which counts as a failure;
	// then the breaker answers at once instead of waiting for the timeout.
	block := blockingOrders{entered: make(chan struct{}, 16), release: make(chan struct{})}
	defer close(block.release)
	e, _ := newGoverned(t, gateway.Rules{
		Timeouts: gateway.TimeoutRules{Routes: map[string]time.Duration{"GET /v1/orders/{id}": 10 * time.Millisecond}},
		Breakers: gateway.BreakerRules{Edges: map[string]gateway.BreakerRule{
			gateway.EdgeOrders: {Failures: 2, OpenFor: time.Minute},
		}},
	}, func(d gateway.Deps) gateway.Deps {
		block.OrderQueries = d.Orders
		d.Orders = block
		return d
	})
	for range 2 {
		assertProblem(t, e.request(http.MethodGet, orderPath, clientA), http.StatusGatewayTimeout, gateway.ProblemTimeout)
	}
	rec := e.request(http.MethodGet, orderPath, clientA)
	assertProblem(t, rec, http.StatusServiceUnavailable, gateway.ProblemUnavailable)
	if rec.Header().Get("Retry-After") != "60" {
		t.Errorf("Retry-After = %q, want 60 (open_for 1m)", rec.Header().Get("Retry-After"))
	}
	if n := len(block.entered); n != 2 {
		t.Errorf("%d calls reached the store, want 2 (the third failed fast)", n)
	}
}

func TestSetRulesLive(t *testing.T) {
	e, g := newGoverned(t, gateway.Rules{}, nil)
	for range 5 {
		if rec := e.request(http.MethodGet, orderPath, clientA); rec.Code != http.StatusNotFound {
			t.Fatalf("no rules: status %d, want 404", rec.Code)
		}
	}

	limited := gateway.Rules{RateLimits: []gateway.RateLimit{{Route: "GET /v1/orders/{id}", PerClient: true, Rate: slow, Burst: 1}}}
	if err := g.SetRules(limited); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	e.request(http.MethodGet, orderPath, clientA)
	assertRateLimited(t, e.request(http.MethodGet, orderPath, clientA))

	// A change elsewhere keeps the state of an unchanged limit.
	limited.MaxInFlight = 100
	if err := g.SetRules(limited); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	assertRateLimited(t, e.request(http.MethodGet, orderPath, clientA))
	if got := g.Rules().MaxInFlight; got != 100 {
		t.Errorf("Rules().MaxInFlight = %d, want 100", got)
	}

	// A changed limit starts with a full bucket.
	limited.RateLimits[0].Burst = 2
	if err := g.SetRules(limited); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	for range 2 {
		if rec := e.request(http.MethodGet, orderPath, clientA); rec.Code != http.StatusNotFound {
			t.Errorf("after raising the burst: status %d, want 404", rec.Code)
		}
	}
	assertRateLimited(t, e.request(http.MethodGet, orderPath, clientA))

	if err := g.SetRules(gateway.Rules{}); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	if rec := e.request(http.MethodGet, orderPath, clientA); rec.Code != http.StatusNotFound {
		t.Errorf("limits removed: status %d, want 404", rec.Code)
	}
}

func TestSetRulesRefusesInvalid(t *testing.T) {
	e, g := newGoverned(t, gateway.Rules{}, nil)
	good := gateway.Rules{RateLimits: []gateway.RateLimit{{Route: "GET /v1/orders/{id}", PerClient: true, Rate: slow, Burst: 1}}}
	if err := g.SetRules(good); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	e.request(http.MethodGet, orderPath, clientA)

	bad := gateway.Rules{
		RateLimits: []gateway.RateLimit{{Route: "GET /v1/order/{id}", Rate: 0, Burst: 0}},
		Timeouts:   gateway.TimeoutRules{Routes: map[string]time.Duration{"GET /v1/orders/{id}": -time.Second}},
		Breakers:   gateway.BreakerRules{Edges: map[string]gateway.BreakerRule{"order": {}}},
	}
	err := g.SetRules(bad)
	if err == nil {
		t.Fatal("SetRules accepted invalid rules")
	}
	want := []string{
		`rate_limits[0].route: "GET /v1/order/{id}" is not a route of the gateway; use one of "*" (every request), "POST /v1/users"`,
		`rate_limits[0].rate: must be a number of requests per second above 0`,
		`rate_limits[0].burst: must be at least 1 request`,
		`timeouts.routes["GET /v1/orders/{id}"]: must be a positive duration such as 2s, got -1s`,
		`breakers.edges.order: "order" is not a read edge; use one of commands, notifications, orders, sales`,
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != len(want) {
		t.Errorf("want %d problems, each a *RuleError; got:\n%v", len(want), err)
	}
	for _, one := range joined.Unwrap() {
		var re *gateway.RuleError
		if !errors.As(one, &re) || len(re.Path) == 0 {
			t.Errorf("problem %q is not a *RuleError with a path", one)
		}
	}

	// The good rules stay in force, with their state.
	assertRateLimited(t, e.request(http.MethodGet, orderPath, clientA))
	if got := g.Rules().RateLimits; len(got) != 1 || got[0] != good.RateLimits[0] {
		t.Errorf("Rules().RateLimits = %+v, want the good rules", got)
	}
}

func TestRulesValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules gateway.Rules
		path  string // of the one problem; "" for valid rules
		says  string
	}{
		{"zero value", gateway.Rules{}, "", ""},
		{"every rule", gateway.Rules{
			Clients:     gateway.ClientRules{IDHeader: "X-Client-ID", MaxTracked: 100},
			RateLimits:  []gateway.RateLimit{{Route: "*", PerClient: true, Rate: 0.5, Burst: 1}, {Route: "POST /v1/orders/{id}/pay", Rate: 100, Burst: 10}},
			MaxInFlight: 10,
			Timeouts:    gateway.TimeoutRules{Default: time.Second, Routes: map[string]time.Duration{"GET /v1/reports/sales": time.Second}},
			Breakers: gateway.BreakerRules{
				Default: gateway.BreakerRule{Failures: 1, OpenFor: time.Second, Successes: 2, SlowCall: time.Second},
				Edges:   map[string]gateway.BreakerRule{gateway.EdgeSales: {OpenFor: time.Minute}},
			},
		}, "", ""},
		{"bad header", gateway.Rules{Clients: gateway.ClientRules{IDHeader: "X Client"}}, "clients.id_header", "not a valid header name"},
		{"negative clients", gateway.Rules{Clients: gateway.ClientRules{MaxTracked: -1}}, "clients.max_tracked", "at least 1"},
		{"no route", gateway.Rules{RateLimits: []gateway.RateLimit{{Rate: 1, Burst: 1}}}, "rate_limits[0].route", "the route is missing"},
		{"health route", gateway.Rules{RateLimits: []gateway.RateLimit{{Route: "GET /healthz", Rate: 1, Burst: 1}}}, "rate_limits[0].route", "not governed"},
		{"method missing", gateway.Rules{RateLimits: []gateway.RateLimit{{Route: "/v1/orders", Rate: 1, Burst: 1}}}, "rate_limits[0].route", `"POST /v1/orders"`},
		{"negative rate", gateway.Rules{RateLimits: []gateway.RateLimit{{Route: "*", Rate: -1, Burst: 1}}}, "rate_limits[0].rate", "above 0"},
		{"negative in flight", gateway.Rules{MaxInFlight: -5}, "max_in_flight", "at least 1"},
		{"negative default timeout", gateway.Rules{Timeouts: gateway.TimeoutRules{Default: -1}}, "timeouts.default", "positive duration"},
		{"timeout of *", gateway.Rules{Timeouts: gateway.TimeoutRules{Routes: map[string]time.Duration{"*": time.Second}}}, `timeouts.routes["*"]`, "not a route"},
		{"negative failures", gateway.Rules{Breakers: gateway.BreakerRules{Default: gateway.BreakerRule{Failures: -1}}}, "breakers.default.failures", "at least 1"},
		{"negative edge open_for", gateway.Rules{Breakers: gateway.BreakerRules{Edges: map[string]gateway.BreakerRule{"orders": {OpenFor: -time.Second}}}}, "breakers.edges.orders.open_for", "positive duration"},
		{"negative slow call", gateway.Rules{Breakers: gateway.BreakerRules{Default: gateway.BreakerRule{SlowCall: -time.Second}}}, "breakers.default.slow_call", "0 to count only errors"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.rules.Validate()
			if tc.path == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var re *gateway.RuleError
			if !errors.As(err, &re) {
				t.Fatalf("Validate = %v, want a *RuleError", err)
			}
			if got := gateway.FormatPath(re.Path); got != tc.path {
				t.Errorf("path = %s, want %s (error %v)", got, tc.path, err)
			}
			if !strings.Contains(err.Error(), tc.says) || strings.Count(err.Error(), "\n") != 0 {
				t.Errorf("error = %q, want one problem saying %q", err, tc.says)
			}
		})
	}
}

func TestNewRefusesInvalidRules(t *testing.T) {
	e := newEnv(t)
	_, err := gateway.New(gateway.Config{Rules: gateway.Rules{MaxInFlight: -1}}, e.deps())
	if err == nil || !strings.Contains(err.Error(), "max_in_flight: must be at least 1") {
		t.Fatalf("New = %v, want the rule problem", err)
	}
}

func TestCommandUnderGovernance(t *testing.T) {
	// A POST is rate limited like any route, and a command accepted under
	// the rules still gets its 202.
	e, _ := newGoverned(t, gateway.Rules{RateLimits: []gateway.RateLimit{
		{Route: "POST /v1/orders", PerClient: true, Rate: slow, Burst: 1},
	}}, nil)
	e.mustFeed(t, events.UserRegistered{UserID: someUser, Email: "ada@example.com", FullName: "Ada", RegisteredAt: time.Now()})
	if rec := e.request(http.MethodPost, "/v1/orders", clientA); rec.Code != http.StatusAccepted {
		t.Fatalf("first POST: status %d, want 202; body %s", rec.Code, rec.Body)
	}
	assertRateLimited(t, e.request(http.MethodPost, "/v1/orders", clientA))
	if n := len(e.publishedMessages()); n != 1 {
		t.Errorf("%d commands published, want 1 (the limited one is not)", n)
	}
}

// waitUntil polls cond until it holds, failing the test after within.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
