package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/millrace/millrace/platform/auth/secret"
)

// The SASL mechanisms the clients speak.
const (
	SASLPlain       = "PLAIN"
	SASLSCRAMSHA256 = "SCRAM-SHA-256"
	SASLSCRAMSHA512 = "SCRAM-SHA-512"
)

// DefaultCheckTimeout bounds Check when its context has no deadline.
const DefaultCheckTimeout = 10 * time.Second

// ErrAuthentication is wrapped by the error of Check when a broker refused
// the SASL credentials.
var ErrAuthentication = errors.New("the broker refused the SASL credentials")

// SASL authenticates the clients to the brokers. The zero value uses no
// SASL.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty turns
	// SASL off. PLAIN sends the password as it is: use it over TLS only.
	Mechanism string `yaml:"mechanism" json:"mechanism"`
	// Username and Password are the credentials.
	Username string        `yaml:"username" json:"username"`
	Password secret.String `yaml:"password" json:"password" secret:"true"`
}

// Enabled reports whether s turns SASL on.
func (s SASL) Enabled() bool { return s.Mechanism != "" }

// Validate reports every problem of s at once.
func (s SASL) Validate() error {
	if !s.Enabled() {
		if s.Username != "" || s.Password.IsSet() {
			return errors.New("kafka sasl: a username or password is set but no mechanism; set the mechanism to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
		return nil
	}
	var errs []error
	switch s.Mechanism {
	case SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512:
	default:
		errs = append(errs, fmt.Errorf("kafka sasl mechanism %q: want %s, %s or %s", s.Mechanism, SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512))
	}
	if s.Username == "" {
		errs = append(errs, errors.New("kafka sasl username: required with a mechanism"))
	}
	if !s.Password.IsSet() {
		errs = append(errs, errors.New("kafka sasl password: required with a mechanism"))
	}
	return errors.Join(errs...)
}

// describe names the mechanism and user for messages.
func (s SASL) describe() string {
	if !s.Enabled() {
		return "without SASL"
	}
	return fmt.Sprintf("with SASL %s as %q", s.Mechanism, s.Username)
}

// TLS encrypts the connections to the brokers. The zero value uses
// plaintext.
type TLS struct {
	// Enabled turns TLS on. Setting any file below turns it on too.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// CAFile is a PEM bundle of the authorities that sign the brokers'
	// certificates; the system's roots when empty.
	CAFile string `yaml:"ca_file" json:"ca_file"`
	// CertFile and KeyFile are the PEM client certificate and key, for
	// brokers that authenticate clients by certificate. Both or neither.
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// ServerName is the name expected in the brokers' certificates when
	// it differs from the host of their addresses.
	ServerName string `yaml:"server_name" json:"server_name"`
	// InsecureSkipVerify turns off verification of the brokers'
	// certificates. For trials only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify" json:"insecure_skip_verify"`
}

// On reports whether t turns TLS on.
func (t TLS) On() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != ""
}

// Validate reports every problem of t at once; it reads the files.
func (t TLS) Validate() error {
	if !t.On() {
		return nil
	}
	_, err := t.config()
	return err
}

// config builds the tls.Config of t.
func (t TLS) config() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // an explicit, documented choice of the operator
	}
	var errs []error
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("kafka tls ca file: %w", err))
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("kafka tls ca file %s: no PEM certificate in it", t.CAFile))
			}
			cfg.RootCAs = pool
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		errs = append(errs, errors.New("kafka tls client certificate: give both the cert file and the key file, or neither"))
	case t.CertFile != "":
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("kafka tls client certificate %s: %w", t.CertFile, err))
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// describe names the transport for messages.
func (t TLS) describe() string {
	if !t.On() {
		return "plaintext"
	}
	return "TLS"
}

// failingTLS is the TLS configuration of a Config whose files went bad
// after Validate: every handshake fails with why, instead of falling back
// to anything weaker.
func failingTLS(why error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    x509.NewCertPool(), // trusts nobody
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return nil, why
		},
	}
}

// applySarama puts c's SASL and TLS settings on a Sarama configuration.
func (c Config) applySarama(sc *sarama.Config) {
	if c.TLS.On() {
		tc, err := c.TLS.config()
		if err != nil {
			tc = failingTLS(err)
		}
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = tc
	}
	if !c.SASL.Enabled() {
		return
	}
	sc.Net.SASL.Enable = true
	sc.Net.SASL.Handshake = true
	sc.Net.SASL.User = c.SASL.Username
	sc.Net.SASL.Password = c.SASL.Password.Reveal()
	switch c.SASL.Mechanism {
	case SASLSCRAMSHA256:
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{mechanism: SASLSCRAMSHA256} }
	case SASLSCRAMSHA512:
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{mechanism: SASLSCRAMSHA512} }
	default:
		sc.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	}
}

// kgoSecurity returns the franz-go options for c's SASL and TLS settings.
func (c Config) kgoSecurity() []kgo.Opt {
	var opts []kgo.Opt
	if c.TLS.On() {
		tc, err := c.TLS.config()
		if err != nil {
			tc = failingTLS(err)
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := c.SASL.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts
}

// mechanism returns the franz-go SASL mechanism of s, or nil.
func (s SASL) mechanism() sasl.Mechanism {
	switch s.Mechanism {
	case SASLPlain:
		return plain.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsMechanism()
	case SASLSCRAMSHA256:
		return scram.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsSha256Mechanism()
	case SASLSCRAMSHA512:
		return scram.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsSha512Mechanism()
	}
	return nil
}

// Check connects to the brokers of cfg once, with its TLS and SASL
// settings, and asks for the cluster's metadata. Call it at start, before
// building publishers and subscribers: a wrong password or a broker that
// speaks no TLS is then one clear error that names the brokers and the
// mechanism, instead of clients that retry for ever. Without a deadline
// on ctx it gives up after DefaultCheckTimeout.
func Check(ctx context.Context, cfg Config) error {
	cfg, err := cfg.prepare()
	if err != nil {
		return err
	}
	what := fmt.Sprintf("connect to kafka at %s (%s, %s)", strings.Join(cfg.Brokers, ","), cfg.TLS.describe(), cfg.SASL.describe())
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCheckTimeout)
		defer cancel()
	}
	cl, err := kgo.NewClient(cfg.kgoOptions(kgo.RequestRetries(1))...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer cl.Close()
	err = cl.Ping(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.IllegalSaslState):
		return fmt.Errorf("%s: %w: check the username and password: %w", what, ErrAuthentication, err)
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Errorf("%s: the broker does not offer %s; use a mechanism it enables: %w", what, cfg.SASL.Mechanism, err)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: no answer before the deadline; check the addresses, and whether the brokers want TLS or SASL: %w", what, err)
	case isConnectionClosed(err) && answersUnauthenticated(ctx, cfg):
		// The broker speaks Kafka over this transport, and closed the
		// connection once it came to authentication: some brokers close
		// instead of answering SASL_AUTHENTICATION_FAILED.
		if cfg.SASL.Enabled() {
			return fmt.Errorf("%s: %w: the broker closed the connection during %s authentication; check the username and password: %w",
				what, ErrAuthentication, cfg.SASL.Mechanism, err)
		}
		return fmt.Errorf("%s: the broker answers but closes the connection before serving requests: it likely requires SASL; "+
			"set a mechanism, username and password: %w", what, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// isConnectionClosed reports an error of a connection the broker closed.
func isConnectionClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

// answersUnauthenticated reports whether a broker of cfg answers an
// ApiVersions request, which Kafka serves before authentication, over
// cfg's transport but without SASL.
func answersUnauthenticated(ctx context.Context, cfg Config) bool {
	cfg.SASL = SASL{}
	cl, err := kgo.NewClient(cfg.kgoOptions(kgo.RequestRetries(0))...)
	if err != nil {
		return false
	}
	defer cl.Close()
	_, err = kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	return err == nil
}

// scramClient is Sarama's SCRAM client on franz-go's implementation of
// the exchange (RFC 5802), so that both clients share one.
type scramClient struct {
	mechanism string
	user      string
	pass      string
	session   sasl.Session
	done      bool
}

func (s *scramClient) Begin(user, pass, _ string) error {
	if user == "" || pass == "" {
		return errors.New("scram: username and password are required")
	}
	s.user, s.pass = user, pass
	return nil
}

func (s *scramClient) Step(challenge string) (string, error) {
	if s.session == nil {
		auth := scram.Auth{User: s.user, Pass: s.pass}
		mech := auth.AsSha256Mechanism()
		if s.mechanism == SASLSCRAMSHA512 {
			mech = auth.AsSha512Mechanism()
		}
		session, first, err := mech.Authenticate(context.Background(), "")
		if err != nil {
			return "", fmt.Errorf("scram: start: %w", err)
		}
		s.session = session
		return string(first), nil
	}
	done, next, err := s.session.Challenge([]byte(challenge))
	if err != nil {
		return "", fmt.Errorf("scram: %w", err)
	}
	s.done = done
	return string(next), nil
}

func (s *scramClient) Done() bool { return s.done }
