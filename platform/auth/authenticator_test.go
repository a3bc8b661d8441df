package auth_test

import (
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/millrace/millrace/platform/auth"
)

func TestJWT(t *testing.T) {
	a := newAuthenticator(t, hsConfig())
	cases := []struct {
		name       string
		headers    []string
		wantSub    string   // a valid token's subject
		wantScopes []string // and scopes
		wantDetail string   // part of the refusal's detail
	}{
		{name: "valid", headers: bearer(hs256(t, claims("alice", "commands:write queries:read"), hsSecret)),
			wantSub: "alice", wantScopes: []string{"commands:write", "queries:read"}},
		{name: "scp list", headers: bearer(hs256(t, claims("bob", "", func(c jwt.MapClaims) { c["scp"] = []string{"admin"} }), hsSecret)),
			wantSub: "bob", wantScopes: []string{"admin"}},
		{name: "lower-case scheme", headers: []string{"Authorization", "bearer " + hs256(t, claims("carol", "admin"), hsSecret)},
			wantSub: "carol", wantScopes: []string{"admin"}},
		{name: "expired within the leeway", headers: bearer(hs256(t, claims("dave", "admin", func(c jwt.MapClaims) {
			c["exp"] = epoch.Add(-10 * time.Second).Unix()
		}), hsSecret)), wantSub: "dave", wantScopes: []string{"admin"}},
		{name: "expired", headers: bearer(hs256(t, claims("eve", "admin", func(c jwt.MapClaims) {
			c["exp"] = epoch.Add(-time.Hour).Unix()
		}), hsSecret)), wantDetail: "expired at 2026-03-01T11:00:00Z"},
		{name: "not valid yet", headers: bearer(hs256(t, claims("eve", "admin", func(c jwt.MapClaims) {
			c["nbf"] = epoch.Add(time.Hour).Unix()
		}), hsSecret)), wantDetail: "not valid before 2026-03-01T13:00:00Z"},
		{name: "wrong audience", headers: bearer(hs256(t, claims("eve", "admin", func(c jwt.MapClaims) { c["aud"] = "billing" }), hsSecret)),
			wantDetail: `for the audience "billing"; this gateway accepts tokens for "millrace"`},
		{name: "wrong issuer", headers: bearer(hs256(t, claims("eve", "admin", func(c jwt.MapClaims) { c["iss"] = "https://evil.example/" }), hsSecret)),
			wantDetail: `issued by "https://evil.example/"`},
		{name: "wrong signature", headers: bearer(hs256(t, claims("eve", "admin"), "another-secret-that-is-also-long-enough!")),
			wantDetail: "signature does not verify"},
		{name: "wrong signature hides an expired token", headers: bearer(hs256(t, claims("eve", "admin", func(c jwt.MapClaims) {
			c["exp"] = epoch.Add(-time.Hour).Unix()
		}), "another-secret-that-is-also-long-enough!")), wantDetail: "signature does not verify"},
		{name: "no exp", headers: bearer(hs256(t, claims("eve", "admin", func(c jwt.MapClaims) { delete(c, "exp") }), hsSecret)),
			wantDetail: "no exp claim"},
		{name: "no sub", headers: bearer(hs256(t, claims("", "admin"), hsSecret)), wantDetail: "no sub claim"},
		{name: "alg none", headers: bearer(unsigned(t, claims("eve", "admin"))), wantDetail: "algorithm this gateway does not accept; it accepts HS256"},
		{name: "HS384", headers: bearer(signed(t, jwt.SigningMethodHS384, claims("eve", "admin"), []byte(hsSecret))),
			wantDetail: "algorithm this gateway does not accept"},
		{name: "malformed", headers: bearer("not.a.jwt"), wantDetail: "not a well-formed JWT"},
		{name: "scope claim of the wrong type", headers: bearer(hs256(t, claims("eve", "", func(c jwt.MapClaims) { c["scope"] = 42 }), hsSecret)),
			wantDetail: "not a well-formed JWT"},
		{name: "no credentials", headers: nil, wantDetail: "This route needs credentials"},
		{name: "basic scheme", headers: []string{"Authorization", "Basic dXNlcjpwYXNz"}, wantDetail: `uses the "Basic" scheme`},
		{name: "credential without a scheme is not echoed", headers: []string{"Authorization", hsSecret}, wantDetail: "does not start with a scheme"},
		{name: "empty bearer", headers: []string{"Authorization", "Bearer "}, wantDetail: "credential is empty"},
		{name: "too long", headers: bearer(strings.Repeat("a", 9000)), wantDetail: "9000 bytes long"},
		{name: "two credentials", headers: append(bearer(hs256(t, claims("alice", "admin"), hsSecret)), auth.APIKeyHeader, "mrk_x"),
			wantDetail: "more than one credential"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := a.Authenticate(request(tc.headers...))
			if tc.wantDetail == "" {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				if p.Subject != tc.wantSub || !slices.Equal(p.Scopes, tc.wantScopes) || p.Method != auth.MethodJWT {
					t.Fatalf("principal %+v, want %s with %v by JWT", p, tc.wantSub, tc.wantScopes)
				}
				return
			}
			var ae *auth.Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (principal %+v): want an *auth.Error", err, p)
			}
			if ae.Status != 401 || !strings.Contains(ae.Detail, tc.wantDetail) {
				t.Fatalf("refused %d %q: want 401 with %q", ae.Status, ae.Detail, tc.wantDetail)
			}
			if strings.Contains(ae.Detail, hsSecret) {
				t.Fatalf("the detail shows the secret: %s", ae.Detail)
			}
		})
	}
}

func unsigned(t *testing.T, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func signed(t *testing.T, m jwt.SigningMethod, c jwt.MapClaims, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAPIKeys(t *testing.T) {
	ciKey, ci := newKey(t, "ci", "commands:write", "queries:read")
	oldKey, old := newKey(t, "old", "admin")
	revokedAt := epoch.Add(-time.Hour)
	old.RevokedAt = &revokedAt
	laterKey, later := newKey(t, "later", "admin")
	future := epoch.Add(time.Hour)
	later.RevokedAt = &future
	a := newAuthenticator(t, hsConfig(ci, old, later))

	// A key with ci's id and another secret; a key nobody made.
	forged := ciKey[:len(ciKey)-1] + flip(ciKey[len(ciKey)-1])
	unknown, _ := newKey(t, "nobody", "admin")

	cases := []struct {
		name       string
		headers    []string
		wantSub    string
		wantDetail string
	}{
		{"bearer", bearer(ciKey), "ci", ""},
		{"x-api-key", []string{auth.APIKeyHeader, ciKey}, "ci", ""},
		{"revoked later", bearer(laterKey), "later", ""},
		{"revoked", bearer(oldKey), "", "was revoked at 2026-03-01T11:00:00Z"},
		{"right id, wrong secret", bearer(forged), "", "The API key is not valid."},
		{"unknown id", bearer(unknown), "", "The API key is not valid."},
		{"malformed", bearer(auth.APIKeyPrefix + "short"), "", "The API key is not valid."},
	}
	var invalidDetails []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := a.Authenticate(request(tc.headers...))
			if tc.wantDetail == "" {
				if err != nil || p.Subject != tc.wantSub || p.Method != auth.MethodAPIKey {
					t.Fatalf("Authenticate: %+v, %v; want %s by API key", p, err, tc.wantSub)
				}
				return
			}
			var ae *auth.Error
			if !errors.As(err, &ae) || !strings.Contains(ae.Detail, tc.wantDetail) {
				t.Fatalf("Authenticate: %+v, %v; want a refusal with %q", p, err, tc.wantDetail)
			}
			if strings.Contains(tc.wantDetail, "not valid") {
				invalidDetails = append(invalidDetails, ae.Detail)
			}
		})
	}
	// A client learns nothing of which part of a key was right.
	for _, d := range invalidDetails {
		if d != invalidDetails[0] {
			t.Errorf("refusals of invalid keys differ: %q and %q", d, invalidDetails[0])
		}
	}

	t.Run("revoked while running", func(t *testing.T) {
		now := epoch
		rev := now.Add(-time.Second)
		ci2 := ci
		ci2.RevokedAt = &rev
		if err := a.Update(hsConfig(ci2)); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Authenticate(request(bearer(ciKey)...)); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("a revoked key: %v, want a refusal", err)
		}
		if _, err := a.Authenticate(request(bearer(laterKey)...)); err == nil {
			t.Fatal("a key removed from the configuration is still accepted")
		}
	})
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestConfigValidate(t *testing.T) {
	_, good := newKey(t, "ci", "queries:read")
	dup := good
	bad := good
	bad.ID, bad.Subject, bad.Scopes, bad.Hash = "XYZ", " ", []string{"has space"}, "md5:abc"
	cases := []struct {
		name  string
		cfg   auth.Config
		paths []string // the ConfigPath of every problem, joined with dots
	}{
		{"valid", hsConfig(good), nil},
		{"jwt without issuer, audience or keys", auth.Config{JWT: &auth.JWTConfig{}},
			[]string{"jwt.issuer", "jwt.audience", "jwt.hs256_secret"}},
		{"short secret", auth.Config{JWT: &auth.JWTConfig{Issuer: issuer, Audience: audience, Secret: "short"}},
			[]string{"jwt.hs256_secret"}},
		{"leeway too long", auth.Config{JWT: &auth.JWTConfig{Issuer: issuer, Audience: audience, Secret: hsSecret, Leeway: time.Hour}},
			[]string{"jwt.leeway"}},
		{"bad key", auth.Config{APIKeys: []auth.APIKey{good, bad}},
			[]string{"api_keys.1.id", "api_keys.1.subject", "api_keys.1.scopes.0", "api_keys.1.hash"}},
		{"duplicate id", auth.Config{APIKeys: []auth.APIKey{good, dup}}, []string{"api_keys.1.id"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			var got []string
			for _, e := range unwrapAll(err) {
				var ce *auth.ConfigError
				if !errors.As(e, &ce) {
					t.Fatalf("problem %v is not an *auth.ConfigError", e)
				}
				got = append(got, strings.Join(ce.ConfigPath(), "."))
			}
			slices.Sort(got)
			want := slices.Clone(tc.paths)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("problems at %v, want %v (%v)", got, want, err)
			}
			if err != nil && strings.Contains(err.Error(), "short") && tc.name == "short secret" {
				t.Fatalf("the problem shows the secret: %v", err)
			}
		})
	}
}

func unwrapAll(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unwrapAll(e)...)
		}
		return out
	}
	return []error{err}
}

func TestNewAPIKey(t *testing.T) {
	key, rec, err := auth.NewAPIKey("ci", []string{"queries:read"}, epoch, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := key.Reveal()
	id, err := auth.ParseAPIKey(k)
	if err != nil || id != rec.ID {
		t.Fatalf("ParseAPIKey(%q) = %q, %v; want %q", k, id, err, rec.ID)
	}
	if rec.Hash != auth.HashAPIKey(k) || strings.Contains(rec.Hash, k[len(auth.APIKeyPrefix)+17:]) {
		t.Fatalf("hash %q: want the SHA-256 of the key, without the key", rec.Hash)
	}
	if err := rec.Validate(); err != nil {
		t.Fatal(err)
	}
	other, _, _ := auth.NewAPIKey("ci", []string{"queries:read"}, epoch, rand.Reader)
	if other == key {
		t.Fatal("two keys are the same")
	}
	if _, _, err := auth.NewAPIKey("ci", nil, epoch, rand.Reader); err == nil {
		t.Fatal("a key without scopes was made")
	}
}
