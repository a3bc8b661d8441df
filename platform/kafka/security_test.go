package kafka_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/millrace/millrace/platform/auth/secret"
	"github.com/millrace/millrace/platform/kafka"
)

// startSASLBroker starts a kfake broker on a free loopback port that
// requires SASL, with one user per mechanism.
func startSASLBroker(t *testing.T, extra ...kfake.Opt) []string {
	t.Helper()
	opts := append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.EnableSASL(),
		kfake.Superuser(kafka.SASLPlain, "plain-user", "plain-pass"),
		kfake.Superuser(kafka.SASLSCRAMSHA256, "scram256-user", "scram256-pass"),
		kfake.Superuser(kafka.SASLSCRAMSHA512, "scram512-user", "scram512-pass"),
	}, extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("start SASL broker: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// roundTrip creates a topic (franz-go admin), publishes a message
// (Sarama producer) and consumes it in a group (Sarama consumer group):
// every client the platform uses, under cfg's security settings.
func roundTrip(t *testing.T, cfg kafka.Config, topic string) {
	t.Helper()
	ctx := testContext(t, 60*time.Second)
	ensureTopic(t, ctx, cfg, topic, 1)
	pub := newPublisher(t, cfg)
	sent := event("key-1", `{"n":1}`)
	if err := pub.Publish(topic, sent); err != nil {
		t.Fatalf("publish: %v", err)
	}
	ch, _ := subscribe(t, ctx, cfg, "group-"+topic, topic)
	got := receive(t, ctx, ch, 1)
	if got[0].UUID != sent.UUID || string(got[0].Payload) != `{"n":1}` {
		t.Fatalf("received %s %s, want %s %s", got[0].UUID, got[0].Payload, sent.UUID, sent.Payload)
	}
}

func TestSASL(t *testing.T) {
	brokers := startSASLBroker(t)
	cases := []struct {
		name      string
		sasl      kafka.SASL
		wantAuthn bool // a refusal of the credentials
	}{
		{"plain right", kafka.SASL{Mechanism: kafka.SASLPlain, Username: "plain-user", Password: "plain-pass"}, false},
		{"scram-sha-256 right", kafka.SASL{Mechanism: kafka.SASLSCRAMSHA256, Username: "scram256-user", Password: "scram256-pass"}, false},
		{"scram-sha-512 right", kafka.SASL{Mechanism: kafka.SASLSCRAMSHA512, Username: "scram512-user", Password: "scram512-pass"}, false},
		{"plain wrong password", kafka.SASL{Mechanism: kafka.SASLPlain, Username: "plain-user", Password: "not-the-password"}, true},
		{"scram-sha-256 wrong password", kafka.SASL{Mechanism: kafka.SASLSCRAMSHA256, Username: "scram256-user", Password: "not-the-password"}, true},
		{"scram-sha-512 wrong password", kafka.SASL{Mechanism: kafka.SASLSCRAMSHA512, Username: "scram512-user", Password: "not-the-password"}, true},
		{"scram-sha-512 unknown user", kafka.SASL{Mechanism: kafka.SASLSCRAMSHA512, Username: "nobody", Password: "scram512-pass"}, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := kafka.Config{Brokers: brokers, ClientID: "sasl-test", SASL: tc.sasl}
			// A deadline far beyond what a refusal takes: Check must come
			// back on its own, not by running out of time retrying.
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			err := kafka.Check(ctx, cfg)
			if !tc.wantAuthn {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				roundTrip(t, cfg, "sasl-topic-"+string(rune('a'+i)))
				return
			}
			if err == nil {
				t.Fatal("Check accepted wrong credentials")
			}
			if ctx.Err() != nil {
				t.Fatalf("Check returned only at the deadline (a retry loop): %v", err)
			}
			if !errors.Is(err, kafka.ErrAuthentication) {
				t.Errorf("error %v: want it to wrap ErrAuthentication", err)
			}
			msg := err.Error()
			for _, want := range []string{brokers[0], tc.sasl.Mechanism, tc.sasl.Username} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not name %q", msg, want)
				}
			}
			if strings.Contains(msg, tc.sasl.Password.Reveal()) {
				t.Errorf("error %q shows the password", msg)
			}
			t.Log(msg)
		})
	}

	t.Run("no SASL against a SASL broker", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		err := kafka.Check(ctx, kafka.Config{Brokers: brokers})
		if err == nil {
			t.Fatal("Check passed without credentials")
		}
		for _, want := range []string{brokers[0], "without SASL", "requires SASL"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q: want it to contain %q", err, want)
			}
		}
		t.Log(err)
	})
}

func TestSecurityValidate(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  kafka.Config
		want []string // parts of the error; none for a valid config
	}{
		{"sasl off", kafka.Config{Brokers: []string{"b:9092"}}, nil},
		{"unknown mechanism", kafka.Config{Brokers: []string{"b:9092"}, SASL: kafka.SASL{Mechanism: "GSSAPI", Username: "u", Password: "p"}},
			[]string{`mechanism "GSSAPI"`}},
		{"no credentials", kafka.Config{Brokers: []string{"b:9092"}, SASL: kafka.SASL{Mechanism: kafka.SASLPlain}},
			[]string{"username: required", "password: required"}},
		{"password without mechanism", kafka.Config{Brokers: []string{"b:9092"}, SASL: kafka.SASL{Password: "p"}},
			[]string{"no mechanism"}},
		{"ca file missing", kafka.Config{Brokers: []string{"b:9092"}, TLS: kafka.TLS{CAFile: filepath.Join(dir, "missing.pem")}},
			[]string{"ca file", "missing.pem"}},
		{"ca file not PEM", kafka.Config{Brokers: []string{"b:9092"}, TLS: kafka.TLS{CAFile: notPEM}},
			[]string{"no PEM certificate"}},
		{"cert without key", kafka.Config{Brokers: []string{"b:9092"}, TLS: kafka.TLS{CertFile: notPEM}},
			[]string{"both the cert file and the key file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate passed, want an error with %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestSASLPasswordIsRedacted(t *testing.T) {
	s := kafka.SASL{Mechanism: kafka.SASLPlain, Username: "u", Password: secret.String("hunter2-very-secret")}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if got := fmt.Sprintf(verb, s); strings.Contains(got, "hunter2") {
			t.Errorf("%s of the SASL settings shows the password: %s", verb, got)
		}
	}
}

// testPKI is a certificate authority with a server certificate for
// 127.0.0.1 and a client certificate, written as PEM files.
type testPKI struct {
	caFile, clientCert, clientKey string
	server                        tls.Certificate
	pool                          *x509.CertPool
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "millrace test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, name string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	srvDER, srvKey := issue(2, "broker", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	cliDER, cliKey := issue(3, "millrace", x509.ExtKeyUsageClientAuth, nil)

	p := testPKI{
		caFile:     writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER),
		clientCert: writePEM(t, dir, "client.pem", "CERTIFICATE", cliDER),
		clientKey:  writePEM(t, dir, "client-key.pem", "EC PRIVATE KEY", marshalKey(t, cliKey)),
		server:     tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey},
		pool:       x509.NewCertPool(),
	}
	p.pool.AddCert(ca)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func marshalKey(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestTLS(t *testing.T) {
	pki := newTestPKI(t)
	// The broker wants TLS with a client certificate, and SASL on top.
	brokers := startSASLBroker(t, kfake.TLS(&tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pki.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.pool,
	}))
	scram := kafka.SASL{Mechanism: kafka.SASLSCRAMSHA256, Username: "scram256-user", Password: "scram256-pass"}

	t.Run("ca and client certificate", func(t *testing.T) {
		cfg := kafka.Config{Brokers: brokers, SASL: scram,
			TLS: kafka.TLS{CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}}
		if err := kafka.Check(t.Context(), cfg); err != nil {
			t.Fatalf("Check: %v", err)
		}
		roundTrip(t, cfg, "tls-topic")
	})

	refused := []struct {
		name string
		tls  kafka.TLS
		want string
	}{
		{"no TLS", kafka.TLS{}, "plaintext"},
		{"system roots only", kafka.TLS{Enabled: true, CertFile: pki.clientCert, KeyFile: pki.clientKey}, "certificate"},
		{"no client certificate", kafka.TLS{CAFile: pki.caFile}, "TLS"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			err := kafka.Check(ctx, kafka.Config{Brokers: brokers, SASL: scram, TLS: tc.tls})
			if err == nil {
				t.Fatal("Check passed")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), brokers[0]) {
				t.Errorf("error %q: want it to name the broker and mention %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}
