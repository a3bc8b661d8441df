package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
)

// Problem types of governance. Clients branch on them.
const (
	// ProblemRateLimited (429): a rate limit is used up; retry after
	// Retry-After seconds.
	ProblemRateLimited = problemBase + "rate-limited"
	// ProblemOverloaded (503): the gateway serves as many requests as it
	// allows at once; retry after Retry-After seconds.
	ProblemOverloaded = problemBase + "overloaded"
	// ProblemTimeout (504): the request did not finish within its route's
	// timeout.
	ProblemTimeout = problemBase + "timeout"
)

// governance holds the rules in force and the count of requests in flight,
// which outlives a change of rules.
type governance struct {
	log      *slog.Logger
	mu       sync.Mutex // serialises swaps
	live     atomic.Pointer[liveRules]
	inFlight atomic.Int64
}

// liveRules is one set of rules ready to serve. It is never changed once
// in force; its limiters and breakers are safe for concurrent use.
type liveRules struct {
	rules    Rules // with defaults
	limits   []*rateLimit
	breakers map[string]*edgeBreaker
}

// newGovernance puts valid rules r in force.
func newGovernance(r Rules, log *slog.Logger) *governance {
	gv := &governance{log: log}
	gv.swap(r)
	return gv
}

// swap puts valid rules r in force. A limiter or breaker whose rule did not
// change is carried over with its state.
func (gv *governance) swap(r Rules) {
	gv.mu.Lock()
	defer gv.mu.Unlock()
	r = r.withDefaults()
	// The caller keeps its maps and slices: take copies.
	r.RateLimits = slices.Clone(r.RateLimits)
	r.Timeouts.Routes = maps.Clone(r.Timeouts.Routes)
	r.Breakers.Edges = maps.Clone(r.Breakers.Edges)

	next := &liveRules{rules: r, breakers: make(map[string]*edgeBreaker)}
	var old []*rateLimit
	prev := gv.live.Load()
	if prev != nil {
		old = slices.Clone(prev.limits)
	}
	for _, rule := range r.RateLimits {
		i := slices.IndexFunc(old, func(l *rateLimit) bool {
			return l != nil && l.rule == rule && l.maxTracked == r.Clients.MaxTracked
		})
		if i >= 0 {
			next.limits = append(next.limits, old[i])
			old[i] = nil // each is carried over once
			continue
		}
		next.limits = append(next.limits, newRateLimit(rule, r.Clients.MaxTracked))
	}
	for _, edge := range edgeNames() {
		rule := r.breakerFor(edge)
		if prev != nil && prev.breakers[edge].rule == rule {
			next.breakers[edge] = prev.breakers[edge]
			continue
		}
		next.breakers[edge] = newEdgeBreaker(edge, rule)
	}
	gv.live.Store(next)
}

// enter counts a request in, unless max are in flight already.
func (gv *governance) enter(max int) bool {
	if gv.inFlight.Add(1) > int64(max) {
		gv.inFlight.Add(-1)
		return false
	}
	return true
}

func (gv *governance) leave() { gv.inFlight.Add(-1) }

// SetRules validates r and puts it in force for requests that start from
// now on; requests in progress finish under the rules they started with.
// A rate limit or breaker whose rule is unchanged keeps its state (spent
// tokens, an open breaker); a new or changed one starts afresh, with full
// buckets and a closed breaker. When r is not valid, SetRules returns every
// problem (each a *RuleError) and the rules in force stay. It is safe for
// concurrent use.
func (g *Gateway) SetRules(r Rules) error {
	if err := r.Validate(); err != nil {
		return err
	}
	g.gov.swap(r)
	return nil
}

// Rules returns the rules in force, with every default filled in.
func (g *Gateway) Rules() Rules {
	r := g.gov.live.Load().rules
	r.RateLimits = slices.Clone(r.RateLimits)
	r.Timeouts.Routes = maps.Clone(r.Timeouts.Routes)
	r.Breakers.Edges = maps.Clone(r.Breakers.Edges)
	return r
}

// requestDeadline is put in the context of a governed request, so that an
// error at the deadline is answered as a timeout.
type requestDeadline struct {
	route   string
	timeout time.Duration
}

type deadlineKey struct{}

// govern wraps the router with governance, in order: the rate limits (a
// refused request costs nothing more), the bound on requests in flight,
// and the route's timeout. The health check is not governed.
func (g *Gateway) govern(router *mux.Router) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := g.index.key(r)
		if route == healthRoute {
			router.ServeHTTP(w, r)
			return
		}
		lr := g.gov.live.Load()

		var client string
		if len(lr.limits) > 0 { // who the client is matters to rate limits only
			client = clientOf(r, lr.rules.Clients.IDHeader)
		}
		v := lr.admit(route, client, time.Now())
		v.setHeaders(w.Header())
		if !v.ok {
			g.log.DebugContext(r.Context(), "request rate limited",
				slog.String("rule_route", v.rule.Route), slog.String("client", client))
			g.writeProblem(w, r, rateLimitedProblem(v))
			return
		}

		if !g.gov.enter(lr.rules.MaxInFlight) {
			g.writeProblem(w, r, overloadedProblem(lr.rules.MaxInFlight))
			return
		}
		defer g.gov.leave()

		timeout := lr.rules.timeoutFor(route)
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		ctx = context.WithValue(ctx, deadlineKey{}, requestDeadline{route: route, timeout: timeout})
		if h := g.index.handler(r); h != nil { // a route without path variables (routeindex.go)
			h.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		router.ServeHTTP(w, r.WithContext(ctx))
	})
}

// routeKey names the route a request is for, as "METHOD /template" (HEAD
// as GET), or "" when the gateway has no such route.
func routeKey(router *mux.Router, r *http.Request) string {
	var m mux.RouteMatch
	if !router.Match(r, &m) || m.MatchErr != nil || m.Route == nil {
		return ""
	}
	tpl, err := m.Route.GetPathTemplate()
	if err != nil {
		return ""
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	return method + " " + tpl
}

// fail answers the error a route's handler returned. A request whose
// deadline passed is answered 504 and a read edge with an open breaker
// 503; every other error as writeError decides.
func (g *Gateway) fail(w http.ResponseWriter, r *http.Request, err error) {
	var open *edgeOpenError
	if errors.As(err, &open) {
		g.writeProblem(w, r, unavailableProblem(open))
		return
	}
	ctx := r.Context()
	if d, ok := ctx.Value(deadlineKey{}).(requestDeadline); ok && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// A store interrupted at the deadline may say so in its own words;
		// an answer that came in time anyway (not found, …) stands.
		if _, answer := g.problemFor(err); !answer || errors.Is(err, context.DeadlineExceeded) {
			g.log.WarnContext(ctx, "request timed out",
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Duration("timeout", d.timeout), slog.Any("error", err))
			g.writeProblem(w, r, timeoutProblem(r, d))
			return
		}
	}
	g.writeError(w, r, err)
}

// writeProblem answers with p.
func (g *Gateway) writeProblem(w http.ResponseWriter, r *http.Request, p problem) {
	p.Instance = r.URL.Path
	body, err := marshalJSON(p)
	if err != nil {
		g.writeError(w, r, fmt.Errorf("encode %s problem: %w", p.Type, err))
		return
	}
	for k, vs := range p.headers {
		w.Header()[k] = vs
	}
	writeBody(w, p.Status, problemContentType, body)
}

func rateLimitedProblem(v verdict) problem {
	scope := "every route"
	if v.rule.Route != AllRoutes {
		scope = v.rule.Route
	}
	who := "all clients together"
	if v.rule.PerClient {
		who = "each client"
	}
	return problem{
		Type: ProblemRateLimited, Title: "Too many requests", Status: http.StatusTooManyRequests,
		Detail: fmt.Sprintf("The rate limit of %s is used up: %s may send up to %d requests at once, then %s per second. "+
			"Retry after %d s (Retry-After), and spread requests out.",
			scope, who, v.rule.Burst, strconv.FormatFloat(v.rule.Rate, 'f', -1, 64), v.retryAfterSeconds()),
	}
}

func overloadedProblem(max int) problem {
	return problem{
		Type: ProblemOverloaded, Title: "Overloaded", Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("The gateway is serving as many requests as it allows at once (%d). Retry after %d s.",
			max, retryAfterSeconds),
		headers: http.Header{"Retry-After": {strconv.Itoa(retryAfterSeconds)}},
	}
}

func unavailableProblem(e *edgeOpenError) problem {
	secs := max(1, ceilSeconds(e.openFor))
	return problem{
		Type: ProblemUnavailable, Title: "Service unavailable", Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("The %s read model is failing: after repeated errors or timeouts its circuit breaker is open, "+
			"so reads fail at once instead of waiting. Retry after %d s.", e.edge, secs),
		headers: http.Header{"Retry-After": {strconv.Itoa(secs)}},
	}
}

func timeoutProblem(r *http.Request, d requestDeadline) problem {
	detail := fmt.Sprintf("The request did not finish within %s, the timeout of this route. Retry later.", d.timeout)
	if r.Method == http.MethodPost {
		detail = fmt.Sprintf("The request did not finish within %s, the timeout of this route; the command may have been sent. "+
			"Retry with the same Idempotency-Key to learn its outcome without sending it twice.", d.timeout)
	}
	return problem{Type: ProblemTimeout, Title: "Request timed out", Status: http.StatusGatewayTimeout, Detail: detail}
}

// Route returns the path template of the route r is for ("/v1/orders/{id}"),
// or "" when no route matches. Telemetry labels metrics and spans with it.
func (g *Gateway) Route(r *http.Request) string {
	_, tpl, _ := strings.Cut(g.index.key(r), " ")
	return tpl
}
