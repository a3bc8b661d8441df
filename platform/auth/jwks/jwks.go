// Package jwks reads JSON Web Key Sets (RFC 7517) from a file or a URL and
// finds the key that verifies a token: it implements auth.KeySet.
//
// A Set is loaded once at start (Load fails when the source cannot be read
// or holds no usable key, so a misconfiguration stops the process instead
// of refusing every token later), then read again when it is older than
// Options.Refresh, or when a token names a key id the set does not hold
// (an identity provider rotated its keys), at most once per
// Options.MinRefresh. A failed refresh keeps the keys in force and is
// logged. Refreshes happen inside the Key call that needs them, bounded by
// that call's context: a Set starts no goroutine and needs no closing.
package jwks

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millrace/millrace/platform/auth"
)

// Defaults of Options.
const (
	DefaultRefresh    = 15 * time.Minute
	DefaultMinRefresh = time.Minute
	DefaultTimeout    = 10 * time.Second
)

// maxSetBytes bounds a key set document.
const maxSetBytes = 1 << 20

// minRSABits is the smallest RSA modulus accepted.
const minRSABits = 2048

// Options tune a Set.
type Options struct {
	// HTTPClient fetches a URL source; a client with DefaultTimeout when
	// nil.
	HTTPClient *http.Client
	// Refresh is how old the keys may get before the next Key call reads
	// the source again. DefaultRefresh when zero.
	Refresh time.Duration
	// MinRefresh is the least time between two reads of the source.
	// DefaultMinRefresh when zero.
	MinRefresh time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger receives a warning per failed refresh. Default: discard.
	Logger *slog.Logger
}

// Set is a JSON Web Key Set kept fresh from its source. It is safe for
// concurrent use.
type Set struct {
	source string
	read   func(context.Context) ([]byte, error)
	opts   Options

	keys atomic.Pointer[[]Key]

	mu      sync.Mutex // serialises reads of the source
	readAt  time.Time  // the last successful read
	triedAt time.Time  // the last attempt
}

// Key is one usable verification key of a set.
type Key struct {
	// ID is the key's kid; may be empty.
	ID string
	// Algorithm is the key's alg; empty fits every algorithm of its type.
	Algorithm string
	// Public is *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey.
	Public crypto.PublicKey
}

// Load reads the key set at source, a file path or an https:// URL
// (http:// only on a loopback host), and returns it ready for use. It
// fails when the source cannot be read or holds no usable key.
func Load(ctx context.Context, source string, opts Options) (*Set, error) {
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: DefaultTimeout}
	}
	if opts.Refresh == 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.MinRefresh == 0 {
		opts.MinRefresh = DefaultMinRefresh
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Set{source: source, opts: opts}
	switch {
	case strings.HasPrefix(source, "https://") || strings.HasPrefix(source, "http://"):
		u, err := url.Parse(source)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("load key set %s: not a URL", source)
		}
		if u.Scheme == "http" && !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("load key set %s: a key set is fetched over https, or http from a loopback host only", source)
		}
		s.read = func(ctx context.Context) ([]byte, error) { return fetch(ctx, opts.HTTPClient, source) }
	case source == "":
		return nil, errors.New("load key set: no file or URL given")
	default:
		s.read = func(context.Context) ([]byte, error) { return readFile(source) }
	}
	data, err := s.read(ctx)
	if err != nil {
		return nil, fmt.Errorf("load key set %s: %w", source, err)
	}
	keys, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("load key set %s: %w", source, err)
	}
	now := opts.Now()
	s.keys.Store(&keys)
	s.readAt, s.triedAt = now, now
	return s, nil
}

// Source names where the set is read from.
func (s *Set) Source() string { return s.source }

// Keys returns the keys in force.
func (s *Set) Keys() []Key { return append([]Key(nil), *s.keys.Load()...) }

// Key implements auth.KeySet. When the set has no key named kid, or its
// keys are older than Options.Refresh, it reads the source again first
// (at most once per Options.MinRefresh). A key that is missing or does not
// fit alg is an *auth.KeyError.
func (s *Set) Key(ctx context.Context, kid, alg string) (crypto.PublicKey, error) {
	now := s.opts.Now()
	s.mu.Lock()
	stale := now.Sub(s.readAt) >= s.opts.Refresh
	s.mu.Unlock()
	if stale {
		s.refresh(ctx, "the keys are older than "+s.opts.Refresh.String())
	}
	key, err := pick(*s.keys.Load(), kid, alg)
	var kerr *auth.KeyError
	if kid != "" && errors.As(err, &kerr) && s.refresh(ctx, "a token names the unknown key id "+kid) {
		key, err = pick(*s.keys.Load(), kid, alg)
	}
	return key, err
}

// refresh reads the source again unless it was read (or tried) within
// MinRefresh. It reports whether new keys were put in force.
func (s *Set) refresh(ctx context.Context, why string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if now.Sub(s.triedAt) < s.opts.MinRefresh {
		return false
	}
	s.triedAt = now
	data, err := s.read(ctx)
	var keys []Key
	if err == nil {
		keys, err = Parse(data)
	}
	if err != nil {
		s.opts.Logger.WarnContext(ctx, "refresh key set; the keys in force stay",
			slog.String("source", s.source), slog.String("why", why), slog.Any("error", err))
		return false
	}
	s.keys.Store(&keys)
	s.readAt = now
	return true
}

// pick finds the key for a token's kid and alg.
func pick(keys []Key, kid, alg string) (crypto.PublicKey, error) {
	var fits []Key
	for _, k := range keys {
		if kid != "" && k.ID != kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != alg || !fitsAlgorithm(k.Public, alg) {
			if kid != "" {
				return nil, &auth.KeyError{Reason: fmt.Sprintf("the key %q of this gateway's key set does not verify %s tokens", kid, alg)}
			}
			continue
		}
		fits = append(fits, k)
	}
	switch {
	case len(fits) == 1:
		return fits[0].Public, nil
	case kid != "":
		return nil, &auth.KeyError{Reason: fmt.Sprintf("this gateway's key set has no key with kid %q", shorten(kid))}
	case len(fits) == 0:
		return nil, &auth.KeyError{Reason: fmt.Sprintf("this gateway's key set has no key for %s tokens", alg)}
	default:
		return nil, &auth.KeyError{Reason: fmt.Sprintf("the token names no kid and this gateway's key set has %d keys for %s tokens", len(fits), alg)}
	}
}

// fitsAlgorithm reports whether a key of pub's type verifies alg.
func fitsAlgorithm(pub crypto.PublicKey, alg string) bool {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// jwk is one key of a set, as JSON.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
	D   string `json:"d"`
}

// Parse reads a JSON Web Key Set and returns its usable signature keys.
// Keys for encryption (use "enc") and of unknown types are skipped; a set
// that holds a private key, or no usable key, is refused.
func Parse(data []byte) ([]Key, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	var keys []Key
	var skipped []string
	for i, raw := range doc.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: %v", i, err))
			continue
		}
		if j.D != "" {
			return nil, fmt.Errorf("key %d (kid %q) is a private key: publish only public keys", i, j.Kid)
		}
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		pub, err := j.public()
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %v", i, j.Kid, err))
			continue
		}
		keys = append(keys, Key{ID: j.Kid, Algorithm: j.Alg, Public: pub})
	}
	if len(keys) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("no usable signature key: %s", strings.Join(skipped, "; "))
		}
		return nil, errors.New("no usable signature key: the set has no RSA, EC or Ed25519 key for signatures")
	}
	return keys, nil
}

// public decodes the public key of j.
func (j jwk) public() (crypto.PublicKey, error) {
	switch j.Kty {
	case "RSA":
		n, err := decodeInt(j.N, "n")
		if err != nil {
			return nil, err
		}
		e, err := decodeInt(j.E, "e")
		if err != nil {
			return nil, err
		}
		if n.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA modulus of %d bits: want at least %d", n.BitLen(), minRSABits)
		}
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
			return nil, errors.New("RSA exponent e is not a small odd number")
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case "EC":
		var curve elliptic.Curve
		switch j.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("EC curve %q: want P-256, P-384 or P-521", j.Crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, err := decodeFixed(j.X, "x", size)
		if err != nil {
			return nil, err
		}
		y, err := decodeFixed(j.Y, "y", size)
		if err != nil {
			return nil, err
		}
		point := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return nil, fmt.Errorf("EC point: %w", err)
		}
		return pub, nil
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, fmt.Errorf("OKP curve %q: want Ed25519", j.Crv)
		}
		x, err := decodeFixed(j.X, "x", ed25519.PublicKeySize)
		if err != nil {
			return nil, err
		}
		return ed25519.PublicKey(x), nil
	default:
		return nil, fmt.Errorf("key type %q: want RSA, EC or OKP", j.Kty)
	}
}

func decodeInt(s, name string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("%s is not base64url", name)
	}
	return new(big.Int).SetBytes(b), nil
}

func decodeFixed(s, name string, size int) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s is not base64url", name)
	}
	if len(b) != size {
		return nil, fmt.Errorf("%s is %d bytes: want %d", name, len(b), size)
	}
	return b, nil
}

func fetch(ctx context.Context, client *http.Client, source string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, source, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch: status %s", res.Status)
	}
	data, err := io.ReadAll(io.LimitReader(res.Body, maxSetBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	if len(data) > maxSetBytes {
		return nil, fmt.Errorf("fetch: the key set is larger than %d bytes", maxSetBytes)
	}
	return data, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSetBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(data) > maxSetBytes {
		return nil, fmt.Errorf("the key set is larger than %d bytes", maxSetBytes)
	}
	return data, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func shorten(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
