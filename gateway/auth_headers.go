package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// CORS says which browser origins may call the gateway from scripts. The
// zero value allows none: no Access-Control-* header is ever sent, and a
// browser keeps other origins' scripts from reading any answer.
type CORS struct {
	// AllowedOrigins are the origins allowed, each scheme://host[:port]
	// exactly as a browser sends it in Origin, e.g.
	// https://console.example.com. "*" is not accepted: name them.
	AllowedOrigins []string `yaml:"allowed_origins" json:"allowed_origins"`
	// MaxAge is how long a browser may cache a preflight answer. Default
	// 10 minutes.
	MaxAge time.Duration `yaml:"max_age" json:"max_age"`
}

// DefaultCORSMaxAge is the default of CORS.MaxAge.
const DefaultCORSMaxAge = 10 * time.Minute

// Validate reports every problem of c at once.
func (c CORS) Validate() error {
	var errs []error
	for i, o := range c.AllowedOrigins {
		u, err := url.Parse(o)
		if o == "*" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			errs = append(errs, fmt.Errorf("cors allowed_origins[%d] %q: want an origin such as https://console.example.com (scheme, host, optional port; no path, no *)", i, o))
		}
	}
	if c.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("cors max_age %s: must not be negative", c.MaxAge))
	}
	return errors.Join(errs...)
}

// The headers a cross-origin script may send and read.
const (
	corsAllowMethods  = "GET, HEAD, POST, PUT, DELETE"
	corsAllowHeaders  = "Authorization, Content-Type, Idempotency-Key, Prefer, X-API-Key, traceparent, tracestate"
	corsExposeHeaders = "Location, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Preference-Applied, WWW-Authenticate"
)

// Secure puts the security headers on every response of next and answers
// CORS as cors allows (see CORS). cmd/millrace wraps the whole process
// with it, so that admin routes and /metrics carry the headers too; the
// gateway's own Handler sets the headers as well.
//
// A CORS preflight (OPTIONS with Access-Control-Request-Method) from an
// allowed origin is answered here, before authentication: browsers send
// no credentials with it. Every other request goes on to next.
func Secure(next http.Handler, cors CORS) (http.Handler, error) {
	if err := cors.Validate(); err != nil {
		return nil, err
	}
	maxAge := cors.MaxAge
	if maxAge == 0 {
		maxAge = DefaultCORSMaxAge
	}
	origins := slices.Clone(cors.AllowedOrigins)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		setSecurityHeaders(h)
		if len(origins) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		h.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		if origin == "" || !slices.Contains(origins, origin) {
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", corsAllowMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", strconv.Itoa(int(maxAge/time.Second)))
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		next.ServeHTTP(w, r)
	}), nil
}

// setSecurityHeaders sets the headers every response carries: no MIME
// sniffing, no framing, no referrer, and no caching of API answers
// (which may hold personal data). A handler may set its own Cache-Control
// after.
func setSecurityHeaders(h http.Header) {
	// Secure in front of the gateway has set them already, as a rule:
	// a header that holds its value is left as it is (the same as setting
	// it again, without allocating).
	set := func(key, value string) { // key in canonical form
		if v := h[key]; len(v) != 1 || v[0] != value {
			h[key] = []string{value}
		}
	}
	set("X-Content-Type-Options", "nosniff")
	set("X-Frame-Options", "DENY")
	set("Content-Security-Policy", "frame-ancestors 'none'")
	set("Referrer-Policy", "no-referrer")
	if h.Get("Cache-Control") == "" {
		set("Cache-Control", "no-store")
	}
}
