package auth_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/millrace/millrace/platform/auth"
)

// FuzzAuthenticate feeds arbitrary Authorization and X-API-Key headers to
// an authenticator that accepts HS256 tokens and one API key. It must
// never panic, every refusal must be an *auth.Error with a detail, and a
// credential it accepts must really be valid: the one key, or a token an
// independent parser verifies with the secret.
func FuzzAuthenticate(f *testing.F) {
	key, rec := newKey(f, "ci", "commands:write")
	a := newAuthenticator(f, hsConfig(rec))
	valid := hs256(f, claims("alice", "queries:read"), hsSecret)
	f.Add("Bearer "+valid, "")
	f.Add("Bearer "+key, "")
	f.Add("", key)
	f.Add("Bearer "+key[:len(key)-1]+"x", "")
	f.Add("Bearer "+hs256(f, claims("eve", "", func(c jwt.MapClaims) { c["exp"] = epoch.Add(-time.Hour).Unix() }), hsSecret), "")
	f.Add("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "")
	f.Add("Basic Zm9vOmJhcg==", "")
	f.Add("Bearer", "")
	f.Add("", "")
	f.Add("Bearer a.b.c", auth.APIKeyPrefix)
	f.Fuzz(func(t *testing.T, authorization, apiKey string) {
		r, err := http.NewRequest(http.MethodGet, "http://gateway/v1/orders/1", nil)
		if err != nil {
			t.Fatal(err)
		}
		if authorization != "" {
			r.Header["Authorization"] = []string{authorization}
		}
		if apiKey != "" {
			r.Header[auth.APIKeyHeader] = []string{apiKey}
		}
		p, err := a.Authenticate(r)
		if err != nil {
			ae, ok := err.(*auth.Error)
			if !ok || ae.Status != http.StatusUnauthorized || ae.Detail == "" {
				t.Fatalf("refusal %#v: want an *auth.Error with status 401 and a detail", err)
			}
			return
		}
		cred := strings.TrimSpace(apiKey)
		if authorization != "" {
			_, cred, _ = strings.Cut(strings.TrimSpace(authorization), " ")
			cred = strings.TrimSpace(cred)
		}
		switch p.Method {
		case auth.MethodAPIKey:
			if cred != key || p.Subject != rec.Subject {
				t.Fatalf("accepted %q as the key of %s", cred, p.Subject)
			}
		case auth.MethodJWT:
			parsed, err := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(clock),
				jwt.WithLeeway(auth.DefaultLeeway), jwt.WithIssuer(issuer), jwt.WithAudience(audience), jwt.WithExpirationRequired(),
			).Parse(cred, func(*jwt.Token) (any, error) { return []byte(hsSecret), nil })
			if err != nil || !parsed.Valid {
				t.Fatalf("accepted token %q that does not verify: %v", cred, err)
			}
			if sub, _ := parsed.Claims.GetSubject(); sub != p.Subject || sub == "" {
				t.Fatalf("principal %q, token subject %q", p.Subject, sub)
			}
		default:
			t.Fatalf("accepted with method %q", p.Method)
		}
	})
}

// FuzzParseAPIKey: a string ParseAPIKey accepts has the exact shape of a
// key, and its id is the hex after the prefix.
func FuzzParseAPIKey(f *testing.F) {
	key, _ := newKey(f, "ci", "admin")
	f.Add(key)
	f.Add(auth.APIKeyPrefix + "0123456789abcdef_" + strings.Repeat("A", 43))
	f.Add(auth.APIKeyPrefix + "0123456789ABCDEF_" + strings.Repeat("A", 43))
	f.Add(auth.APIKeyPrefix + "0123456789abcdef-" + strings.Repeat("/", 43))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := auth.ParseAPIKey(s)
		if err != nil {
			if id != "" {
				t.Fatalf("refused %q but returned id %q", s, id)
			}
			return
		}
		if !strings.HasPrefix(s, auth.APIKeyPrefix+id+"_") || len(s) != len(key) {
			t.Fatalf("accepted %q with id %q", s, id)
		}
		rec := auth.APIKey{ID: id, Subject: "s", Scopes: []string{"admin"}, Hash: auth.HashAPIKey(s)}
		if err := rec.Validate(); err != nil {
			t.Fatalf("a record of an accepted key is invalid: %v", err)
		}
	})
}
