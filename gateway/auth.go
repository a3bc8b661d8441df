package gateway

import (
	"context"
	"net/http"
	"slices"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/gorilla/mux"

	"github.com/millrace/millrace/platform/auth"
)

// Authorization at the gateway. The gateway does not verify credentials
// itself: an auth.Guard in front of it does (cmd/millrace puts one in front
// of every route of the process), asking Requirement what each request
// needs. The gateway's part is to know its routes' scopes and to record
// who sent each command.
//
// Scopes of the gateway's routes:
//
//   - a command route (POST) needs commands:write:<wire name> of its
//     command, e.g. commands:write:orders.pay-order.v1, which
//     commands:write grants;
//   - a read (GET, HEAD) needs queries:read;
//   - the health check is public;
//   - a path or method the gateway does not serve needs valid credentials,
//     so that an anonymous client learns nothing of which paths exist.

// The CloudEvents Auth Context extension attributes the gateway writes on
// every command it publishes, as Kafka headers (and Watermill metadata
// keys): how the sender was authenticated and who it is.
const (
	// AuthTypeAttribute is authtype: "app_user" for a JWT, "api_key" for
	// an API key, "unauthenticated" while authentication is off.
	AuthTypeAttribute = "ce_authtype"
	// AuthIDAttribute is authid: the subject of the token or key.
	AuthIDAttribute = "ce_authid"
)

// Requirement returns what r needs to reach the gateway, by the route it
// is for. It is the gateway's policy for an auth.Guard and is safe for
// concurrent use.
func (g *Gateway) Requirement(r *http.Request) auth.Requirement {
	return g.index.requirement(g.index.key(r))
}

// requirementOf returns the requirement of a route key ("METHOD
// /template", or "" for no route).
func requirementOf(key string) auth.Requirement {
	method, tpl, _ := strings.Cut(key, " ")
	switch {
	case key == "":
		return auth.Authenticated()
	case key == healthRoute:
		return auth.Public()
	case method == http.MethodPost:
		for _, c := range commandRoutes() {
			if c.path == tpl {
				return auth.Scope(CommandScope(c.name))
			}
		}
		return auth.Authenticated()
	default:
		return auth.Scope(auth.ScopeQueriesRead)
	}
}

// CommandScope is the scope that sends commands of one wire name:
// commands:write:<name>. commands:write grants every one.
func CommandScope(name string) string { return auth.ScopeCommandsWrite + ":" + name }

// RouteRequirement is one route of the gateway and what it needs.
type RouteRequirement struct {
	// Method is the HTTP method; a GET route serves HEAD too.
	Method string
	// Path is the route's template, e.g. /v1/orders/{id}/pay.
	Path        string
	Requirement auth.Requirement
}

// RouteRequirements lists every route of the gateway with what it needs,
// in the order the routes are declared. It walks a router built by the
// gateway's own route table, so it cannot drift from what the gateway
// serves; docs/security.md is generated from it.
func RouteRequirements() []RouteRequirement {
	var out []RouteRequirement
	eachRoute((&Gateway{}).routes(), func(_ *mux.Route, m, tpl string, methods []string) {
		if m == http.MethodHead && slices.Contains(methods, http.MethodGet) {
			return // listed with its GET
		}
		out = append(out, RouteRequirement{Method: m, Path: tpl, Requirement: requirementOf(m + " " + tpl)})
	})
	return out
}

// setAuthContext records the sender of a command on its message: the
// CloudEvents Auth Context attributes of the principal an auth.Guard put
// in ctx. A request that passed no guard records nothing.
func setAuthContext(ctx context.Context, msg *message.Message) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return
	}
	msg.Metadata.Set(AuthTypeAttribute, string(p.Method))
	msg.Metadata.Set(AuthIDAttribute, p.Subject)
}

// authenticatedSubject returns the subject an auth.Guard authenticated r
// as. Per-client rate limits count by it (governance_ratelimit.go), so
// that a caller cannot escape its limit by changing address, and callers
// behind one proxy do not share one. Anonymous requests have none.
func authenticatedSubject(r *http.Request) (string, bool) {
	p, ok := auth.FromContext(r.Context())
	if !ok || p.Method == auth.MethodNone || p.Subject == "" {
		return "", false
	}
	return p.Subject, true
}
