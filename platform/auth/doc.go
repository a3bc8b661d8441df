// Package auth decides who a request comes from and whether it may do what
// it asks: edge authentication by JWT bearer token or API key, and
// authorization by scope.
//
// An [Authenticator] verifies the credentials of a request:
//
//   - a JWT bearer token (`Authorization: Bearer <jwt>`), signed with HS256
//     and a shared secret, or with RS256/RS384/RS512, PS256, ES256/ES384/
//     ES512 or EdDSA and a key from a [KeySet] (package jwks reads JSON Web
//     Key Sets from a file or URL). Its issuer and audience must be the
//     configured ones, it must carry sub and exp, and exp and nbf are checked
//     with a small clock skew (Leeway). Its scopes come from the scope claim
//     (space-separated) or scp (a list);
//   - an API key (`Authorization: Bearer mrk_…` or `X-API-Key: mrk_…`),
//     made by [NewAPIKey] and stored only as a SHA-256 hash ([APIKey]).
//
// The result is a [Principal]: a subject and its scopes. A [Guard] puts the
// authenticator in front of an http.Handler: it asks a policy which
// [Requirement] a request has (public, any authenticated subject, or a
// scope), answers 401 with WWW-Authenticate and a problem+json body that
// says what was missing or wrong, or 403 for a missing scope, puts the
// principal in the request context ([FromContext]) and reports requests
// that needed the admin scope to an audit function.
//
// Scopes are colon-separated and hierarchical: a granted scope covers every
// scope below it, so commands:write covers commands:write:orders.pay-order.v1.
//
// The package knows no route of millrace: policies come from the caller
// (the gateway knows its routes, cmd/millrace its admin mounts). It does no
// I/O of its own beyond what a KeySet does.
package auth
