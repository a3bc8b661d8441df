package main

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/platform/auth"
	"github.com/millrace/millrace/platform/auth/jwks"
	"github.com/millrace/millrace/platform/auth/secret"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/config"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/projections/queryapi"
)

// Security of a millrace process (docs/security.md): who may call which
// route, the HTTP server's abuse limits, and how the process authenticates
// to Kafka. Authentication is configured by the auth file (--auth-file)
// and the MILLRACE_JWT_* variables; without either it is off, which is
// allowed on a loopback address only (or with --insecure).

// securityConfig is the security part of devConfig, from flags and
// environment (bindSecurityFlags).
type securityConfig struct {
	// AuthFile is the auth file: JWT settings, API keys, which of
	// /healthz and /metrics are public, CORS. Watched for changes.
	AuthFile string
	// Insecure allows a non-loopback address without authentication.
	Insecure bool
	// JWT settings from the environment; they override the auth file's.
	JWTSecret   secret.String
	JWTIssuer   string
	JWTAudience string
	JWKS        string
	HTTP        httpLimits
	Kafka       kafkaSecurity
}

// httpLimits bound what one client can make the HTTP server hold.
type httpLimits struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	MaxConnections    int
}

// kafkaSecurity is how the process authenticates to an external cluster.
type kafkaSecurity struct {
	SASL kafka.SASL
	TLS  kafka.TLS
}

// Environment variables of security settings.
const (
	envAuthFile       = "MILLRACE_AUTH_FILE"
	envJWTSecret      = "MILLRACE_JWT_SECRET"
	envJWTIssuer      = "MILLRACE_JWT_ISSUER"
	envJWTAudience    = "MILLRACE_JWT_AUDIENCE"
	envJWKS           = "MILLRACE_JWKS"
	envKafkaPassword  = "KAFKA_SASL_PASSWORD"
	envKafkaMechanism = "KAFKA_SASL_MECHANISM"
	envKafkaUsername  = "KAFKA_SASL_USERNAME"
)

// bindSecurityFlags registers the security flags of `millrace dev`. Secrets
// come from the environment only: a flag shows in the process list.
func bindSecurityFlags(fs *pflag.FlagSet, c *securityConfig, getenv func(string) string) {
	fs.StringVar(&c.AuthFile, "auth-file", getenv(envAuthFile), "auth file: JWT settings, API keys, public routes, CORS; watched for changes; see docs/security.md ("+envAuthFile+")")
	fs.BoolVar(&c.Insecure, "insecure", false, "allow listening on a non-loopback address without authentication")
	c.JWTSecret = secret.String(getenv(envJWTSecret))
	c.JWTIssuer = getenv(envJWTIssuer)
	c.JWTAudience = getenv(envJWTAudience)
	c.JWKS = getenv(envJWKS)
	fs.DurationVar(&c.HTTP.ReadHeaderTimeout, "read-header-timeout", 5*time.Second, "how long a client may take to send the request headers (slow clients are cut off)")
	fs.DurationVar(&c.HTTP.ReadTimeout, "read-timeout", 30*time.Second, "how long a client may take to send a whole request")
	fs.DurationVar(&c.HTTP.WriteTimeout, "write-timeout", 60*time.Second, "how long writing a response may take")
	fs.DurationVar(&c.HTTP.IdleTimeout, "idle-timeout", 120*time.Second, "how long an idle keep-alive connection stays open")
	fs.IntVar(&c.HTTP.MaxHeaderBytes, "max-header-bytes", 64<<10, "largest request header block accepted (431 beyond)")
	fs.IntVar(&c.HTTP.MaxConnections, "max-connections", 1024, "most client connections open at once; more wait to be accepted")
	bindKafkaSecurityFlags(fs, &c.Kafka, getenv)
}

// bindKafkaSecurityFlags registers the flags of SASL and TLS towards
// Kafka, shared by every command that talks to a broker.
func bindKafkaSecurityFlags(fs *pflag.FlagSet, k *kafkaSecurity, getenv func(string) string) {
	boolEnv := func(key string) bool { v, _ := strconv.ParseBool(getenv(key)); return v }
	fs.StringVar(&k.SASL.Mechanism, "kafka-sasl-mechanism", getenv(envKafkaMechanism), "SASL mechanism towards Kafka: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; the password comes from "+envKafkaPassword+" ("+envKafkaMechanism+")")
	fs.StringVar(&k.SASL.Username, "kafka-sasl-username", getenv(envKafkaUsername), "SASL username towards Kafka ("+envKafkaUsername+")")
	k.SASL.Password = secret.String(getenv(envKafkaPassword))
	fs.BoolVar(&k.TLS.Enabled, "kafka-tls", boolEnv("KAFKA_TLS"), "connect to Kafka over TLS (KAFKA_TLS)")
	fs.StringVar(&k.TLS.CAFile, "kafka-tls-ca-file", getenv("KAFKA_TLS_CA_FILE"), "PEM bundle of the authorities of the brokers' certificates (KAFKA_TLS_CA_FILE)")
	fs.StringVar(&k.TLS.CertFile, "kafka-tls-cert-file", getenv("KAFKA_TLS_CERT_FILE"), "PEM client certificate towards Kafka (KAFKA_TLS_CERT_FILE)")
	fs.StringVar(&k.TLS.KeyFile, "kafka-tls-key-file", getenv("KAFKA_TLS_KEY_FILE"), "PEM key of the client certificate (KAFKA_TLS_KEY_FILE)")
	fs.StringVar(&k.TLS.ServerName, "kafka-tls-server-name", getenv("KAFKA_TLS_SERVER_NAME"), "name expected in the brokers' certificates (KAFKA_TLS_SERVER_NAME)")
	fs.BoolVar(&k.TLS.InsecureSkipVerify, "kafka-tls-insecure-skip-verify", boolEnv("KAFKA_TLS_INSECURE_SKIP_VERIFY"), "do not verify the brokers' certificates; for trials only (KAFKA_TLS_INSECURE_SKIP_VERIFY)")
}

// apply puts k on a Kafka configuration.
func (k kafkaSecurity) apply(c kafka.Config) kafka.Config {
	c.SASL, c.TLS = k.SASL, k.TLS
	return c
}

// config is the Kafka configuration of a command that only talks to a
// broker.
func (k kafkaFlags) config(clientID string) kafka.Config {
	return k.Security.apply(kafka.Config{Brokers: k.Brokers, ClientID: clientID})
}

// validate reports every problem of the security settings at once.
func (c securityConfig) validate(external bool) error {
	var errs []error
	h := c.HTTP
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"read header timeout", h.ReadHeaderTimeout}, {"read timeout", h.ReadTimeout}, {"write timeout", h.WriteTimeout}, {"idle timeout", h.IdleTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be positive", d.name, d.v))
		}
	}
	if h.MaxHeaderBytes < 4<<10 {
		errs = append(errs, fmt.Errorf("max header bytes %d: want at least 4096", h.MaxHeaderBytes))
	}
	if h.MaxConnections < 1 {
		errs = append(errs, fmt.Errorf("max connections %d: want at least 1", h.MaxConnections))
	}
	kc := c.Kafka.apply(kafka.Config{Brokers: []string{"broker:9092"}})
	if err := kc.Validate(); err != nil {
		errs = append(errs, err)
	}
	if !external && (c.Kafka.SASL.Enabled() || c.Kafka.TLS.On()) {
		errs = append(errs, errors.New("kafka SASL and TLS settings are for an external cluster (KAFKA_BROKERS): the embedded broker listens on loopback only, without either"))
	}
	return errors.Join(errs...)
}

// authFile is the document --auth-file names. See docs/security.md.
type authFile struct {
	// JWT accepts bearer tokens when set.
	JWT *jwtSection `yaml:"jwt" json:"jwt"`
	// APIKeys are the API keys (millrace keys create|list|revoke).
	APIKeys []auth.APIKey `yaml:"api_keys" json:"api_keys"`
	// Public says which operational routes need no credentials.
	Public publicRoutes `yaml:"public" json:"public"`
	// CORS lets browser scripts of other origins call the gateway.
	CORS gateway.CORS `yaml:"cors" json:"cors"`
}

// jwtSection is auth.JWTConfig as a document holds it: the key set is
// named by a file or URL.
type jwtSection struct {
	Issuer     string        `yaml:"issuer" json:"issuer"`
	Audience   string        `yaml:"audience" json:"audience"`
	Leeway     time.Duration `yaml:"leeway" json:"leeway"`
	HS256      secret.String `yaml:"hs256_secret" json:"hs256_secret" secret:"true"`
	JWKSFile   string        `yaml:"jwks_file" json:"jwks_file"`
	JWKSURL    string        `yaml:"jwks_url" json:"jwks_url"`
	JWKSMaxAge time.Duration `yaml:"jwks_refresh" json:"jwks_refresh"`
}

// publicRoutes say which operational routes anyone may call.
type publicRoutes struct {
	// Health: GET /healthz without credentials (load balancers and
	// Consul's health checks call it). Default true.
	Health bool `yaml:"health" json:"health"`
	// Metrics: GET /metrics without credentials. Default true; set false
	// to ask for the metrics:read scope.
	Metrics bool `yaml:"metrics" json:"metrics"`
}

// defaultAuthFile is what an auth file starts from.
func defaultAuthFile() authFile {
	return authFile{Public: publicRoutes{Health: true, Metrics: true}}
}

// Validate reports every problem of the file at once, each placed at its
// key, so that the loader names its line.
func (f authFile) Validate() error {
	var errs []error
	if f.JWT != nil {
		j := f.JWT
		if j.JWKSFile != "" && j.JWKSURL != "" {
			errs = append(errs, config.Within("jwt", &auth.ConfigError{Path: []string{"jwks_url"}, Problem: "give jwks_file or jwks_url, not both"}))
		}
		if j.JWKSMaxAge < 0 {
			errs = append(errs, config.Within("jwt", &auth.ConfigError{Path: []string{"jwks_refresh"}, Problem: "must not be negative"}))
		}
	}
	// The rest is checked as the authenticator will see it (without
	// loading the key set: that is I/O, done when it is applied).
	errs = append(errs, f.authConfig(nil).Validate())
	if err := f.CORS.Validate(); err != nil {
		errs = append(errs, config.Within("cors", err))
	}
	return errors.Join(errs...)
}

// authConfig is the authenticator configuration of f with keys as its
// key set (nil: a placeholder that stands for jwks_file or jwks_url).
func (f authFile) authConfig(keys auth.KeySet) auth.Config {
	c := auth.Config{APIKeys: f.APIKeys}
	if f.JWT != nil {
		c.JWT = &auth.JWTConfig{Issuer: f.JWT.Issuer, Audience: f.JWT.Audience, Leeway: f.JWT.Leeway, Secret: f.JWT.HS256, Keys: keys}
		if keys == nil && (f.JWT.JWKSFile != "" || f.JWT.JWKSURL != "") {
			c.JWT.Keys = noKeys{}
		}
	}
	return c
}

// noKeys stands for a key set not loaded yet.
type noKeys struct{}

func (noKeys) Key(context.Context, string, string) (crypto.PublicKey, error) {
	return nil, &auth.KeyError{Reason: "no key set is loaded"}
}

// withEnv returns f with the MILLRACE_JWT_* settings of c on top.
func (c securityConfig) withEnv(f authFile) authFile {
	if !c.JWTSecret.IsSet() && c.JWTIssuer == "" && c.JWTAudience == "" && c.JWKS == "" {
		return f
	}
	j := jwtSection{}
	if f.JWT != nil {
		j = *f.JWT
	}
	if c.JWTSecret.IsSet() {
		j.HS256 = c.JWTSecret
	}
	if c.JWTIssuer != "" {
		j.Issuer = c.JWTIssuer
	}
	if c.JWTAudience != "" {
		j.Audience = c.JWTAudience
	}
	if c.JWKS != "" {
		j.JWKSFile, j.JWKSURL = "", ""
		if strings.HasPrefix(c.JWKS, "https://") || strings.HasPrefix(c.JWKS, "http://") {
			j.JWKSURL = c.JWKS
		} else {
			j.JWKSFile = c.JWKS
		}
	}
	f.JWT = &j
	return f
}

// enabled reports whether c turns authentication on.
func (c securityConfig) enabled() bool {
	return c.AuthFile != "" || c.JWTSecret.IsSet() || c.JWTIssuer != "" || c.JWTAudience != "" || c.JWKS != ""
}

// security is the security wiring of a running process.
type security struct {
	cfg    securityConfig
	logger *slog.Logger
	live   *config.Live[authFile] // nil without an auth file
	authn  *auth.Authenticator    // nil while authentication is off
	file   atomic.Pointer[authFile]
	cors   atomic.Pointer[http.Handler] // the Secure wrapper of the CORS in force
	next   http.Handler                 // the guarded handler, under the CORS wrapper

	audit *auditor
}

// newSecurity reads the auth file and the MILLRACE_JWT_* settings, checks
// that the HTTP address may be served as configured, and builds the
// authenticator. Nothing is started.
func newSecurity(ctx context.Context, cfg devConfig, logger *slog.Logger) (*security, error) {
	sc := cfg.Security
	s := &security{cfg: sc, logger: logger.With("component", "auth")}
	if err := checkExposure(cfg.HTTPAddr, sc.enabled(), sc.Insecure); err != nil {
		return nil, err
	}
	f := sc.withEnv(defaultAuthFile())
	if sc.AuthFile != "" {
		warnIfReadable(sc.AuthFile, s.logger)
		live, err := config.New(config.NewFile(sc.AuthFile), config.Options[authFile]{
			Defaults: defaultAuthFile,
			Validate: func(f authFile) error { return sc.withEnv(f).Validate() },
			Logger:   s.logger,
		})
		if err != nil {
			return nil, fmt.Errorf("configuration: %w", err)
		}
		first, err := live.Load(ctx)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("load auth file %s: it does not exist; make it with `millrace keys create --auth-file %s …`: %w", sc.AuthFile, sc.AuthFile, err)
			}
			return nil, fmt.Errorf("load auth file %s (nothing was started):\n%w", sc.AuthFile, err)
		}
		s.live = live
		f = sc.withEnv(first)
	} else if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("configuration of JWT from %s…: %w", "MILLRACE_JWT_", err)
	}
	if sc.enabled() {
		acfg, err := s.load(ctx, f)
		if err != nil {
			return nil, err
		}
		if s.authn, err = auth.NewAuthenticator(acfg); err != nil {
			return nil, fmt.Errorf("configure authentication: %w", err)
		}
	}
	s.file.Store(&f)
	return s, nil
}

// load builds the authenticator configuration of f, loading its key set.
func (s *security) load(ctx context.Context, f authFile) (auth.Config, error) {
	var keys auth.KeySet
	if f.JWT != nil && (f.JWT.JWKSFile != "" || f.JWT.JWKSURL != "") {
		src := f.JWT.JWKSFile + f.JWT.JWKSURL
		set, err := jwks.Load(ctx, src, jwks.Options{Refresh: f.JWT.JWKSMaxAge, Logger: s.logger})
		if err != nil {
			return auth.Config{}, fmt.Errorf("configure authentication: %w", err)
		}
		keys = set
	}
	return f.authConfig(keys), nil
}

// apply puts a changed auth file in force.
func (s *security) apply(ctx context.Context, f authFile) error {
	f = s.cfg.withEnv(f)
	acfg, err := s.load(ctx, f)
	if err != nil {
		return err
	}
	if err := s.authn.Update(acfg); err != nil {
		return err
	}
	if err := s.setCORS(f.CORS); err != nil {
		return err
	}
	s.file.Store(&f)
	s.logger.InfoContext(ctx, "authentication changed", slog.String("accepts", s.authn.Describe()))
	return nil
}

// watch applies each change of the auth file until ctx ends. Losing the
// watch does not stop the process: the settings in force stay.
func (s *security) watch(ctx context.Context) error {
	if s.live == nil {
		return nil
	}
	if err := s.live.Run(ctx, func(f authFile) error { return s.apply(ctx, f) }); err != nil {
		s.logger.ErrorContext(ctx, "the auth file is no longer watched; the settings in force stay until restart",
			slog.String("source", s.cfg.AuthFile), slog.Any("error", err))
	}
	return nil
}

// wrap puts the process's HTTP handler behind the security headers, CORS
// and the guard, with gw's routes and the admin, query-edge and
// operational routes of policyRules. gw names the requirement of every
// other route: the gateway, or a role's own routes (roles.go). publisher,
// when not nil, carries the audit events of admin actions.
func (s *security) wrap(h http.Handler, gw requirementNamer, publisher message.Publisher, reg prometheus.Registerer) (http.Handler, error) {
	s.audit = &auditor{logger: s.logger, publisher: publisher}
	guard, err := auth.NewGuard(auth.GuardConfig{
		Authenticator: s.authn,
		Policy:        s.policy(gw),
		Audit:         s.audit.record,
		Logger:        s.logger,
		Registerer:    reg,
	})
	if err != nil {
		return nil, err
	}
	s.next = guard.Handler(h)
	if err := s.setCORS(s.file.Load().CORS); err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*s.cors.Load()).ServeHTTP(w, r)
	}), nil
}

func (s *security) setCORS(c gateway.CORS) error {
	if s.next == nil {
		return nil // wrap sets it
	}
	h, err := gateway.Secure(s.next, c)
	if err != nil {
		return config.Within("cors", err)
	}
	s.cors.Store(&h)
	return nil
}

// mountRule is what the routes of one mount need: routes the process
// serves beside the gateway's.
type mountRule struct {
	// methods the rule covers; none covers every method.
	methods []string
	// path is an exact path, or a prefix when it ends in a slash.
	path string
	// need returns the requirement under the auth file in force.
	need func(authFile) auth.Requirement
	// doc describes the requirement, served what serves the routes, and
	// sample is a path the rule covers, for docs/security.md and tests.
	doc, served, sample string
}

// policyRules are the mounts of the process, checked in order before the
// gateway's routes. Every path under /admin/ needs the admin scope,
// whoever mounts it.
func policyRules() []mountRule {
	get := []string{http.MethodGet, http.MethodHead}
	admin := "admin APIs (poison queue, projections and replay, handlers, configuration, and any mounted later)"
	return []mountRule{
		{get, "/healthz", func(f authFile) auth.Requirement {
			if f.Public.Health {
				return auth.Public()
			}
			return auth.Scope(auth.ScopeHealthRead)
		}, "public; `" + auth.ScopeHealthRead + "` with `public.health: false`", "health check", "/healthz"},
		{get, "/metrics", func(f authFile) auth.Requirement {
			if f.Public.Metrics {
				return auth.Public()
			}
			return auth.Scope(auth.ScopeMetricsRead)
		}, "public; `" + auth.ScopeMetricsRead + "` with `public.metrics: false`", "Prometheus metrics", "/metrics"},
		{nil, "/admin", fixed(auth.ScopeAdmin), "`" + auth.ScopeAdmin + "`", admin, "/admin"},
		{nil, "/admin/", fixed(auth.ScopeAdmin), "`" + auth.ScopeAdmin + "`", admin, "/admin/poison"},
		{[]string{http.MethodPut}, queryapi.Prefix + "commands/", fixed(auth.ScopeCommandsWrite), "`" + auth.ScopeCommandsWrite + "`",
			"query edge: a remote gateway records an accepted command", queryapi.Prefix + "commands/0198d6a4-6f6e-7c3a-9c1e-2f1b8c9d0a11"},
		{nil, queryapi.Prefix, fixed(auth.ScopeQueriesRead), "`" + auth.ScopeQueriesRead + "`",
			"query edge: remote gateways read the projections", queryapi.Prefix + "orders/0198d6a4-6f6e-7c3a-9c1e-2f1b8c9d0a11"},
	}
}

func fixed(scope string) func(authFile) auth.Requirement {
	return func(authFile) auth.Requirement { return auth.Scope(scope) }
}

// matches reports whether the rule covers a request for method and the
// cleaned path p.
func (m mountRule) matches(method, p string) bool {
	if len(m.methods) > 0 && !containsString(m.methods, method) {
		return false
	}
	if strings.HasSuffix(m.path, "/") {
		return strings.HasPrefix(p, m.path)
	}
	return p == m.path
}

// requirementNamer is the gateway's part of the policy.
type requirementNamer interface {
	Requirement(*http.Request) auth.Requirement
}

// policy says what each request needs: the first mount rule that matches
// its cleaned path, else what the gateway says.
func (s *security) policy(gw requirementNamer) func(*http.Request) auth.Requirement {
	rules := policyRules()
	return func(r *http.Request) auth.Requirement {
		p := cleanPath(r.URL.Path)
		for _, m := range rules {
			if m.matches(r.Method, p) {
				return m.need(*s.file.Load())
			}
		}
		return gw.Requirement(r)
	}
}

// cleanPath is the path a mux serves for p: "/admin/../v1" is "/v1",
// "//admin" is "/admin". Matching cleaned paths keeps a crafted path from
// slipping past a prefix.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// describe says how requests are authenticated, for the ready banner.
func (s *security) describe() string {
	if s.authn == nil {
		return "OFF: every request is let in (no --auth-file, no MILLRACE_JWT_*)"
	}
	desc := s.authn.Describe()
	if s.live != nil {
		desc += "; " + s.cfg.AuthFile + " watched for changes"
	}
	return desc
}

// warnOpen logs, at start, that authentication is off.
func (s *security) warnOpen(addr string) {
	if s.authn != nil {
		return
	}
	if s.cfg.Insecure && !isLoopbackAddr(addr) {
		s.logger.Warn("authentication is OFF on a non-loopback address (--insecure): anyone who can reach it can send commands, read data and use the admin API",
			slog.String("addr", addr))
		return
	}
	s.logger.Warn("authentication is OFF: every request is let in; fine on a loopback address for development, configure --auth-file before exposing it",
		slog.String("addr", addr))
}

// checkExposure refuses to serve a non-loopback address without
// authentication, unless insecure says the operator means it.
func checkExposure(addr string, authEnabled, insecure bool) error {
	if authEnabled || insecure || isLoopbackAddr(addr) {
		return nil
	}
	return fmt.Errorf("refusing to listen on %s without authentication: that address is reachable from other machines. "+
		"Configure authentication (--auth-file, or %s with %s and %s; see docs/security.md), "+
		"listen on 127.0.0.1, or pass --insecure if exposing an unauthenticated gateway is really meant",
		addr, envJWTSecret, envJWTIssuer, envJWTAudience)
}

// isLoopbackAddr reports whether host:port names a loopback host only. An
// empty host or an unspecified address (0.0.0.0, ::) listens everywhere.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// warnIfReadable warns when the auth file can be read by other users: it
// holds key hashes and may hold the JWT secret.
func warnIfReadable(file string, logger *slog.Logger) {
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	logger.Warn("the auth file can be read by other users; restrict it with chmod 600",
		slog.String("file", file), slog.String("mode", fi.Mode().Perm().String()))
}

// newHTTPServer is the HTTP server of the process, with the abuse limits
// of l, and the listener it serves, bounded to l.MaxConnections.
func newHTTPServer(h http.Handler, l httpLimits, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// Audit of admin actions.

// auditTopic carries an event per admin action that changed something or
// was refused.
const auditTopic = "millrace.audit"

// auditEventType is the ce_type of an audit event.
const auditEventType = "millrace.admin-action.v1"

// auditor records admin actions: a log record for each (info for changes
// and refusals, debug for reads), and an event on auditTopic for changes
// and refusals when a publisher is set.
type auditor struct {
	logger    *slog.Logger
	publisher message.Publisher
}

// auditEvent is the payload of an audit event.
type auditEvent struct {
	Subject      string    `json:"subject"`
	AuthType     string    `json:"auth_type"`
	CredentialID string    `json:"credential_id,omitempty"`
	Method       string    `json:"method"`
	Path         string    `json:"path"`
	Status       int       `json:"status"`
	Remote       string    `json:"remote"`
	At           time.Time `json:"at"`
	DurationMS   int64     `json:"duration_ms"`
}

func (a *auditor) record(ctx context.Context, e auth.AuditEntry) {
	read := e.HTTPMethod == http.MethodGet || e.HTTPMethod == http.MethodHead
	refused := e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
	level := slog.LevelInfo
	switch {
	case refused:
		level = slog.LevelWarn
	case read:
		level = slog.LevelDebug
	}
	a.logger.Log(ctx, level, "admin action",
		slog.String("subject", e.Principal.Subject), slog.String("auth_type", string(e.Principal.Method)),
		slog.String("credential_id", e.Principal.CredentialID),
		slog.String("method", e.HTTPMethod), slog.String("path", e.Path), slog.Int("status", e.Status),
		slog.String("remote", e.Remote), slog.Duration("duration", e.Duration))
	if a.publisher == nil || (read && !refused) {
		return
	}
	payload, err := json.Marshal(auditEvent{
		Subject: e.Principal.Subject, AuthType: string(e.Principal.Method), CredentialID: e.Principal.CredentialID,
		Method: e.HTTPMethod, Path: e.Path, Status: e.Status, Remote: e.Remote,
		At: e.Time.UTC(), DurationMS: e.Duration.Milliseconds(),
	})
	if err != nil {
		a.logger.ErrorContext(ctx, "encode audit event", slog.Any("error", err))
		return
	}
	msg := message.NewMessage(uuid.NewString(), payload)
	msg.Metadata.Set(cloudevents.Type, auditEventType)
	msg.Metadata.Set(cloudevents.Source, "/millrace/admin")
	msg.Metadata.Set(cloudevents.SpecVersion, cloudevents.Version)
	msg.Metadata.Set(cloudevents.Time, e.Time.UTC().Format(time.RFC3339Nano))
	msg.Metadata.Set(cloudevents.ContentType, cloudevents.JSON)
	if e.Principal.Subject != "" {
		msg.Metadata.Set(cloudevents.Subject, e.Principal.Subject)
		msg.Metadata.Set(cloudevents.PartitionKey, e.Principal.Subject)
		msg.Metadata.Set(gateway.AuthTypeAttribute, string(e.Principal.Method))
		msg.Metadata.Set(gateway.AuthIDAttribute, e.Principal.Subject)
	}
	msg.SetContext(context.WithoutCancel(ctx))
	if err := a.publisher.Publish(auditTopic, msg); err != nil {
		a.logger.ErrorContext(ctx, "publish audit event; the log record above stands", slog.Any("error", err))
	}
}

// bearerTransport adds a credential to every request of a client of a
// millrace HTTP API (the poison, replay and config commands, a gateway
// reading a remote query edge).
type bearerTransport struct {
	token secret.String
	next  http.RoundTripper
}

func (t bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.token.Reveal())
	return t.next.RoundTrip(r)
}

// envToken is the variable the admin commands take their credential from:
// an API key or a JWT with the admin scope.
const envToken = "MILLRACE_TOKEN"

// adminHTTPClient is the HTTP client of the admin commands: it sends the
// credential in MILLRACE_TOKEN, when set.
func adminHTTPClient(getenv func(string) string) *http.Client {
	c := &http.Client{Timeout: 30 * time.Second}
	if tok := strings.TrimSpace(getenv(envToken)); tok != "" {
		c.Transport = bearerTransport{token: secret.String(tok), next: http.DefaultTransport}
	}
	return c
}

// setDefaults fills in the HTTP limits left zero (a devConfig built in
// code rather than from flags).
func (c *securityConfig) setDefaults() {
	h := &c.HTTP
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&h.ReadHeaderTimeout, 5 * time.Second}, {&h.ReadTimeout, 30 * time.Second}, {&h.WriteTimeout, 60 * time.Second}, {&h.IdleTimeout, 120 * time.Second}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if h.MaxHeaderBytes == 0 {
		h.MaxHeaderBytes = 64 << 10
	}
	if h.MaxConnections == 0 {
		h.MaxConnections = 1024
	}
}

// routeRow is one row of the route table of docs/security.md: routes, what
// they need, and a request they cover (for tests).
type routeRow struct {
	Methods []string // empty: every method
	Path    string   // a template; a prefix ends in "/…"
	Need    string   // as docs/security.md says it
	Served  string
	// Requirement is what the row needs under the default auth file.
	Requirement              auth.Requirement
	SampleMethod, SamplePath string
}

// routeTable lists every route of the process with what it needs: the
// mounts of policyRules, then the gateway's routes (gateway.RouteRequirements,
// walked from its router) that no mount shadows, then everything else.
// It is built from the data the policy uses, so it cannot drift from it.
func routeTable() []routeRow {
	def := defaultAuthFile()
	rules := policyRules()
	var rows []routeRow
	for _, m := range rules {
		p := m.path
		if strings.HasSuffix(p, "/") {
			p += "…"
		}
		method := http.MethodGet
		if len(m.methods) > 0 {
			method = m.methods[0]
		}
		rows = append(rows, routeRow{Methods: m.methods, Path: p, Need: m.doc, Served: m.served,
			Requirement: m.need(def), SampleMethod: method, SamplePath: m.sample})
	}
	for _, r := range gateway.RouteRequirements() {
		shadowed := false
		for _, m := range rules {
			shadowed = shadowed || m.matches(r.Method, r.Path)
		}
		if shadowed {
			continue
		}
		methods := []string{r.Method}
		if r.Method == http.MethodGet {
			methods = append(methods, http.MethodHead)
		}
		need := "`" + r.Requirement.String() + "`"
		if strings.Count(r.Requirement.Scope, ":") >= 2 { // a refined scope: its parent grants it too
			need += " or `" + r.Requirement.Scope[:strings.LastIndexByte(r.Requirement.Scope, ':')] + "`"
		}
		rows = append(rows, routeRow{Methods: methods, Path: r.Path, Need: need, Served: "gateway",
			Requirement: r.Requirement, SampleMethod: r.Method, SamplePath: samplePath(r.Path)})
	}
	rows = append(rows, routeRow{Path: "any other path", Need: "valid credentials, any scope",
		Served: "404 or 405, told only to an authenticated caller", Requirement: auth.Authenticated(),
		SampleMethod: http.MethodGet, SamplePath: "/v2/unknown"})
	return rows
}

// samplePath fills a route template with sample values.
func samplePath(tpl string) string {
	return strings.ReplaceAll(tpl, "{id}", "0198d6a4-6f6e-7c3a-9c1e-2f1b8c9d0a11")
}

// routeTableMarkdown is the route table as docs/security.md shows it.
func routeTableMarkdown() string {
	var b strings.Builder
	b.WriteString("| Method | Path | Needs | Served by |\n|---|---|---|---|\n")
	for _, r := range routeTable() {
		methods := "any"
		if len(r.Methods) > 0 {
			methods = strings.Join(r.Methods, ", ")
		}
		path := "`" + r.Path + "`"
		if !strings.HasPrefix(r.Path, "/") {
			path = r.Path
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", methods, path, r.Need, r.Served)
	}
	return b.String()
}
