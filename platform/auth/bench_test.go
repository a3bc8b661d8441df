package auth_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkAuthenticate measures what authentication adds to a request:
// one API key check (a SHA-256 and a constant-time compare) or one HS256
// token (parse, HMAC, claims).
func BenchmarkAuthenticate(b *testing.B) {
	key, rec := newKey(b, "ci", "commands:write")
	a := newAuthenticator(b, hsConfig(rec))
	tok := hs256(b, claims("alice", "commands:write queries:read"), hsSecret)
	for _, bc := range []struct {
		name, cred string
	}{{"api key", key}, {"jwt HS256", tok}} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/v1/orders/1", nil)
			r.Header.Set("Authorization", "Bearer "+bc.cred)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Authenticate(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGuard is a request through the guard to a handler that does
// nothing: policy, authentication, scope check, context.
func BenchmarkGuard(b *testing.B) {
	key, rec := newKey(b, "ci", "queries:read")
	g := newGuardedB(b, newAuthenticator(b, hsConfig(rec)))
	r := httptest.NewRequest(http.MethodGet, "/orders/1", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		if w.Code != http.StatusAccepted {
			b.Fatalf("status %d", w.Code)
		}
	}
}
