package auth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/platform/auth"
)

// guarded is a handler behind a Guard with a small policy: /public is
// public, /admin/ needs admin, /orders needs commands:write:orders.pay.v1,
// everything else queries:read. The handler answers with the principal's
// subject.
type guarded struct {
	handler http.Handler
	mu      sync.Mutex
	audits  []auth.AuditEntry
	reg     *prometheus.Registry
}

// newGuardedB is the guarded handler of a benchmark.
func newGuardedB(b *testing.B, a *auth.Authenticator) http.Handler {
	return newGuarded(b, a).handler
}

func newGuarded(t testing.TB, a *auth.Authenticator) *guarded {
	t.Helper()
	g := &guarded{reg: prometheus.NewRegistry()}
	guard, err := auth.NewGuard(auth.GuardConfig{
		Authenticator: a,
		Policy: func(r *http.Request) auth.Requirement {
			switch {
			case r.URL.Path == "/public":
				return auth.Public()
			case strings.HasPrefix(r.URL.Path, "/admin/"):
				return auth.Scope(auth.ScopeAdmin)
			case r.URL.Path == "/orders":
				return auth.Scope("commands:write:orders.pay.v1")
			}
			return auth.Scope(auth.ScopeQueriesRead)
		},
		Audit: func(_ context.Context, e auth.AuditEntry) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.audits = append(g.audits, e)
		},
		Registerer: g.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	g.handler = guard.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := auth.FromContext(r.Context())
		if !ok {
			_, _ = w.Write([]byte("nobody"))
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(p.Subject))
	}))
	return g
}

func (g *guarded) do(path string, headers ...string) *httptest.ResponseRecorder {
	r := request(headers...)
	r.URL.Path = path
	rec := httptest.NewRecorder()
	g.handler.ServeHTTP(rec, r)
	return rec
}

func TestGuard(t *testing.T) {
	opsKey, ops := newKey(t, "ops", auth.ScopeAdmin)
	payKey, pay := newKey(t, "payments", "commands:write:orders.pay.v1")
	g := newGuarded(t, newAuthenticator(t, hsConfig(ops, pay)))
	writer := hs256(t, claims("writer", "commands:write"), hsSecret)
	reader := hs256(t, claims("reader", "queries:read"), hsSecret)

	cases := []struct {
		name      string
		path      string
		headers   []string
		status    int
		body      string // the subject the handler saw, for admitted requests
		challenge string // part of WWW-Authenticate, for refusals
		scope     string // required_scope of a 403
	}{
		{"public without credentials", "/public", nil, 200, "nobody", "", ""},
		{"public ignores bad credentials", "/public", bearer("garbage"), 200, "nobody", "", ""},
		{"no credentials", "/orders", nil, 401, "", `Bearer realm="millrace"`, ""},
		{"bad token", "/orders", bearer("a.b.c"), 401, "", `error="invalid_token"`, ""},
		{"key with the exact scope", "/orders", bearer(payKey), 202, "payments", "", ""},
		{"token with the parent scope", "/orders", bearer(writer), 202, "writer", "", ""},
		{"token without the scope", "/orders", bearer(reader), 403, "", `error="insufficient_scope", error_description=`, "commands:write:orders.pay.v1"},
		{"key without the scope", "/admin/poison", bearer(payKey), 403, "", `scope="admin"`, "admin"},
		{"admin key", "/admin/poison", []string{auth.APIKeyHeader, opsKey}, 202, "ops", "", ""},
		{"read", "/orders/1", bearer(reader), 202, "reader", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := g.do(tc.path, tc.headers...)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status < 400 {
				if rec.Body.String() != tc.body {
					t.Fatalf("handler saw %q, want %q", rec.Body, tc.body)
				}
				return
			}
			if got := rec.Header().Get("WWW-Authenticate"); !strings.Contains(got, tc.challenge) {
				t.Fatalf("WWW-Authenticate %q, want it to contain %q", got, tc.challenge)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("Content-Type %q", ct)
			}
			var p struct {
				Type, Detail, Instance string
				Status                 int
				RequiredScope          string `json:"required_scope"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			wantType := auth.ProblemUnauthenticated
			if tc.status == 403 {
				wantType = auth.ProblemForbidden
			}
			if p.Type != wantType || p.Status != tc.status || p.Instance != tc.path || p.Detail == "" || p.RequiredScope != tc.scope {
				t.Fatalf("problem %+v: want type %s, status %d, instance %s, required scope %q", p, wantType, tc.status, tc.path, tc.scope)
			}
		})
	}

	t.Run("admin requests are audited", func(t *testing.T) {
		g.mu.Lock()
		defer g.mu.Unlock()
		if len(g.audits) != 2 {
			t.Fatalf("%d audit entries, want 2 (a refused and an admitted admin request): %+v", len(g.audits), g.audits)
		}
		refused, admitted := g.audits[0], g.audits[1]
		if refused.Status != 403 || refused.Principal.Subject != "payments" || refused.Path != "/admin/poison" {
			t.Errorf("refused entry %+v", refused)
		}
		if admitted.Status != 202 || admitted.Principal.Subject != "ops" || admitted.Principal.CredentialID != ops.ID {
			t.Errorf("admitted entry %+v", admitted)
		}
	})

	t.Run("refusals are counted", func(t *testing.T) {
		if got := refusals(t, g.reg, "401"); got != 2 {
			t.Errorf("%v refusals with 401, want 2", got)
		}
		if got := refusals(t, g.reg, "403"); got != 2 {
			t.Errorf("%v refusals with 403, want 2", got)
		}
	})
}

// refusals reads millrace_auth_refused_total{status}.
func refusals(t *testing.T, reg *prometheus.Registry, status string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "millrace_auth_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == status {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no millrace_auth_refused_total{status=%q}", status)
	return 0
}

func TestGuardOpen(t *testing.T) {
	g := newGuarded(t, nil)
	for _, path := range []string{"/orders", "/admin/poison", "/public"} {
		rec := g.do(path)
		if rec.Code != http.StatusAccepted || rec.Body.String() != auth.AnonymousSubject {
			t.Errorf("%s while authentication is off: %d %q, want 202 for %s", path, rec.Code, rec.Body, auth.AnonymousSubject)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.audits) != 1 || g.audits[0].Principal.Method != auth.MethodNone {
		t.Fatalf("audit entries %+v: want the anonymous admin request", g.audits)
	}
}

func TestGrants(t *testing.T) {
	cases := []struct {
		granted, required string
		want              bool
	}{
		{"commands:write", "commands:write", true},
		{"commands:write", "commands:write:orders.pay-order.v1", true},
		{"commands:write:orders.pay-order.v1", "commands:write", false},
		{"commands:write:orders.pay-order.v1", "commands:write:orders.place-order.v1", false},
		{"commands:write", "commands:writer", false},
		{"commands", "commands:write", true},
		{"admin", "queries:read", false},
		{"", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.granted+" grants "+tc.required, func(t *testing.T) {
			if got := auth.Grants(tc.granted, tc.required); got != tc.want {
				t.Fatalf("Grants(%q, %q) = %v, want %v", tc.granted, tc.required, got, tc.want)
			}
		})
	}
}
