package gateway

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/mux"

	"github.com/millrace/millrace/platform/auth"
)

// routeIndex names the route of a request ("METHOD /template", as routeKey
// does) and what the route requires, for the three parts that ask on every
// request: governance, the auth guard's policy (Requirement) and telemetry
// (Route). Matching a request against the router allocates and runs its
// regular expressions; the routes without path variables (POST /v1/orders,
// POST /v1/users, the sales report, the health check) are answered from a
// table instead, filled at start by asking the router itself, so that the
// table cannot disagree with it. It is read-only once built.
//
// The same table serves those routes' requests: handler returns the
// handler the router would call, which governance calls directly. The
// router would first match the request again and put the route and its
// (no) variables in the request's context, two copies of the request; a
// handler of a route without variables has no use for either.
type routeIndex struct {
	router *mux.Router
	// static: path → method → route, for the routes without variables.
	static map[string]map[string]staticRoute
	// requirements: route key → what it requires (requirementOf).
	requirements map[string]auth.Requirement
}

// staticRoute is a route without path variables: its key, as routeKey
// names it, and its handler.
type staticRoute struct {
	key     string
	handler http.Handler
}

func newRouteIndex(router *mux.Router) *routeIndex {
	ix := &routeIndex{
		router:       router,
		static:       make(map[string]map[string]staticRoute),
		requirements: map[string]auth.Requirement{"": requirementOf("")},
	}
	eachRoute(router, func(route *mux.Route, m, tpl string, _ []string) {
		if strings.ContainsAny(tpl, "{}") {
			key := strings.Replace(m, http.MethodHead, http.MethodGet, 1) + " " + tpl
			ix.requirements[key] = requirementOf(key)
			return
		}
		// What the router answers for exactly this method and path.
		probe := &http.Request{Method: m, URL: &url.URL{Path: tpl}, Header: http.Header{}}
		var match mux.RouteMatch
		if !router.Match(probe, &match) || match.MatchErr != nil || match.Route != route || match.Handler == nil {
			return // another route answers, or none: the router decides
		}
		key := routeKey(router, probe)
		if ix.static[tpl] == nil {
			ix.static[tpl] = make(map[string]staticRoute)
		}
		ix.static[tpl][m] = staticRoute{key: key, handler: match.Handler}
		ix.requirements[key] = requirementOf(key)
	})
	return ix
}

// eachRoute calls fn with every method of every route of router, in the
// order the routes are declared, with the route's path template and all
// its methods. Routes without a template or methods are skipped: the
// gateway declares none, and nothing could name them.
func eachRoute(router *mux.Router, fn func(route *mux.Route, method, tpl string, methods []string)) {
	_ = router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return nil
		}
		methods, err := route.GetMethods()
		if err != nil {
			return nil
		}
		for _, m := range methods {
			fn(route, m, tpl, methods)
		}
		return nil
	})
}

// key names the route r is for, as routeKey does.
func (ix *routeIndex) key(r *http.Request) string {
	if sr, ok := ix.static[r.URL.Path][r.Method]; ok {
		return sr.key
	}
	return routeKey(ix.router, r)
}

// handler returns the handler of r's route when it has no path variables,
// else nil: the router serves the request.
func (ix *routeIndex) handler(r *http.Request) http.Handler {
	return ix.static[r.URL.Path][r.Method].handler
}

// requirement returns what a request for the route key needs.
func (ix *routeIndex) requirement(key string) auth.Requirement {
	if req, ok := ix.requirements[key]; ok {
		return req
	}
	return requirementOf(key)
}
