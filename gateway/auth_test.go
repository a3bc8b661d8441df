package gateway_test

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/platform/auth"
	"github.com/millrace/millrace/platform/auth/secret"
	"github.com/millrace/millrace/platform/cloudevents"
)

const (
	jwtIssuer   = "https://id.example.com/"
	jwtAudience = "millrace"
	jwtSecret   = "the-shared-secret-of-the-gateway-tests!!"
)

// token signs claims for subject with scope (space-separated) with key;
// change adjusts the claims.
func token(t *testing.T, subject, scope, key string, change ...func(jwt.MapClaims)) string {
	t.Helper()
	c := jwt.MapClaims{"iss": jwtIssuer, "aud": jwtAudience, "sub": subject, "scope": scope, "exp": time.Now().Add(time.Hour).Unix()}
	for _, f := range change {
		f(c)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// guardedEnv is an env whose handler is its gateway behind an auth.Guard
// that uses the gateway's own policy. A nil authenticator leaves
// authentication off.
func guardedEnv(t *testing.T, a *auth.Authenticator, change ...func(*gateway.Config)) (*env, *gateway.Gateway) {
	t.Helper()
	e := newEnv(t, change...)
	cfg := gateway.Config{MaxBodyBytes: 1024, MaxWait: 5 * time.Second}
	for _, c := range change {
		c(&cfg)
	}
	g, err := gateway.New(cfg, e.deps())
	if err != nil {
		t.Fatal(err)
	}
	guard, err := auth.NewGuard(auth.GuardConfig{Authenticator: a, Policy: g.Requirement})
	if err != nil {
		t.Fatal(err)
	}
	// As cmd/millrace serves it: security headers outside the guard.
	e.handler, err = gateway.Secure(guard.Handler(g.Handler()), gateway.CORS{})
	if err != nil {
		t.Fatal(err)
	}
	return e, g
}

func newAuthn(t *testing.T, keys ...auth.APIKey) *auth.Authenticator {
	t.Helper()
	a, err := auth.NewAuthenticator(auth.Config{
		JWT:     &auth.JWTConfig{Issuer: jwtIssuer, Audience: jwtAudience, Secret: secret.String(jwtSecret)},
		APIKeys: keys,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// concrete turns a route template into a path.
func concrete(tpl string) string {
	return strings.NewReplacer("{id}", "0198d6a4-6f6e-7c3a-9c1e-2f1b8c9d0a11").Replace(tpl)
}

// TestEveryRouteAuthorization sends every route of the gateway without
// credentials, with an expired token, a token for another audience, a
// token with a wrong signature, a valid token lacking the route's scope,
// and a token with the scope.
func TestEveryRouteAuthorization(t *testing.T) {
	e, _ := guardedEnv(t, newAuthn(t))
	routes := gateway.RouteRequirements()
	if len(routes) < 10 {
		t.Fatalf("only %d routes listed", len(routes))
	}
	expired := func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }
	otherAudience := func(c jwt.MapClaims) { c["aud"] = "billing" }
	for _, rt := range routes {
		req := rt.Requirement
		scope := req.Scope
		cases := []struct {
			name   string
			header []string
			want   int // 0: neither 401 nor 403
		}{
			{"no credentials", nil, http.StatusUnauthorized},
			{"expired token", []string{"Authorization", "Bearer " + token(t, "alice", scope, jwtSecret, expired)}, http.StatusUnauthorized},
			{"wrong audience", []string{"Authorization", "Bearer " + token(t, "alice", scope, jwtSecret, otherAudience)}, http.StatusUnauthorized},
			{"wrong signature", []string{"Authorization", "Bearer " + token(t, "alice", scope, "a-different-secret-that-is-long-enough!!")}, http.StatusUnauthorized},
			{"lacking the scope", []string{"Authorization", "Bearer " + token(t, "alice", "something:else", jwtSecret)}, http.StatusForbidden},
			{"with the scope", []string{"Authorization", "Bearer " + token(t, "alice", scope, jwtSecret)}, 0},
		}
		for _, tc := range cases {
			t.Run(rt.Method+" "+rt.Path+"/"+tc.name, func(t *testing.T) {
				want := tc.want
				if req.Public {
					want = 0 // credentials or not, a public route is served
				}
				body := ""
				if rt.Method == http.MethodPost {
					body = `{}`
				}
				rec := e.do(rt.Method, concrete(rt.Path), "application/json", body, tc.header...)
				switch {
				case want == 0 && (rec.Code == http.StatusUnauthorized || rec.Code == http.StatusForbidden):
					t.Fatalf("status %d, want the route to serve it: %s", rec.Code, rec.Body)
				case want != 0 && rec.Code != want:
					t.Fatalf("status %d, want %d: %s", rec.Code, want, rec.Body)
				case want == http.StatusForbidden:
					var p struct {
						RequiredScope string `json:"required_scope"`
					}
					_ = json.Unmarshal(rec.Body.Bytes(), &p)
					if p.RequiredScope != scope {
						t.Fatalf("required_scope %q, want %q", p.RequiredScope, scope)
					}
				}
			})
		}
	}
	// Whatever got through was sent by the authenticated subject.
	for _, m := range e.publishedMessages() {
		if got := m.Metadata.Get(gateway.AuthIDAttribute); got != "alice" {
			t.Errorf("command %s published with %s %q", m.UUID, gateway.AuthIDAttribute, got)
		}
	}
}

func TestRouteRequirements(t *testing.T) {
	got := map[string]auth.Requirement{}
	for _, r := range gateway.RouteRequirements() {
		got[r.Method+" "+r.Path] = r.Requirement
	}
	want := map[string]auth.Requirement{
		"POST /v1/users":              auth.Scope("commands:write:" + events.RegisterUser{}.Name()),
		"POST /v1/orders":             auth.Scope("commands:write:" + events.PlaceOrder{}.Name()),
		"POST /v1/orders/{id}/pay":    auth.Scope("commands:write:" + events.PayOrder{}.Name()),
		"POST /v1/orders/{id}/ship":   auth.Scope("commands:write:" + events.ShipOrder{}.Name()),
		"GET /v1/orders/{id}":         auth.Scope(auth.ScopeQueriesRead),
		"GET /v1/reports/sales":       auth.Scope(auth.ScopeQueriesRead),
		"GET /healthz":                auth.Public(),
		"POST /v1/orders/{id}/cancel": auth.Scope("commands:write:" + events.CancelOrder{}.Name()),
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s needs %v, want %v", k, got[k], w)
		}
	}
	for k, r := range got {
		if strings.HasPrefix(k, "HEAD ") {
			t.Errorf("%s listed apart from its GET", k)
		}
		if !r.Public && r.Scope == "" {
			t.Errorf("%s needs no scope", k)
		}
	}
}

func TestCommandRecordsSender(t *testing.T) {
	key, rec, err := auth.NewAPIKey("ci-deploy", []string{auth.ScopeCommandsWrite}, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		authn    *auth.Authenticator
		header   []string
		wantType string
		wantID   string
	}{
		{"api key", newAuthn(t, rec), []string{"X-API-Key", key.Reveal()}, string(auth.MethodAPIKey), "ci-deploy"},
		{"jwt", newAuthn(t), []string{"Authorization", "Bearer " + token(t, "alice@example.com", "commands:write", jwtSecret)}, string(auth.MethodJWT), "alice@example.com"},
		{"authentication off", nil, nil, string(auth.MethodNone), auth.AnonymousSubject},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := guardedEnv(t, tc.authn)
			res := e.post("/v1/users", `{"email":"a@example.com","name":"A"}`, tc.header...)
			if res.Code != http.StatusAccepted {
				t.Fatalf("status %d: %s", res.Code, res.Body)
			}
			msgs := e.publishedMessages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages published, want 1", len(msgs))
			}
			md := msgs[0].Metadata
			if md.Get(gateway.AuthTypeAttribute) != tc.wantType || md.Get(gateway.AuthIDAttribute) != tc.wantID {
				t.Fatalf("%s=%q %s=%q, want %q and %q", gateway.AuthTypeAttribute, md.Get(gateway.AuthTypeAttribute),
					gateway.AuthIDAttribute, md.Get(gateway.AuthIDAttribute), tc.wantType, tc.wantID)
			}
			if md.Get(cloudevents.Subject) == tc.wantID {
				t.Fatal("the sender replaced the aggregate id in ce_subject")
			}
		})
	}
}

func TestPerCommandScope(t *testing.T) {
	e, _ := guardedEnv(t, newAuthn(t))
	payOnly := "Bearer " + token(t, "payments", gateway.CommandScope(events.PayOrder{}.Name()), jwtSecret)
	if res := e.post("/v1/orders/"+concrete("{id}")+"/pay", `{}`, "Authorization", payOnly); res.Code == http.StatusForbidden || res.Code == http.StatusUnauthorized {
		t.Fatalf("pay with the pay scope: %d %s", res.Code, res.Body)
	}
	res := e.post("/v1/orders", `{"user_id":"u","lines":[]}`, "Authorization", payOnly)
	p := assertProblem(t, res, http.StatusForbidden, auth.ProblemForbidden)
	if !strings.Contains(p.Detail, gateway.CommandScope(events.PlaceOrder{}.Name())) {
		t.Fatalf("detail %q does not name the scope", p.Detail)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range e.published {
		if m.Metadata.Get(cloudevents.Type) == (events.PlaceOrder{}).Name() {
			t.Fatal("a refused command was published")
		}
	}
}

func TestRateLimitPerSubject(t *testing.T) {
	limit := func(c *gateway.Config) {
		c.Rules.RateLimits = []gateway.RateLimit{{Route: "GET /v1/orders/{id}", PerClient: true, Rate: 0.001, Burst: 1}}
	}
	e, _ := guardedEnv(t, newAuthn(t), limit)
	get := func(subject string) int {
		return e.do(http.MethodGet, concrete("/v1/orders/{id}"), "", "",
			"Authorization", "Bearer "+token(t, subject, auth.ScopeQueriesRead, jwtSecret)).Code
	}
	// One address (httptest's), two subjects: each has its own bucket.
	if got := get("alice"); got == http.StatusTooManyRequests {
		t.Fatalf("alice's first request: %d", got)
	}
	if got := get("bob"); got == http.StatusTooManyRequests {
		t.Fatalf("bob's first request was limited by alice's: %d", got)
	}
	if got := get("alice"); got != http.StatusTooManyRequests {
		t.Fatalf("alice's second request: %d, want 429", got)
	}
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/v1/orders/x", "/healthz", "/nope"} {
		rec := e.do(http.MethodGet, path, "", "")
		for h, want := range map[string]string{
			"X-Content-Type-Options":  "nosniff",
			"X-Frame-Options":         "DENY",
			"Content-Security-Policy": "frame-ancestors 'none'",
			"Referrer-Policy":         "no-referrer",
			"Cache-Control":           "no-store",
		} {
			if got := rec.Header().Get(h); got != want {
				t.Errorf("%s: %s = %q, want %q", path, h, got, want)
			}
		}
		if rec.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s: CORS header without CORS configured", path)
		}
	}
}

func TestCORS(t *testing.T) {
	inner := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	h, err := gateway.Secure(inner, gateway.CORS{AllowedOrigins: []string{"https://console.example.com"}, MaxAge: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, method, origin string
		preflight            bool
		status               int
		allow                string
	}{
		{"preflight from an allowed origin", http.MethodOptions, "https://console.example.com", true, http.StatusNoContent, "https://console.example.com"},
		{"preflight from another origin", http.MethodOptions, "https://evil.example", true, http.StatusUnauthorized, ""},
		{"request from an allowed origin", http.MethodGet, "https://console.example.com", false, http.StatusUnauthorized, "https://console.example.com"},
		{"request from another origin", http.MethodGet, "https://evil.example", false, http.StatusUnauthorized, ""},
		{"no origin", http.MethodGet, "", false, http.StatusUnauthorized, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/v1/orders", nil)
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.preflight {
				r.Header.Set("Access-Control-Request-Method", http.MethodPost)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tc.status || rec.Header().Get("Access-Control-Allow-Origin") != tc.allow {
				t.Fatalf("status %d, allow-origin %q; want %d, %q", rec.Code, rec.Header().Get("Access-Control-Allow-Origin"), tc.status, tc.allow)
			}
			if tc.status == http.StatusNoContent {
				if !strings.Contains(rec.Header().Get("Access-Control-Allow-Headers"), "Authorization") || rec.Header().Get("Access-Control-Max-Age") != "60" {
					t.Fatalf("preflight headers %v", rec.Header())
				}
			}
			if rec.Header().Get("X-Frame-Options") != "DENY" || !slices.Contains(rec.Header().Values("Vary"), "Origin") {
				t.Fatalf("headers %v: want the security headers and Vary: Origin", rec.Header())
			}
		})
	}
	for _, bad := range [][]string{{"*"}, {"https://x.example/path"}, {"console.example.com"}} {
		if _, err := gateway.Secure(inner, gateway.CORS{AllowedOrigins: bad}); err == nil {
			t.Errorf("origins %q accepted", bad)
		}
	}
}

func TestJSONDepth(t *testing.T) {
	e := newEnv(t)
	nest := func(n int) string {
		return `{"email":"a@example.com","name":"A","x":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}`
	}
	rec := e.post("/v1/users", nest(gateway.MaxJSONDepth+1))
	p := assertProblem(t, rec, http.StatusBadRequest, gateway.ProblemTooDeep)
	if !strings.Contains(p.Detail, "32 levels") {
		t.Fatalf("detail %q does not name the limit", p.Detail)
	}
	var body struct {
		MaxDepth int `json:"max_depth"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if body.MaxDepth != gateway.MaxJSONDepth {
		t.Fatalf("max_depth %d", body.MaxDepth)
	}
	// At the limit the document is parsed, and the schema refuses the
	// unknown field.
	assertProblem(t, e.post("/v1/users", nest(gateway.MaxJSONDepth)), http.StatusUnprocessableEntity, gateway.ProblemSchemaViolation)
	e.assertNothingPublished(t)
	// Brackets inside strings do not count.
	deepString := `{"email":"a@example.com","name":"` + strings.Repeat("[", 100) + `"}`
	if res := e.post("/v1/users", deepString); res.Code != http.StatusAccepted {
		t.Fatalf("brackets in a string counted as nesting: %d %s", res.Code, res.Body)
	}
}
