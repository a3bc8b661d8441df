package consul

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// DefaultAddress is the agent address when CONSUL_HTTP_ADDR is unset, as
// Consul's own tools assume.
const DefaultAddress = "127.0.0.1:8500"

// Environment variables ConfigFromEnv reads. All but CONSUL_DATACENTER are
// Consul's own, with the meaning Consul's CLI gives them; Consul's CLI takes
// the datacenter as a flag only, so millrace names one variable for it.
const (
	EnvHTTPAddr      = "CONSUL_HTTP_ADDR"
	EnvHTTPToken     = "CONSUL_HTTP_TOKEN"
	EnvHTTPTokenFile = "CONSUL_HTTP_TOKEN_FILE"
	EnvHTTPSSL       = "CONSUL_HTTP_SSL"
	EnvHTTPSSLVerify = "CONSUL_HTTP_SSL_VERIFY"
	EnvCACert        = "CONSUL_CACERT"
	EnvCAPath        = "CONSUL_CAPATH"
	EnvClientCert    = "CONSUL_CLIENT_CERT"
	EnvClientKey     = "CONSUL_CLIENT_KEY"
	EnvTLSServerName = "CONSUL_TLS_SERVER_NAME"
	EnvDatacenter    = "CONSUL_DATACENTER"
)

// Config is how to reach a Consul agent.
type Config struct {
	// Address of the agent's HTTP API: host:port, optionally prefixed with
	// http:// or https:// (which sets Scheme), or unix:///path/to/socket.
	// Default 127.0.0.1:8500.
	Address string
	// Scheme is "http" or "https". Default http.
	Scheme string
	// Token is the ACL token sent with every request. TokenFile, when set,
	// is read instead.
	Token     string
	TokenFile string
	// Datacenter to query; default the agent's own.
	Datacenter string
	// TLS configures https.
	TLS TLSConfig
}

// TLSConfig is the TLS side of Config.
type TLSConfig struct {
	// CAFile or CAPath verify the agent's certificate; default the
	// system's roots.
	CAFile string
	CAPath string
	// CertFile and KeyFile are the client certificate, for agents that
	// verify incoming connections. Both or neither.
	CertFile string
	KeyFile  string
	// ServerName is the name to expect in the agent's certificate when it
	// differs from the host of Address.
	ServerName string
	// InsecureSkipVerify turns off verification of the agent's
	// certificate. For trials only.
	InsecureSkipVerify bool
}

// ConfigFromEnv reads the standard CONSUL_* variables through getenv (pass
// os.Getenv): CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE,
// CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY, CONSUL_CACERT, CONSUL_CAPATH,
// CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, and
// millrace's CONSUL_DATACENTER. It reports every malformed value at once.
// The result has its defaults set but is not validated.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		Address:    strings.TrimSpace(getenv(EnvHTTPAddr)),
		Token:      strings.TrimSpace(getenv(EnvHTTPToken)),
		TokenFile:  getenv(EnvHTTPTokenFile),
		Datacenter: strings.TrimSpace(getenv(EnvDatacenter)),
		TLS: TLSConfig{
			CAFile:     getenv(EnvCACert),
			CAPath:     getenv(EnvCAPath),
			CertFile:   getenv(EnvClientCert),
			KeyFile:    getenv(EnvClientKey),
			ServerName: getenv(EnvTLSServerName),
		},
	}
	var errs []error
	if v := getenv(EnvHTTPSSL); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want true or false", EnvHTTPSSL, v))
		} else if on {
			c.Scheme = "https"
		}
	}
	if v := getenv(EnvHTTPSSLVerify); v != "" {
		verify, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want true or false", EnvHTTPSSLVerify, v))
		} else {
			c.TLS.InsecureSkipVerify = !verify
		}
	}
	c.setDefaults()
	return c, errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.Address == "" {
		c.Address = DefaultAddress
	}
	if scheme, rest, ok := strings.Cut(c.Address, "://"); ok && (scheme == "http" || scheme == "https") {
		if scheme == "https" || c.Scheme == "" {
			c.Scheme = scheme
		}
		c.Address = rest
	}
	if c.Scheme == "" {
		c.Scheme = "http"
	}
}

// Validate reports every problem of c at once. Call it after setDefaults
// (ConfigFromEnv and NewClient do).
func (c Config) Validate() error {
	var errs []error
	if !strings.HasPrefix(c.Address, "unix://") {
		if _, port, err := net.SplitHostPort(c.Address); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("consul address %q: want host:port, e.g. 127.0.0.1:8500", c.Address))
		}
	}
	if c.Scheme != "http" && c.Scheme != "https" {
		errs = append(errs, fmt.Errorf("consul scheme %q: want http or https", c.Scheme))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, fmt.Errorf("consul client certificate: give both %s and %s, or neither", EnvClientCert, EnvClientKey))
	}
	return errors.Join(errs...)
}

// URL is the agent's base URL, for messages.
func (c Config) URL() string {
	if strings.HasPrefix(c.Address, "unix://") {
		return c.Address
	}
	return c.Scheme + "://" + c.Address
}

// String describes c for logs, without the token.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("consul at " + c.URL())
	if c.Datacenter != "" {
		b.WriteString(", datacenter " + c.Datacenter)
	}
	switch {
	case c.TokenFile != "":
		b.WriteString(", token from " + c.TokenFile)
	case c.Token != "":
		b.WriteString(", token set")
	default:
		b.WriteString(", no token")
	}
	return b.String()
}

// NewClient validates cfg and builds a client of the agent. It does not
// contact the agent. The client is safe for concurrent use and holds only
// idle connections; it needs no closing.
//
// One caveat of the Consul API library: with no Token and no TokenFile it
// falls back to CONSUL_HTTP_TOKEN(_FILE) of the process environment by
// itself, which for a process configured by ConfigFromEnv(os.Getenv) are
// the same values.
func NewClient(cfg Config) (*api.Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configure consul client: %w", err)
	}
	tlsCfg := api.TLSConfig{
		Address:            cfg.TLS.ServerName,
		CAFile:             cfg.TLS.CAFile,
		CAPath:             cfg.TLS.CAPath,
		CertFile:           cfg.TLS.CertFile,
		KeyFile:            cfg.TLS.KeyFile,
		InsecureSkipVerify: cfg.TLS.InsecureSkipVerify,
	}
	transport := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	httpClient, err := api.NewHttpClient(transport, tlsCfg)
	if err != nil {
		return nil, fmt.Errorf("configure consul client TLS: %w", err)
	}
	address := cfg.Address
	if cfg.Scheme == "https" && !strings.HasPrefix(address, "unix://") {
		address = "https://" + address
	}
	client, err := api.NewClient(&api.Config{
		Address:    address,
		Scheme:     cfg.Scheme,
		Datacenter: cfg.Datacenter,
		Token:      cfg.Token,
		TokenFile:  cfg.TokenFile,
		TLSConfig:  tlsCfg,
		Transport:  transport,
		HttpClient: httpClient,
	})
	if err != nil {
		return nil, fmt.Errorf("create consul client for %s: %w", cfg.URL(), err)
	}
	return client, nil
}
