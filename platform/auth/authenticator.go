package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// APIKeyHeader is the header an API key may come in, for clients that
// cannot set Authorization.
const APIKeyHeader = "X-API-Key"

// Config is what an Authenticator accepts.
type Config struct {
	// JWT, when set, accepts bearer tokens.
	JWT *JWTConfig
	// APIKeys are the keys accepted (unless revoked).
	APIKeys []APIKey
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Validate reports every problem of c at once, each placed at its key
// (ConfigError).
func (c Config) Validate() error {
	var errs []error
	if c.JWT != nil {
		errs = append(errs, within(c.JWT.Validate(), "jwt"))
	}
	seen := make(map[string]int, len(c.APIKeys))
	for i, k := range c.APIKeys {
		idx := strconv.Itoa(i)
		errs = append(errs, within(k.Validate(), "api_keys", idx))
		if j, dup := seen[k.ID]; dup && k.ID != "" {
			errs = append(errs, configError(fmt.Sprintf("the id %s is used by api_keys[%d] too: ids must be unique", k.ID, j), "api_keys", idx, "id"))
		}
		seen[k.ID] = i
	}
	return errors.Join(errs...)
}

// Authenticator verifies the credentials of requests. It is safe for
// concurrent use; Update changes what it accepts while it serves.
type Authenticator struct {
	now   func() time.Time
	state atomic.Pointer[authState]
}

// authState is one configuration in force; it is never changed.
type authState struct {
	jwt  *jwtVerifier // nil: no tokens accepted
	keys map[string]APIKey
}

// NewAuthenticator checks cfg and returns an authenticator that accepts
// what it says.
func NewAuthenticator(cfg Config) (*Authenticator, error) {
	a := &Authenticator{now: cfg.Now}
	if a.now == nil {
		a.now = time.Now
	}
	if err := a.Update(cfg); err != nil {
		return nil, err
	}
	return a, nil
}

// Update validates cfg and puts it in force for requests authenticated
// from now on: a key removed or revoked is refused at once. An invalid cfg
// is refused with every problem, and the configuration in force stays.
// cfg.Now is ignored: the clock is the one NewAuthenticator was given.
func (a *Authenticator) Update(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	st := &authState{keys: make(map[string]APIKey, len(cfg.APIKeys))}
	if cfg.JWT != nil {
		st.jwt = newJWTVerifier(*cfg.JWT, a.now)
	}
	for _, k := range cfg.APIKeys {
		k.Scopes = append([]string(nil), k.Scopes...)
		st.keys[k.ID] = k
	}
	a.state.Store(st)
	return nil
}

// Describe says in a few words what a accepts, for logs and banners.
func (a *Authenticator) Describe() string {
	st := a.state.Load()
	var parts []string
	if st.jwt != nil {
		parts = append(parts, fmt.Sprintf("JWT (%s) from %q for %q", strings.Join(st.jwt.methods, ", "), st.jwt.cfg.Issuer, st.jwt.cfg.Audience))
	}
	active := 0
	for _, k := range st.keys {
		if !k.Revoked(a.now()) {
			active++
		}
	}
	parts = append(parts, fmt.Sprintf("%d API keys (%d revoked)", active, len(st.keys)-active))
	return strings.Join(parts, ", ")
}

// Authenticate verifies the credentials of r: a bearer token or API key
// in Authorization, or an API key in X-API-Key. The error is an *Error
// to answer the client with.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	cred, err := credentialOf(r)
	if err != nil {
		return Principal{}, err
	}
	st := a.state.Load()
	if strings.HasPrefix(cred, APIKeyPrefix) {
		return a.apiKey(st, cred)
	}
	if st.jwt == nil {
		return Principal{}, unauthenticated(codeInvalidToken,
			"This gateway accepts API keys (%s…), not bearer tokens: send an API key, or ask the operator to configure JWT.", APIKeyPrefix)
	}
	return st.jwt.verify(r.Context(), cred)
}

// credentialOf finds the one credential of r.
func credentialOf(r *http.Request) (string, error) {
	authz := r.Header.Values("Authorization")
	keys := r.Header.Values(APIKeyHeader)
	switch {
	case len(authz)+len(keys) == 0:
		return "", &Error{Status: http.StatusUnauthorized,
			Detail: "This route needs credentials: send Authorization: Bearer <token or API key>, or the API key in " + APIKeyHeader + "."}
	case len(authz)+len(keys) > 1:
		return "", unauthenticated(codeInvalidRequest,
			"The request carries more than one credential (Authorization and %s headers): send exactly one.", APIKeyHeader)
	case len(keys) == 1:
		return checkLength(strings.TrimSpace(keys[0]))
	}
	scheme, cred, _ := strings.Cut(strings.TrimSpace(authz[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		if !isSchemeName(scheme) {
			// Not a scheme: likely a credential sent without one. It is
			// not echoed (the answer may be logged).
			return "", unauthenticated(codeInvalidRequest,
				"The Authorization header does not start with a scheme; send Authorization: Bearer <token or API key>.")
		}
		return "", unauthenticated(codeInvalidRequest,
			"The Authorization header uses the %q scheme; this gateway takes Authorization: Bearer <token or API key>.", scheme)
	}
	return checkLength(strings.TrimSpace(cred))
}

// isSchemeName reports whether s looks like an authentication scheme
// (Basic, Digest, Negotiate …): a short run of letters.
func isSchemeName(s string) bool {
	if s == "" || len(s) > 12 {
		return false
	}
	for i := range len(s) {
		if c := s[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

func checkLength(cred string) (string, error) {
	switch {
	case cred == "":
		return "", unauthenticated(codeInvalidRequest, "The credential is empty: send Authorization: Bearer <token or API key>.")
	case len(cred) > maxTokenLen:
		return "", unauthenticated(codeInvalidRequest, "The credential is %d bytes long; the longest accepted is %d.", len(cred), maxTokenLen)
	}
	return cred, nil
}

// apiKey checks an API key. An unknown id and a wrong secret get the same
// answer, after the same work: a client learns nothing of which part was
// right. Only the whole, right key learns that it was revoked.
func (a *Authenticator) apiKey(st *authState, key string) (Principal, error) {
	invalid := unauthenticated(codeInvalidToken,
		"The API key is not valid. Check that it was copied whole; a lost key cannot be recovered, make a new one with `millrace keys create`.")
	id, err := ParseAPIKey(key)
	if err != nil {
		return Principal{}, invalid
	}
	rec, known := st.keys[id]
	stored := rec.Hash
	if !known {
		stored = HashAPIKey("") // compare anyway, so both paths take the same time
	}
	if !matchesHash(key, stored) || !known {
		return Principal{}, invalid
	}
	if rec.Revoked(a.now()) {
		return Principal{}, unauthenticated(codeInvalidToken,
			"This API key was revoked at %s. Use another key, or make a new one with `millrace keys create`.", rec.RevokedAt.UTC().Format(time.RFC3339))
	}
	return Principal{Subject: rec.Subject, Scopes: append([]string(nil), rec.Scopes...), Method: MethodAPIKey, CredentialID: rec.ID}, nil
}
