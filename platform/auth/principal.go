package auth

import (
	"context"
	"slices"
	"strings"
)

// The scopes millrace's routes require. A scope may be refined with more
// colon-separated parts (commands:write:orders.pay-order.v1); the shorter
// scope grants every refinement of it.
const (
	// ScopeCommandsWrite sends commands; commands:write:<wire name> sends
	// one type of command only.
	ScopeCommandsWrite = "commands:write"
	// ScopeQueriesRead reads the projections.
	ScopeQueriesRead = "queries:read"
	// ScopeAdmin runs the admin APIs: poison queue, projections and
	// replay, configuration, keys.
	ScopeAdmin = "admin"
	// ScopeMetricsRead reads /metrics when it is not public.
	ScopeMetricsRead = "metrics:read"
	// ScopeHealthRead reads /healthz when it is not public.
	ScopeHealthRead = "health:read"
)

// Method says how a principal was authenticated. Its values are those of
// the authtype attribute of the CloudEvents Auth Context extension.
type Method string

// Methods of authentication.
const (
	// MethodJWT: a JWT bearer token from an identity provider
	// (authtype app_user).
	MethodJWT Method = "app_user"
	// MethodAPIKey: an API key (authtype api_key).
	MethodAPIKey Method = "api_key"
	// MethodNone: authentication is off; the request is anonymous
	// (authtype unauthenticated).
	MethodNone Method = "unauthenticated"
)

// AnonymousSubject is the subject of every request while authentication is
// off.
const AnonymousSubject = "anonymous"

// Principal is who a request comes from.
type Principal struct {
	// Subject identifies the caller: a JWT's sub claim, an API key's
	// subject, or AnonymousSubject.
	Subject string
	// Scopes are what the caller may do.
	Scopes []string
	// Method is how the caller was authenticated.
	Method Method
	// CredentialID names the credential used, for audit: an API key's id,
	// a JWT's jti when it has one, or empty.
	CredentialID string
}

// Anonymous is the principal of a request while authentication is off: it
// may do everything.
func Anonymous() Principal {
	return Principal{Subject: AnonymousSubject, Method: MethodNone}
}

// Has reports whether p may act with scope: a scope p holds equals it or
// is a prefix of it at a colon. The anonymous principal of an open
// gateway has every scope.
func (p Principal) Has(scope string) bool {
	if p.Method == MethodNone {
		return true
	}
	return slices.ContainsFunc(p.Scopes, func(granted string) bool { return Grants(granted, scope) })
}

// Grants reports whether the granted scope covers the required one: they
// are equal, or required refines granted ("commands:write" grants
// "commands:write:orders.pay-order.v1", not "commands:writer").
func Grants(granted, required string) bool {
	if granted == "" {
		return false
	}
	return granted == required || strings.HasPrefix(required, granted+":")
}

// Requirement is what a request needs to be let through.
type Requirement struct {
	// Public lets every request through, with or without credentials.
	Public bool
	// Scope, for a request that is not public, is the scope it needs;
	// empty asks only for valid credentials.
	Scope string
}

// Public is the requirement of a route anyone may call.
func Public() Requirement { return Requirement{Public: true} }

// Authenticated is the requirement of a route any authenticated caller
// may call.
func Authenticated() Requirement { return Requirement{} }

// Scope is the requirement of a route that needs scope.
func Scope(scope string) Requirement { return Requirement{Scope: scope} }

// String describes r for tables and messages: "public",
// "authenticated", or the scope.
func (r Requirement) String() string {
	switch {
	case r.Public:
		return "public"
	case r.Scope == "":
		return "authenticated"
	default:
		return r.Scope
	}
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal a Guard put in ctx. ok is false for a
// request that passed no Guard, or a public one.
func FromContext(ctx context.Context) (p Principal, ok bool) {
	p, ok = ctx.Value(principalKey{}).(Principal)
	return p, ok
}
