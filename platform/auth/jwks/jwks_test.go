package jwks_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/millrace/millrace/platform/auth"
	"github.com/millrace/millrace/platform/auth/jwks"
)

// signer is a private key with its kid and algorithm.
type signer struct {
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

func newSigners(t *testing.T) []signer {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return []signer{
		{"rsa-1", jwt.SigningMethodRS256, rsaKey},
		{"ec-1", jwt.SigningMethodES256, ecKey},
		{"ed-1", jwt.SigningMethodEdDSA, edKey},
	}
}

// jwk is the public JWK of s.
func (s signer) jwk() map[string]string {
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	switch k := s.key.Public().(type) {
	case *rsa.PublicKey:
		return map[string]string{"kty": "RSA", "kid": s.kid, "use": "sig", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		pt, _ := k.Bytes() // 0x04 || X || Y
		return map[string]string{"kty": "EC", "kid": s.kid, "crv": "P-256", "alg": "ES256", "x": b64(pt[1:33]), "y": b64(pt[33:])}
	case ed25519.PublicKey:
		return map[string]string{"kty": "OKP", "kid": s.kid, "crv": "Ed25519", "x": b64(k)}
	}
	panic("unknown key type")
}

func (s signer) token(t *testing.T, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, jwt.MapClaims{
		"iss": "https://id.example.com/", "aud": "millrace", "sub": "svc-" + s.kid, "scope": "queries:read",
		"exp": time.Now().Add(time.Hour).Unix(),
	})
	if kid != "" {
		tok.Header["kid"] = kid
	}
	out, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func set(keys ...map[string]string) []byte {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

func writeSet(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func authenticate(a *auth.Authenticator, token string) (auth.Principal, error) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	return a.Authenticate(r)
}

func TestAsymmetricTokens(t *testing.T) {
	signers := newSigners(t)
	var keys []map[string]string
	for _, s := range signers {
		keys = append(keys, s.jwk())
	}
	ks, err := jwks.Load(t.Context(), writeSet(t, set(keys...)), jwks.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.NewAuthenticator(auth.Config{JWT: &auth.JWTConfig{Issuer: "https://id.example.com/", Audience: "millrace", Keys: ks}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range signers {
		t.Run(s.method.Alg(), func(t *testing.T) {
			p, err := authenticate(a, s.token(t, s.kid))
			if err != nil || p.Subject != "svc-"+s.kid {
				t.Fatalf("Authenticate: %+v, %v", p, err)
			}
		})
	}
	other := newSigners(t)
	refused := []struct {
		name, token, want string
	}{
		{"unknown kid", signers[0].token(t, "rsa-2"), `no key with kid "rsa-2"`},
		{"kid of another type", signers[0].token(t, "ec-1"), `does not verify RS256 tokens`},
		{"no kid, one key fits", "", ""},
		{"signed by a stranger", other[1].token(t, "ec-1"), "signature does not verify"},
		{"HS256 with a public key as secret", hsWithPublicKey(t, signers[0]), "does not accept"},
	}
	for _, tc := range refused {
		if tc.token == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			_, err := authenticate(a, tc.token)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Authenticate: %v, want a refusal with %q", err, tc.want)
			}
		})
	}
	t.Run("no kid, one key fits", func(t *testing.T) {
		if p, err := authenticate(a, signers[2].token(t, "")); err != nil || p.Subject != "svc-ed-1" {
			t.Fatalf("Authenticate: %+v, %v", p, err)
		}
	})
}

// hsWithPublicKey is the algorithm-confusion attack: an HS256 token whose
// secret is the RSA public key.
func hsWithPublicKey(t *testing.T, s signer) string {
	t.Helper()
	pub := s.key.Public().(*rsa.PublicKey)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": "https://id.example.com/", "aud": "millrace", "sub": "mallory", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(pub.N.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRotationFromURL(t *testing.T) {
	signers := newSigners(t)
	var (
		mu      sync.Mutex
		current = set(signers[0].jwk())
		fetches atomic.Int64
		failing atomic.Bool
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if failing.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		_, _ = w.Write(current)
	}))
	defer srv.Close()

	now := time.Now()
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	ks, err := jwks.Load(t.Context(), srv.URL, jwks.Options{Now: func() time.Time { return *clock.Load() }, MinRefresh: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := ks.Key(ctx, "rsa-1", "RS256"); err != nil {
		t.Fatal(err)
	}

	// The provider rotates: the new key is found by refetching, once.
	mu.Lock()
	current = set(signers[0].jwk(), signers[1].jwk())
	mu.Unlock()
	if _, err := ks.Key(ctx, "ec-1", "ES256"); err == nil {
		t.Fatal("a key published within MinRefresh of the last fetch was found without a fetch")
	}
	later := now.Add(2 * time.Minute)
	clock.Store(&later)
	if _, err := ks.Key(ctx, "ec-1", "ES256"); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	before := fetches.Load()
	for range 5 {
		_, err := ks.Key(ctx, "unknown", "ES256")
		var kerr *auth.KeyError
		if !errors.As(err, &kerr) {
			t.Fatalf("unknown kid: %v, want an *auth.KeyError", err)
		}
	}
	if got := fetches.Load() - before; got != 0 {
		t.Fatalf("%d fetches for unknown kids within MinRefresh, want 0", got)
	}

	// A failing source keeps the keys in force.
	failing.Store(true)
	muchLater := later.Add(time.Hour)
	clock.Store(&muchLater)
	before = fetches.Load()
	if _, err := ks.Key(ctx, "ec-1", "ES256"); err != nil {
		t.Fatalf("after a failed refresh: %v", err)
	}
	if fetches.Load() == before {
		t.Fatal("keys older than Refresh were not fetched again")
	}
}

func TestLoadRefuses(t *testing.T) {
	signers := newSigners(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallJWK := signer{"small", jwt.SigningMethodRS256, small}.jwk()
	private := signers[1].jwk()
	private["d"] = "AAAA"
	cases := []struct {
		name   string
		source string
		want   string
	}{
		{"missing file", filepath.Join(t.TempDir(), "nope.json"), "no such file"},
		{"not JSON", writeSet(t, []byte("{")), "not a JSON Web Key Set"},
		{"no keys", writeSet(t, set()), "no usable signature key"},
		{"only a small RSA key", writeSet(t, set(smallJWK)), "1024 bits"},
		{"a private key", writeSet(t, set(private)), "is a private key"},
		{"http to a remote host", "http://id.example.com/jwks.json", "https"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := jwks.Load(t.Context(), tc.source, jwks.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
