package auth

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/millrace/millrace/platform/auth/secret"
)

// DefaultLeeway is the clock skew allowed when checking exp and nbf.
const DefaultLeeway = 30 * time.Second

// MaxLeeway bounds JWTConfig.Leeway.
const MaxLeeway = 5 * time.Minute

// MinSecretBytes is the shortest HS256 secret accepted: as long as the
// hash, as RFC 7518 section 3.2 requires.
const MinSecretBytes = 32

// maxTokenLen bounds a credential: a longer header is refused before any
// parsing.
const maxTokenLen = 8 << 10

// The signing algorithms accepted with a KeySet. HS256 is accepted with a
// shared secret only: a token never chooses between the two.
func asymmetricAlgorithms() []string {
	return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
}

// KeySet finds the public keys that verify asymmetric tokens. Package jwks
// implements it with JSON Web Key Sets. It must be safe for concurrent
// use; ctx lives as long as the request being authenticated.
type KeySet interface {
	// Key returns the key named kid that verifies tokens signed with alg
	// (*rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey). An empty
	// kid asks for the one key of the set that fits alg.
	Key(ctx context.Context, kid, alg string) (crypto.PublicKey, error)
}

// JWTConfig says which bearer tokens are accepted.
type JWTConfig struct {
	// Issuer must equal the token's iss claim. Required.
	Issuer string `yaml:"issuer" json:"issuer"`
	// Audience must be among the token's aud claim. Required.
	Audience string `yaml:"audience" json:"audience"`
	// Leeway is the clock skew allowed on exp and nbf; DefaultLeeway when
	// zero, at most MaxLeeway.
	Leeway time.Duration `yaml:"leeway" json:"leeway"`
	// Secret verifies HS256 tokens: at least MinSecretBytes bytes. Empty
	// accepts no HS256 token.
	Secret secret.String `yaml:"hs256_secret" json:"hs256_secret" secret:"true"`
	// Keys verify RS*, PS*, ES* and EdDSA tokens; nil accepts none.
	Keys KeySet `yaml:"-" json:"-"`
}

// Validate reports every problem of c at once.
func (c JWTConfig) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Issuer) == "" {
		errs = append(errs, configError("required: the iss claim tokens must carry, e.g. https://id.example.com/", "issuer"))
	}
	if strings.TrimSpace(c.Audience) == "" {
		errs = append(errs, configError("required: the aud claim tokens must carry, e.g. millrace", "audience"))
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		errs = append(errs, configError(fmt.Sprintf("want 0s to %s of clock skew (0 for the default %s), got %s", MaxLeeway, DefaultLeeway, c.Leeway), "leeway"))
	}
	if c.Secret.IsSet() && len(c.Secret.Reveal()) < MinSecretBytes {
		// The length is not the secret; the secret is not shown.
		errs = append(errs, configError(fmt.Sprintf("an HS256 secret must be at least %d bytes long, this one has %d; make one with `openssl rand -base64 48`",
			MinSecretBytes, len(c.Secret.Reveal())), "hs256_secret"))
	}
	if !c.Secret.IsSet() && c.Keys == nil {
		errs = append(errs, configError("no way to verify tokens: set hs256_secret (MILLRACE_JWT_SECRET) or a key set (jwks_file or jwks_url)", "hs256_secret"))
	}
	return errors.Join(errs...)
}

// jwtVerifier verifies bearer tokens under one JWTConfig.
type jwtVerifier struct {
	cfg     JWTConfig
	methods []string
	parser  *jwt.Parser
}

func newJWTVerifier(cfg JWTConfig, now func() time.Time) *jwtVerifier {
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	var methods []string
	if cfg.Secret.IsSet() {
		methods = append(methods, "HS256")
	}
	if cfg.Keys != nil {
		methods = append(methods, asymmetricAlgorithms()...)
	}
	return &jwtVerifier{cfg: cfg, methods: methods, parser: jwt.NewParser(
		jwt.WithValidMethods(methods),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(now),
	)}
}

// tokenClaims are the claims millrace reads.
type tokenClaims struct {
	jwt.RegisteredClaims
	// Scope is the space-separated scope claim (RFC 8693); Scp the list
	// some identity providers send instead.
	Scope scopeList `json:"scope"`
	Scp   scopeList `json:"scp"`
}

// scopeList reads a scope claim given as a space-separated string or as a
// list of strings.
type scopeList []string

func (s *scopeList) UnmarshalJSON(data []byte) error {
	var str string
	if err := json.Unmarshal(data, &str); err == nil {
		*s = strings.Fields(str)
		return nil
	}
	var list []string
	if err := json.Unmarshal(data, &list); err != nil {
		return errors.New("a scope claim must be a space-separated string or a list of strings")
	}
	*s = list
	return nil
}

// verify checks a bearer token and returns its principal.
func (v *jwtVerifier) verify(ctx context.Context, raw string) (Principal, error) {
	var claims tokenClaims
	_, err := v.parser.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		if alg == "HS256" {
			return []byte(v.cfg.Secret.Reveal()), nil
		}
		kid, _ := t.Header["kid"].(string)
		key, err := v.cfg.Keys.Key(ctx, kid, alg)
		if err != nil {
			return nil, err
		}
		return key, nil
	})
	if err != nil {
		return Principal{}, v.explain(err, claims)
	}
	if strings.TrimSpace(claims.Subject) == "" {
		return Principal{}, unauthenticated(codeInvalidToken, "The bearer token has no sub claim: millrace records who sent each request, so tokens must name their subject.")
	}
	scopes := slices.Concat([]string(claims.Scope), []string(claims.Scp))
	slices.Sort(scopes)
	return Principal{Subject: claims.Subject, Scopes: slices.Compact(scopes), Method: MethodJWT, CredentialID: claims.ID}, nil
}

// explain turns a parse error into what the client is told. The checks of
// claims run only on tokens whose signature verified, so a forged token
// learns nothing of them.
func (v *jwtVerifier) explain(err error, c tokenClaims) *Error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return unauthenticated(codeInvalidToken, "The bearer token is not a well-formed JWT (three base64url parts: header, claims, signature). Send the token as issued.")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		var kerr *KeyError
		if errors.As(err, &kerr) {
			return unauthenticated(codeInvalidToken, "The bearer token cannot be verified: %s.", kerr.Reason)
		}
		return unauthenticated(codeInvalidToken, "The bearer token cannot be verified: no key of this gateway fits its kid and alg.")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if strings.Contains(err.Error(), "signing method") {
			return unauthenticated(codeInvalidToken, "The bearer token is signed with an algorithm this gateway does not accept; it accepts %s.",
				strings.Join(v.methods, ", "))
		}
		return unauthenticated(codeInvalidToken, "The bearer token's signature does not verify: it was not issued for this gateway, or it was changed.")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return unauthenticated(codeInvalidToken, "The bearer token has no exp claim: millrace accepts only tokens that expire.")
	case errors.Is(err, jwt.ErrTokenExpired):
		return unauthenticated(codeInvalidToken, "The bearer token expired at %s. Get a new token.", claimTime(c.ExpiresAt))
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return unauthenticated(codeInvalidToken, "The bearer token is not valid before %s. Check the clocks of the issuer and this client.", claimTime(c.NotBefore))
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return unauthenticated(codeInvalidToken, "The bearer token was issued by %s; this gateway accepts tokens issued by %q.",
			quoteOrNone(c.Issuer), v.cfg.Issuer)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return unauthenticated(codeInvalidToken, "The bearer token is for the audience %s; this gateway accepts tokens for %q.",
			quoteOrNone(strings.Join(c.Audience, ", ")), v.cfg.Audience)
	default:
		return unauthenticated(codeInvalidToken, "The bearer token is not valid. Get a new token.")
	}
}

func claimTime(t *jwt.NumericDate) string {
	if t == nil {
		return "an unknown time"
	}
	return t.UTC().Format(time.RFC3339)
}

// quoteOrNone quotes a claim the token carries, shortened: it is the
// client's own input, echoed back.
func quoteOrNone(s string) string {
	if s == "" {
		return "nobody named"
	}
	const max = 100
	if len(s) > max {
		s = s[:max] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// KeyError is what a KeySet returns when it has no key for a token; its
// Reason is shown to the client.
type KeyError struct {
	Reason string
}

func (e *KeyError) Error() string { return e.Reason }
