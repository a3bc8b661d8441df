package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/millrace/millrace/platform/auth/secret"
)

// APIKeyPrefix starts every API key, so that a key is recognised as one
// (by the authenticator, and by secret scanners) and told from a JWT.
const APIKeyPrefix = "mrk_"

// Lengths of the parts of an API key: mrk_<id>_<secret>.
const (
	apiKeyIDLen     = 16 // hex digits: 8 random bytes
	apiKeySecretLen = 43 // base64url digits, unpadded: 32 random bytes
	apiKeyLen       = len(APIKeyPrefix) + apiKeyIDLen + 1 + apiKeySecretLen
)

// hashPrefix names the hash function of APIKey.Hash.
const hashPrefix = "sha256:"

// APIKey is an API key as it is stored: its id, who it stands for, its
// scopes and a hash of the key. The key itself is shown once, when it is
// made (NewAPIKey), and is stored nowhere.
//
// The key is 32 random bytes, so a fast hash is enough: unlike a password
// it cannot be guessed, and a slow hash would only slow every request.
type APIKey struct {
	// ID is the public part of the key, 16 hex digits; it names the key
	// in lists, logs and audit records.
	ID string `yaml:"id" json:"id"`
	// Subject is who requests with this key come from.
	Subject string `yaml:"subject" json:"subject"`
	// Scopes are what the key may do.
	Scopes []string `yaml:"scopes" json:"scopes"`
	// Hash is "sha256:" and the hex SHA-256 of the whole key.
	Hash string `yaml:"hash" json:"hash"`
	// CreatedAt is when the key was made.
	CreatedAt time.Time `yaml:"created_at,omitempty" json:"created_at,omitzero"`
	// RevokedAt, when set, is when the key was revoked: it is refused
	// from then on.
	RevokedAt *time.Time `yaml:"revoked_at,omitempty" json:"revoked_at,omitempty"`
}

// Revoked reports whether k is revoked at now.
func (k APIKey) Revoked(now time.Time) bool {
	return k.RevokedAt != nil && !now.Before(*k.RevokedAt)
}

// Validate reports every problem of k at once, each placed at its key
// (ConfigPath) for configuration loaders.
func (k APIKey) Validate() error {
	var errs []error
	if !isHex(k.ID, apiKeyIDLen) {
		errs = append(errs, configError(fmt.Sprintf("want %d lower-case hex digits, as `millrace keys create` writes, got %q", apiKeyIDLen, k.ID), "id"))
	}
	if strings.TrimSpace(k.Subject) == "" {
		errs = append(errs, configError("required: name who requests with this key come from, e.g. ci-deploy", "subject"))
	}
	errs = append(errs, validateScopes(k.Scopes, "scopes"))
	if h, ok := strings.CutPrefix(k.Hash, hashPrefix); !ok || !isHex(h, 2*sha256.Size) {
		// The hash is not the key, but it is not shown either.
		errs = append(errs, configError("want sha256: and 64 hex digits, as `millrace keys create` writes", "hash"))
	}
	return joinErrors(errs)
}

// NewAPIKey makes a new API key for subject with scopes, reading
// randomness from rnd (crypto/rand.Reader when nil). It returns the key,
// to be shown once, and its record, to be stored.
func NewAPIKey(subject string, scopes []string, now time.Time, rnd io.Reader) (secret.String, APIKey, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var id [apiKeyIDLen / 2]byte
	var sec [32]byte
	if _, err := io.ReadFull(rnd, id[:]); err != nil {
		return "", APIKey{}, fmt.Errorf("make api key: read randomness: %w", err)
	}
	if _, err := io.ReadFull(rnd, sec[:]); err != nil {
		return "", APIKey{}, fmt.Errorf("make api key: read randomness: %w", err)
	}
	key := APIKeyPrefix + hex.EncodeToString(id[:]) + "_" + base64.RawURLEncoding.EncodeToString(sec[:])
	rec := APIKey{
		ID:        hex.EncodeToString(id[:]),
		Subject:   subject,
		Scopes:    append([]string(nil), scopes...),
		Hash:      HashAPIKey(key),
		CreatedAt: now.UTC().Truncate(time.Second),
	}
	if err := rec.Validate(); err != nil {
		return "", APIKey{}, fmt.Errorf("make api key: %w", err)
	}
	return secret.String(key), rec, nil
}

// HashAPIKey returns the stored form of a key: "sha256:" and its hex
// SHA-256.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hashPrefix + hex.EncodeToString(sum[:])
}

// ParseAPIKey checks the shape of an API key, mrk_<16 hex>_<43 base64url>,
// and returns its id. It says nothing of whether the key is valid.
func ParseAPIKey(key string) (id string, err error) {
	rest, ok := strings.CutPrefix(key, APIKeyPrefix)
	if !ok || len(key) != apiKeyLen {
		return "", fmt.Errorf("not an API key: millrace keys look like %s<16 hex digits>_<43 characters>", APIKeyPrefix)
	}
	id, sec := rest[:apiKeyIDLen], rest[apiKeyIDLen+1:]
	if rest[apiKeyIDLen] != '_' || !isHex(id, apiKeyIDLen) || !isBase64URL(sec) {
		return "", fmt.Errorf("not an API key: millrace keys look like %s<16 hex digits>_<43 characters>", APIKeyPrefix)
	}
	return id, nil
}

// matchesHash compares key with a stored hash in constant time.
func matchesHash(key, stored string) bool {
	return subtle.ConstantTimeCompare([]byte(HashAPIKey(key)), []byte(stored)) == 1
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func isBase64URL(s string) bool {
	for i := range len(s) {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
