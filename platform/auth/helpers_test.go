package auth_test

import (
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/millrace/millrace/platform/auth"
	"github.com/millrace/millrace/platform/auth/secret"
)

// The JWT settings of the tests.
const (
	issuer   = "https://id.example.com/"
	audience = "millrace"
	hsSecret = "a-shared-secret-of-at-least-thirty-two-bytes!"
)

// now is the authenticator's clock in the tests.
var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return epoch }

// claims returns valid claims for subject with scopes; change adjusts
// them.
func claims(subject string, scope string, change ...func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{
		"iss": issuer, "aud": audience, "sub": subject,
		"iat": epoch.Add(-time.Minute).Unix(), "exp": epoch.Add(time.Hour).Unix(),
	}
	if scope != "" {
		c["scope"] = scope
	}
	for _, f := range change {
		f(c)
	}
	return c
}

// hs256 signs claims with key.
func hs256(t testing.TB, c jwt.MapClaims, key string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newKey makes an API key record and its key.
func newKey(t testing.TB, subject string, scopes ...string) (string, auth.APIKey) {
	t.Helper()
	key, rec, err := auth.NewAPIKey(subject, scopes, epoch.Add(-24*time.Hour), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key.Reveal(), rec
}

func hsConfig(keys ...auth.APIKey) auth.Config {
	return auth.Config{
		JWT:     &auth.JWTConfig{Issuer: issuer, Audience: audience, Secret: secret.String(hsSecret)},
		APIKeys: keys,
		Now:     clock,
	}
}

func newAuthenticator(t testing.TB, cfg auth.Config) *auth.Authenticator {
	t.Helper()
	a, err := auth.NewAuthenticator(cfg)
	if err != nil {
		t.Fatalf("new authenticator: %v", err)
	}
	return a
}

// request builds a request with headers (name, value pairs).
func request(headers ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/v1/orders/1", nil)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return r
}

func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }
