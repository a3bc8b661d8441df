package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
)

// Gateway governance protects the gateway and what it reads from: rate
// limits per route and per client, a bound on requests in flight, request
// timeouts, and a circuit breaker per read edge. Its rules are typed
// (Rules), validated as a whole (Rules.Validate), and replaced while the
// gateway runs (Gateway.SetRules). See docs/governance.md.

// Defaults of Rules: a zero field takes these values.
const (
	DefaultMaxInFlight       = 1024
	DefaultRequestTimeout    = 30 * time.Second
	DefaultMaxTrackedClients = 10_000
	DefaultBreakerFailures   = 5
	DefaultBreakerOpenFor    = 5 * time.Second
	DefaultBreakerSuccesses  = 1
)

// The read edges: the projection queries behind the gateway, each with its
// own circuit breaker.
const (
	EdgeOrders        = "orders"        // GET /v1/orders/{id}, GET /v1/users/{id}/orders
	EdgeSales         = "sales"         // GET /v1/reports/sales
	EdgeCommands      = "commands"      // GET /v1/commands/{id}, and the Idempotency-Key lookup of a POST
	EdgeNotifications = "notifications" // GET /v1/users/{id}/notifications
)

// AllRoutes is the route of a rate limit that covers every request,
// including those to paths the gateway does not serve.
const AllRoutes = "*"

// healthRoute is exempt from governance: it does no I/O, and a probe that
// is limited would take a healthy process out of service.
const healthRoute = "GET /healthz"

// Rules are the gateway's governance rules. The zero value is usable: every
// zero field takes its default, and no rate limit applies. Rules are plain
// values: a rules file decodes into them (YAML or JSON, keys as tagged).
type Rules struct {
	// Clients says how the gateway tells clients apart for per-client
	// rate limits.
	Clients ClientRules `yaml:"clients" json:"clients"`
	// RateLimits are token buckets. Every rule whose route matches a
	// request applies to it; the request is admitted only if each of them
	// has a token, and then takes one from each.
	RateLimits []RateLimit `yaml:"rate_limits" json:"rate_limits"`
	// MaxInFlight bounds the requests being served at once. A request
	// beyond it is answered at once with 503 and Retry-After; it is not
	// queued. Default 1024.
	MaxInFlight int `yaml:"max_in_flight" json:"max_in_flight"`
	// Timeouts bound how long a request may take.
	Timeouts TimeoutRules `yaml:"timeouts" json:"timeouts"`
	// Breakers guard the read edges (EdgeOrders, EdgeSales, EdgeCommands,
	// EdgeNotifications).
	Breakers BreakerRules `yaml:"breakers" json:"breakers"`
}

// ClientRules identify clients. A request authenticated by an auth.Guard
// is identified by its subject (the token's sub, the API key's subject),
// whatever these rules say; the rules identify the others.
type ClientRules struct {
	// IDHeader names a request header whose value identifies the client,
	// e.g. X-Client-ID. Set it only when a proxy in front of the gateway
	// sets or checks that header: otherwise any client can claim any
	// identity, or a new one per request. A request without the header,
	// and every request when IDHeader is empty, is identified by its
	// remote IP address.
	IDHeader string `yaml:"id_header" json:"id_header"`
	// MaxTracked bounds how many clients each per-client rate limit keeps
	// a bucket for; the least recently seen client is forgotten first (its
	// next request starts with a full bucket). Default 10000.
	MaxTracked int `yaml:"max_tracked" json:"max_tracked"`
}

// RateLimit is one token bucket rule.
type RateLimit struct {
	// Route is a route of the gateway as "METHOD /template" (for example
	// "POST /v1/orders" or "GET /v1/orders/{id}"; a GET rule covers HEAD
	// too), or "*" for every request.
	Route string `yaml:"route" json:"route"`
	// PerClient gives each client its own bucket. Without it, one bucket
	// is shared by every client: a limit on the route as a whole.
	PerClient bool `yaml:"per_client" json:"per_client"`
	// Rate is how many requests per second the bucket refills; it may be
	// fractional (0.5 is one request every two seconds).
	Rate float64 `yaml:"rate" json:"rate"`
	// Burst is the size of the bucket: how many requests may come at once
	// after a quiet period.
	Burst int `yaml:"burst" json:"burst"`
}

// TimeoutRules bound how long requests may take. A request past its
// deadline is answered with 504: everything the gateway waits on (the
// stores, the broker) gives up when the request's context ends. A
// `Prefer: wait=N` POST waits at most until the deadline, then answers 202.
type TimeoutRules struct {
	// Default applies to every route without its own timeout. Default 30s.
	Default time.Duration `yaml:"default" json:"default"`
	// Routes sets the timeout of single routes, keyed "METHOD /template".
	Routes map[string]time.Duration `yaml:"routes" json:"routes"`
}

// BreakerRules configure the circuit breakers of the read edges.
type BreakerRules struct {
	// Default applies to every edge.
	Default BreakerRule `yaml:"default" json:"default"`
	// Edges override Default for single edges, keyed by edge name; a zero
	// field of an override takes the value of Default.
	Edges map[string]BreakerRule `yaml:"edges" json:"edges"`
}

// BreakerRule is one circuit breaker (github.com/eapache/go-resiliency).
// While it is open, reads of its edge fail at once with 503 and a
// Retry-After of OpenFor, instead of waiting on a store that is failing.
type BreakerRule struct {
	// Failures open the breaker when that many calls fail with no gap of
	// OpenFor between two failures. A failure is an error other than "not
	// found" or a bad parameter, a timeout, or a slow call. Default 5.
	Failures int `yaml:"failures" json:"failures"`
	// OpenFor is how long the breaker stays open before it lets calls
	// through again to probe the edge. Default 5s.
	OpenFor time.Duration `yaml:"open_for" json:"open_for"`
	// Successes close a probing breaker after that many calls in a row
	// succeed; one failure opens it again. Default 1.
	Successes int `yaml:"successes" json:"successes"`
	// SlowCall, when positive, counts a call that succeeds but takes longer
	// as a failure. Zero counts only errors and timeouts.
	SlowCall time.Duration `yaml:"slow_call" json:"slow_call"`
}

// edgeNames lists the read edges in a stable order.
func edgeNames() []string {
	return []string{EdgeCommands, EdgeNotifications, EdgeOrders, EdgeSales}
}

// withDefaults returns r with every zero field set to its default.
func (r Rules) withDefaults() Rules {
	if r.Clients.MaxTracked == 0 {
		r.Clients.MaxTracked = DefaultMaxTrackedClients
	}
	if r.MaxInFlight == 0 {
		r.MaxInFlight = DefaultMaxInFlight
	}
	if r.Timeouts.Default == 0 {
		r.Timeouts.Default = DefaultRequestTimeout
	}
	d := &r.Breakers.Default
	if d.Failures == 0 {
		d.Failures = DefaultBreakerFailures
	}
	if d.OpenFor == 0 {
		d.OpenFor = DefaultBreakerOpenFor
	}
	if d.Successes == 0 {
		d.Successes = DefaultBreakerSuccesses
	}
	return r
}

// breakerFor returns the effective rule of an edge: its override, with
// zero fields taken from the default. r must have its defaults set.
func (r Rules) breakerFor(edge string) BreakerRule {
	b, d := r.Breakers.Edges[edge], r.Breakers.Default
	if b.Failures == 0 {
		b.Failures = d.Failures
	}
	if b.OpenFor == 0 {
		b.OpenFor = d.OpenFor
	}
	if b.Successes == 0 {
		b.Successes = d.Successes
	}
	if b.SlowCall == 0 {
		b.SlowCall = d.SlowCall
	}
	return b
}

// timeoutFor returns the timeout of a route key. r must have its defaults
// set.
func (r Rules) timeoutFor(route string) time.Duration {
	if t, ok := r.Timeouts.Routes[route]; ok {
		return t
	}
	return r.Timeouts.Default
}

// RuleError is one problem of a set of Rules: where it is, as the keys that
// lead to it in a rules document, and what to fix.
type RuleError struct {
	// Path is the keys from the root of Rules to the faulty value: field
	// names as tagged, list indexes as decimal numbers, map keys as they
	// are, e.g. ["rate_limits", "0", "burst"].
	Path []string
	// Problem says what is wrong and how to fix it.
	Problem string
}

func (e *RuleError) Error() string { return FormatPath(e.Path) + ": " + e.Problem }

// ConfigPath returns Path; configuration loaders use it to point at the
// line of the faulty value.
func (e *RuleError) ConfigPath() []string { return e.Path }

// FormatPath writes a path of keys as a reader finds it in a document:
// rate_limits[0].burst, timeouts.routes["GET /v1/orders/{id}"].
func FormatPath(path []string) string {
	var b strings.Builder
	for i, seg := range path {
		switch {
		case isIndex(seg):
			b.WriteString("[" + seg + "]")
		case isPlainKey(seg):
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(seg)
		default:
			b.WriteString("[" + strconv.Quote(seg) + "]")
		}
	}
	return b.String()
}

func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isPlainKey(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Validate reports every problem of the rules at once, each as a
// *RuleError saying where it is and what to fix.
func (r Rules) Validate() error {
	r = r.withDefaults()
	var errs []error
	add := func(problem string, path ...string) {
		errs = append(errs, &RuleError{Path: path, Problem: problem})
	}
	routes := governedRoutes()
	checkRoute := func(route string, allowAll bool, path ...string) {
		switch {
		case route == AllRoutes && allowAll:
		case route == "":
			add(routeHint("the route is missing", allowAll, routes), path...)
		case route == healthRoute:
			add("the health check is not governed, so that probes always reach it; remove this rule", path...)
		case !slices.Contains(routes, route):
			add(routeHint(fmt.Sprintf("%q is not a route of the gateway", route), allowAll, routes), path...)
		}
	}

	if h := r.Clients.IDHeader; h != "" && !isHeaderName(h) {
		add(fmt.Sprintf("%q is not a valid header name; use letters, digits and dashes, e.g. X-Client-ID", h), "clients", "id_header")
	}
	if r.Clients.MaxTracked < 0 {
		add(fmt.Sprintf("must be at least 1 client (or 0 for the default %d), got %d", DefaultMaxTrackedClients, r.Clients.MaxTracked),
			"clients", "max_tracked")
	}

	for i, l := range r.RateLimits {
		idx := strconv.Itoa(i)
		checkRoute(l.Route, true, "rate_limits", idx, "route")
		if !(l.Rate > 0) || l.Rate > 1e9 {
			add(fmt.Sprintf("must be a number of requests per second above 0 (0.5 is one every 2 s), got %v", l.Rate),
				"rate_limits", idx, "rate")
		}
		if l.Burst < 1 {
			add(fmt.Sprintf("must be at least 1 request (how many may come at once), got %d", l.Burst), "rate_limits", idx, "burst")
		}
	}

	if r.MaxInFlight < 0 {
		add(fmt.Sprintf("must be at least 1 request (or 0 for the default %d), got %d", DefaultMaxInFlight, r.MaxInFlight),
			"max_in_flight")
	}

	if r.Timeouts.Default < 0 {
		add(fmt.Sprintf("must be a positive duration such as 10s (or 0 for the default %s), got %s", DefaultRequestTimeout, r.Timeouts.Default),
			"timeouts", "default")
	}
	for _, route := range sortedKeys(r.Timeouts.Routes) {
		checkRoute(route, false, "timeouts", "routes", route)
		if t := r.Timeouts.Routes[route]; t <= 0 {
			add(fmt.Sprintf("must be a positive duration such as 2s, got %s", t), "timeouts", "routes", route)
		}
	}

	checkBreaker := func(b BreakerRule, override bool, path ...string) {
		// An override may leave fields at zero: they come from the default.
		if b.Failures < 0 || !override && b.Failures == 0 {
			add(fmt.Sprintf("must be at least 1 failure, got %d", b.Failures), append(path, "failures")...)
		}
		if b.OpenFor < 0 || !override && b.OpenFor == 0 {
			add(fmt.Sprintf("must be a positive duration such as 5s, got %s", b.OpenFor), append(path, "open_for")...)
		}
		if b.Successes < 0 || !override && b.Successes == 0 {
			add(fmt.Sprintf("must be at least 1 success, got %d", b.Successes), append(path, "successes")...)
		}
		if b.SlowCall < 0 {
			add(fmt.Sprintf("must be a positive duration such as 1s, or 0 to count only errors, got %s", b.SlowCall),
				append(path, "slow_call")...)
		}
	}
	checkBreaker(r.Breakers.Default, false, "breakers", "default")
	for _, edge := range sortedKeys(r.Breakers.Edges) {
		if !slices.Contains(edgeNames(), edge) {
			add(fmt.Sprintf("%q is not a read edge; use one of %s", edge, strings.Join(edgeNames(), ", ")), "breakers", "edges", edge)
			continue
		}
		checkBreaker(r.Breakers.Edges[edge], true, "breakers", "edges", edge)
	}
	return errors.Join(errs...)
}

// routeHint completes a message about a bad route with the routes to
// choose from.
func routeHint(msg string, allowAll bool, routes []string) string {
	quoted := make([]string, 0, len(routes)+1)
	if allowAll {
		quoted = append(quoted, `"*" (every request)`)
	}
	for _, r := range routes {
		quoted = append(quoted, strconv.Quote(r))
	}
	return msg + "; use one of " + strings.Join(quoted, ", ")
}

// governedRoutes lists the gateway's routes as "METHOD /template", in the
// order they are declared, without HEAD (a GET rule covers it) and without
// the health check. It walks a router built by routes itself, so the list
// cannot drift from what the gateway serves; building one calls no
// dependency.
func governedRoutes() []string {
	var keys []string
	eachRoute((&Gateway{}).routes(), func(_ *mux.Route, m, tpl string, _ []string) {
		if key := m + " " + tpl; m != http.MethodHead && key != healthRoute {
			keys = append(keys, key)
		}
	})
	return keys
}

// isHeaderName reports whether s is an HTTP header field name (RFC 9110
// token).
func isHeaderName(s string) bool {
	for i := range len(s) {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
