// Package gateway is millrace's HTTP edge: it turns requests into commands,
// publishes them to Kafka, and serves the projections.
//
// A POST that asks for a change (register a user; place, pay, cancel or ship
// an order) goes through one pipeline: the content type is checked, the body
// is read up to a limit and parsed, the ids the server assigns are merged in,
// the whole command document is validated against its JSON Schema (package
// schemas) and decoded into the typed command of package events. The command
// is then published as a CloudEvent on its command topic, carrying a digest
// of the request (the ce_requesthash extension), and the client gets 202
// Accepted with the command's URL as soon as the broker acknowledged it:
// nothing is written to a database on the way. The command log
// (projections/commands) learns of the command from the command topic; until
// it has, the gateway answers for the commands it accepted from a bounded
// record of its own (recent.go). A client may send `Prefer: wait=N` to wait
// up to N seconds for the outcome, and an `Idempotency-Key` header to make
// retries safe: a retry with the same key and body names the same command
// (and the same new aggregate) on any gateway instance, and is not published
// again once the command is known (see command.go for the one race left, and
// why it is harmless).
//
// Reads (`GET /v1/orders/{id}`, `/v1/users/{id}/orders`,
// `/v1/users/{id}/notifications`, `/v1/reports/sales`, `/v1/commands/{id}`)
// are answered from the projections.
//
// Every error is an RFC 9457 problem (`application/problem+json`) with a type
// under https://millrace.dev/problems/ and a detail that says what was wrong
// and how to fix it.
//
// Every request except the health check runs under governance (Rules,
// governance*.go): rate limits per route and per client (429 with
// Retry-After), a bound on requests in flight (503), a timeout per route
// (504), and a circuit breaker per read edge (503 while a projection store
// keeps failing). SetRules changes the rules while the gateway serves.
//
// Who may call which route is decided in front of the gateway, by an
// auth.Guard (platform/auth) that asks Requirement: commands need
// commands:write:<wire name> (granted by commands:write), reads need
// queries:read, the health check is public (auth*.go). The gateway records
// the authenticated sender on every command it publishes (ce_authtype,
// ce_authid), counts per-client rate limits by subject, refuses bodies
// nested deeper than MaxJSONDepth, and sets the security headers on every
// response (Secure adds CORS for the whole process).
//
// The gateway reaches everything through small interfaces declared here and
// satisfied by the projection packages, platform/schema and any Watermill
// publisher; cmd/millrace wires the real ones.
package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/gorilla/mux"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes    = 1 << 20
	DefaultMaxWait         = 30 * time.Second
	DefaultDefaultCurrency = "EUR"
)

// Config holds the gateway's settings. The zero value is usable: setDefaults
// fills in every unset field.
type Config struct {
	// MaxBodyBytes bounds the size of a request body; a larger one is
	// answered with 413. Default 1 MiB.
	MaxBodyBytes int64
	// MaxWait caps how long a `Prefer: wait=N` request may wait for its
	// command's outcome. Default 30 s.
	MaxWait time.Duration
	// DefaultCurrency is the currency of an order whose request names none.
	// Default EUR.
	DefaultCurrency string
	// Logger receives one record per internal error (500). Default: a
	// logger that discards everything.
	Logger *slog.Logger
	// Rules are the governance rules in force at start: rate limits,
	// the bound on requests in flight, timeouts, read-edge breakers.
	// The zero value takes every default. SetRules changes them later.
	Rules Rules
	// RecentCommands bounds the record of the commands this gateway
	// accepted lately, kept until the command log learns of them from the
	// command topic: GET /v1/commands/{id} right after a 202 is answered
	// from it. At most this many, the least recently used dropped first.
	// Default DefaultRecentCommands.
	RecentCommands int
	// RecentCommandTTL is how long an accepted command stays in that record
	// at most. Default DefaultRecentCommandTTL (1 minute).
	RecentCommandTTL time.Duration
}

func (c *Config) setDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.DefaultCurrency == "" {
		c.DefaultCurrency = DefaultDefaultCurrency
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RecentCommands == 0 {
		c.RecentCommands = DefaultRecentCommands
	}
	if c.RecentCommandTTL == 0 {
		c.RecentCommandTTL = DefaultRecentCommandTTL
	}
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("max body bytes must be positive, got %d", c.MaxBodyBytes))
	}
	if c.MaxWait < 0 {
		errs = append(errs, fmt.Errorf("max wait must not be negative, got %s", c.MaxWait))
	}
	if !isCurrencyCode(c.DefaultCurrency) {
		errs = append(errs, fmt.Errorf("default currency must be three upper-case letters (ISO 4217), got %q", c.DefaultCurrency))
	}
	if c.RecentCommands < 0 {
		errs = append(errs, fmt.Errorf("recent commands must not be negative (0 takes the default), got %d", c.RecentCommands))
	}
	if c.RecentCommandTTL < 0 {
		errs = append(errs, fmt.Errorf("recent command TTL must not be negative (0 takes the default), got %s", c.RecentCommandTTL))
	}
	return errors.Join(errs...)
}

// Deps are the parts the gateway talks to. All are required. The gateway
// does not own them: it never closes the publisher or the stores.
type Deps struct {
	// Publisher carries commands to their command topics. It must be safe
	// for concurrent use (every Watermill publisher is).
	Publisher message.Publisher
	// Validator checks command documents against the JSON Schemas.
	Validator Validator
	// Commands reports the outcomes of commands.
	Commands CommandLog
	// Orders answers order queries.
	Orders OrderQueries
	// Sales answers sales report queries.
	Sales SalesQueries
	// Notifications lists a user's notifications.
	Notifications Notifications
	// Progress tells how far the read models got, for queries that ask to
	// read after a command (read-your-writes, see readyourwrites.go).
	// Optional: without it such queries are answered with 400.
	Progress Progress
}

func (d Deps) validate() error {
	var errs []error
	if d.Publisher == nil {
		errs = append(errs, errors.New("no publisher given"))
	}
	if d.Validator == nil {
		errs = append(errs, errors.New("no schema validator given"))
	}
	if d.Commands == nil {
		errs = append(errs, errors.New("no command log given"))
	}
	if d.Orders == nil {
		errs = append(errs, errors.New("no order queries given"))
	}
	if d.Sales == nil {
		errs = append(errs, errors.New("no sales queries given"))
	}
	if d.Notifications == nil {
		errs = append(errs, errors.New("no notifications given"))
	}
	return errors.Join(errs...)
}

// Gateway is the HTTP edge. It is safe for concurrent use; it holds no
// resources of its own (its record of recently accepted commands is memory)
// and needs no closing.
type Gateway struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	router *mux.Router
	index  *routeIndex // names each request's route (routeindex.go)
	gov    *governance
	recent *recentCommands
}

// New checks cfg and deps and builds a Gateway. It reports every problem at
// once.
func New(cfg Config, deps Deps) (*Gateway, error) {
	cfg.setDefaults()
	if err := errors.Join(cfg.Validate(), cfg.Rules.Validate(), deps.validate(), checkCommandRoutes()); err != nil {
		return nil, fmt.Errorf("build gateway: %w", err)
	}
	g := &Gateway{cfg: cfg, deps: deps, log: cfg.Logger,
		recent: newRecentCommands(cfg.RecentCommands, cfg.RecentCommandTTL)}
	g.gov = newGovernance(cfg.Rules, cfg.Logger)
	g.deps = g.gov.guard(deps) // governance: read edges behind breakers
	g.router = g.routes()
	g.index = newRouteIndex(g.router)
	return g, nil
}

// Handler returns the gateway's HTTP handler: every route, under the
// governance rules in force, with the headers every response carries.
func (g *Gateway) Handler() http.Handler {
	governed := g.govern(g.router)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w.Header()) // nosniff, no framing, no caching (auth_headers.go)
		governed.ServeHTTP(w, r)
	})
}

// routes builds the router. Each route's handler returns an error, which
// writeError turns into a problem.
func (g *Gateway) routes() *mux.Router {
	r := mux.NewRouter()
	for _, c := range commandRoutes() {
		r.Handle(c.path, g.handle(g.command(c))).Methods(http.MethodPost)
	}
	reads := []struct {
		path string
		h    func(http.ResponseWriter, *http.Request) error
	}{
		{"/v1/commands/{id}", g.getCommand},
		{"/v1/orders/{id}", g.getOrder},
		{"/v1/users/{id}/orders", g.getUserOrders},
		{"/v1/users/{id}/notifications", g.getNotifications},
		{"/v1/reports/sales", g.getSales},
		{"/healthz", g.health},
	}
	for _, q := range reads {
		r.Handle(q.path, g.handle(q.h)).Methods(http.MethodGet, http.MethodHead)
	}
	r.NotFoundHandler = g.handle(func(http.ResponseWriter, *http.Request) error {
		return errRouteNotFound
	})
	r.MethodNotAllowedHandler = g.handle(func(_ http.ResponseWriter, req *http.Request) error {
		return &methodNotAllowedError{method: req.Method, allow: allowedMethods(r, req)}
	})
	return r
}

// handle adapts a handler that returns an error: a non-nil error is written
// as a problem.
func (g *Gateway) handle(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			g.fail(w, r, err) // governance errors, then writeError
		}
	})
}

// allowedMethods lists the methods the router would accept for the
// request's path.
func allowedMethods(router *mux.Router, r *http.Request) []string {
	var allow []string
	for _, m := range []string{
		http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions,
	} {
		probe := r.Clone(r.Context())
		probe.Method = m
		var match mux.RouteMatch
		if router.Match(probe, &match) && match.MatchErr == nil {
			allow = append(allow, m)
		}
	}
	return allow
}

// isCurrencyCode reports whether s has the shape of an ISO 4217 code, as the
// schemas require: three upper-case ASCII letters.
func isCurrencyCode(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range len(s) {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}
