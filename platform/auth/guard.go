package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Problem types of the answers a Guard gives. Clients branch on them.
const (
	ProblemUnauthenticated = "https://millrace.dev/problems/unauthenticated"
	ProblemForbidden       = "https://millrace.dev/problems/forbidden"
)

// DefaultRealm names the protection space in WWW-Authenticate.
const DefaultRealm = "millrace"

// GuardConfig configures a Guard.
type GuardConfig struct {
	// Authenticator verifies credentials. Nil turns authentication off:
	// every request passes as the Anonymous principal, which has every
	// scope. Only a process on a loopback address should run so.
	Authenticator *Authenticator
	// Policy says what a request needs. Required. It must be safe for
	// concurrent use.
	Policy func(*http.Request) Requirement
	// Realm is the realm of WWW-Authenticate; DefaultRealm when empty.
	Realm string
	// Audit, when set, is called once for every request whose requirement
	// is ScopeAdmin (or a refinement of it), after it was answered or
	// refused. It must not keep the entry's slices.
	Audit func(context.Context, AuditEntry)
	// Logger receives a debug record per refusal. Default: discard.
	Logger *slog.Logger
	// Registerer, when set, receives millrace_auth_refused_total.
	Registerer prometheus.Registerer
}

// AuditEntry is one admin request, answered or refused.
type AuditEntry struct {
	Time time.Time
	// Subject and the rest of the principal; an empty Subject for a
	// request refused for want of valid credentials.
	Principal Principal
	// HTTPMethod and Path of the request.
	HTTPMethod string
	Path       string
	// Status answered: 401 or 403 when the guard refused the request.
	Status int
	// Remote is the client's address.
	Remote   string
	Duration time.Duration
}

// Guard puts authentication and authorization in front of a handler.
type Guard struct {
	cfg     GuardConfig
	refused *prometheus.CounterVec
}

// NewGuard checks cfg and returns a Guard.
func NewGuard(cfg GuardConfig) (*Guard, error) {
	if cfg.Policy == nil {
		return nil, errors.New("create auth guard: no policy given")
	}
	if cfg.Realm == "" {
		cfg.Realm = DefaultRealm
	}
	if strings.ContainsAny(cfg.Realm, "\"\\\r\n") {
		return nil, fmt.Errorf("create auth guard: realm %q must not contain quotes, backslashes or line breaks", cfg.Realm)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Guard{cfg: cfg}
	g.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "millrace_auth_refused_total",
		Help: "Requests refused by authentication (status 401) or authorization (status 403).",
	}, []string{"status"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(g.refused); err != nil {
			return nil, fmt.Errorf("create auth guard: register metrics: %w", err)
		}
	}
	return g, nil
}

// Open reports whether authentication is off.
func (g *Guard) Open() bool { return g.cfg.Authenticator == nil }

// Handler returns next behind the guard. A request that passes reaches
// next with its Principal in the context (FromContext); a public request
// carries none while authentication is on.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := g.cfg.Policy(r)
		audited := g.cfg.Audit != nil && Grants(ScopeAdmin, req.Scope)
		start := time.Now()

		p, err := g.check(r, req)
		if err != nil {
			g.refuse(w, r, err)
			if audited {
				g.audit(r, p, err.Status, start) // p is known for a 403
			}
			return
		}
		if p.Subject != "" {
			r = r.WithContext(WithPrincipal(r.Context(), p))
		}
		if !audited {
			next.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		g.audit(r, p, sw.status(), start)
	})
}

// check returns the principal of r, or why r is refused.
func (g *Guard) check(r *http.Request, req Requirement) (Principal, *Error) {
	if g.cfg.Authenticator == nil {
		return Anonymous(), nil
	}
	if req.Public {
		return Principal{}, nil
	}
	p, err := g.cfg.Authenticator.Authenticate(r)
	if err != nil {
		var ae *Error
		if !errors.As(err, &ae) {
			ae = unauthenticated(codeInvalidToken, "The credentials could not be checked. Retry later.")
		}
		return Principal{}, ae
	}
	if req.Scope != "" && !p.Has(req.Scope) {
		have := "no scopes"
		if len(p.Scopes) > 0 {
			have = "the scopes " + strings.Join(p.Scopes, ", ")
		}
		want := req.Scope
		if strings.Count(req.Scope, ":") >= 2 { // a refined scope: its parent grants it too
			parent, _, _ := cutLast(req.Scope)
			want += " or " + parent
		}
		return p, &Error{Status: http.StatusForbidden, Code: codeInsufficientScope, Scope: req.Scope,
			Detail: fmt.Sprintf("This route needs the scope %s; the credentials of %q carry %s. Use credentials with the scope %s.",
				req.Scope, p.Subject, have, want)}
	}
	return p, nil
}

// cutLast splits the last colon-separated part off a scope:
// commands:write:x is commands:write and x.
func cutLast(scope string) (parent, last string, ok bool) {
	i := strings.LastIndexByte(scope, ':')
	if i < 0 {
		return "", "", false
	}
	return scope[:i], scope[i+1:], true
}

// refuse answers 401 or 403 with a problem and WWW-Authenticate.
func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, e *Error) {
	g.refused.WithLabelValues(strconv.Itoa(e.Status)).Inc()
	g.cfg.Logger.DebugContext(r.Context(), "request refused",
		slog.Int("status", e.Status), slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.String("reason", e.Detail), slog.String("remote", r.RemoteAddr))

	challenge := `Bearer realm="` + g.cfg.Realm + `"`
	if e.Code != "" {
		challenge += `, error="` + e.Code + `", error_description="` + headerSafe(e.Detail) + `"`
	}
	if e.Scope != "" {
		challenge += `, scope="` + e.Scope + `"`
	}
	w.Header().Set("WWW-Authenticate", challenge)

	title := "Authentication required"
	typ := ProblemUnauthenticated
	if e.Status == http.StatusForbidden {
		title, typ = "Forbidden", ProblemForbidden
	}
	body := struct {
		Type          string `json:"type"`
		Title         string `json:"title"`
		Status        int    `json:"status"`
		Detail        string `json:"detail"`
		Instance      string `json:"instance"`
		RequiredScope string `json:"required_scope,omitempty"`
	}{typ, title, e.Status, e.Detail, r.URL.Path, e.Scope}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(body) // a struct of strings and an int always encodes
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(e.Status)
	_, _ = w.Write(buf.Bytes()) // a failed write means the client went away
}

// headerSafe makes s fit a quoted-string of a header: printable ASCII
// without quotes or backslashes.
func headerSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b[i] = '\''
		}
	}
	return string(b)
}

func (g *Guard) audit(r *http.Request, p Principal, status int, start time.Time) {
	g.cfg.Audit(r.Context(), AuditEntry{
		Time: start, Principal: p, HTTPMethod: r.Method, Path: r.URL.Path,
		Status: status, Remote: r.RemoteAddr, Duration: time.Since(start),
	})
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes a flush on, for handlers that stream (progress of a replay).
func (w *statusWriter) Flush() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
