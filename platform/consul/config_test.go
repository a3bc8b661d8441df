package consul_test

import (
	"strings"
	"testing"

	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/consul/consultest"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigFromEnv(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		want    consul.Config
		wantErr []string
	}{
		{"nothing set: the local agent over http", nil,
			consul.Config{Address: "127.0.0.1:8500", Scheme: "http"}, nil},
		{"every variable", map[string]string{
			"CONSUL_HTTP_ADDR": "consul.internal:8501", "CONSUL_HTTP_TOKEN": "s3cret",
			"CONSUL_HTTP_SSL": "true", "CONSUL_HTTP_SSL_VERIFY": "false",
			"CONSUL_CACERT": "/ca.pem", "CONSUL_CAPATH": "/cas", "CONSUL_CLIENT_CERT": "/c.pem", "CONSUL_CLIENT_KEY": "/k.pem",
			"CONSUL_TLS_SERVER_NAME": "server.dc2.consul", "CONSUL_DATACENTER": "dc2",
		}, consul.Config{
			Address: "consul.internal:8501", Scheme: "https", Token: "s3cret", Datacenter: "dc2",
			TLS: consul.TLSConfig{CAFile: "/ca.pem", CAPath: "/cas", CertFile: "/c.pem", KeyFile: "/k.pem",
				ServerName: "server.dc2.consul", InsecureSkipVerify: true},
		}, nil},
		{"https:// in the address sets the scheme", map[string]string{"CONSUL_HTTP_ADDR": "https://10.0.0.1:8501"},
			consul.Config{Address: "10.0.0.1:8501", Scheme: "https"}, nil},
		{"http:// does not undo CONSUL_HTTP_SSL", map[string]string{"CONSUL_HTTP_ADDR": "http://10.0.0.1:8501", "CONSUL_HTTP_SSL": "1"},
			consul.Config{Address: "10.0.0.1:8501", Scheme: "https"}, nil},
		{"token file", map[string]string{"CONSUL_HTTP_TOKEN_FILE": "/run/secrets/consul"},
			consul.Config{Address: "127.0.0.1:8500", Scheme: "http", TokenFile: "/run/secrets/consul"}, nil},
		{"malformed booleans are all reported", map[string]string{"CONSUL_HTTP_SSL": "yes please", "CONSUL_HTTP_SSL_VERIFY": "nope"},
			consul.Config{}, []string{`CONSUL_HTTP_SSL="yes please"`, `CONSUL_HTTP_SSL_VERIFY="nope"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := consul.ConfigFromEnv(env(c.env))
			if c.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, want one mentioning %v", c.wantErr)
				}
				for _, w := range c.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %s", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("config = %+v\nwant %+v", got, c.want)
			}
			if s := got.String(); strings.Contains(s, "s3cret") {
				t.Errorf("String() shows the token: %s", s)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  consul.Config
		want []string
	}{
		{"no port", consul.Config{Address: "consul.internal", Scheme: "http"}, []string{"want host:port"}},
		{"half a client certificate and a bad scheme", consul.Config{Address: "a:1", Scheme: "ftp", TLS: consul.TLSConfig{CertFile: "/c.pem"}},
			[]string{`scheme "ftp"`, "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			if _, err := consul.NewClient(c.cfg); err == nil {
				t.Errorf("NewClient accepted it")
			}
		})
	}
}

// TestTLSFromEnv reaches an agent that requires client certificates over
// https, configured by the CONSUL_* variables alone.
func TestTLSFromEnv(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{HTTPS: true})
	files := agent.TLS()
	base := map[string]string{
		"CONSUL_HTTP_ADDR":   agent.HTTPSAddr(),
		"CONSUL_HTTP_SSL":    "true",
		"CONSUL_CACERT":      files.CA,
		"CONSUL_CLIENT_CERT": files.ClientCert,
		"CONSUL_CLIENT_KEY":  files.ClientKey,
	}
	with := func(changes map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range changes {
			if v == "" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	cases := []struct {
		name   string
		env    map[string]string
		wantOK bool
	}{
		{"CA, client certificate and key", base, true},
		{"the server name to verify given explicitly", with(map[string]string{"CONSUL_TLS_SERVER_NAME": files.ServerName}), true},
		{"a server name the certificate lacks", with(map[string]string{"CONSUL_TLS_SERVER_NAME": "elsewhere.example"}), false},
		{"no client certificate", with(map[string]string{"CONSUL_CLIENT_CERT": "", "CONSUL_CLIENT_KEY": ""}), false},
		{"no CA: the agent's certificate is not trusted", with(map[string]string{"CONSUL_CACERT": ""}), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := consul.ConfigFromEnv(env(c.env))
			if err != nil {
				t.Fatal(err)
			}
			client, err := consul.NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			leader, err := client.Status().Leader()
			switch {
			case c.wantOK && (err != nil || leader == ""):
				t.Fatalf("status over https: %q, %v", leader, err)
			case !c.wantOK && err == nil:
				t.Fatalf("status over https succeeded, want a TLS failure")
			case !c.wantOK && !isTLSFailure(err):
				t.Fatalf("err = %v, want a TLS failure", err)
			}
		})
	}
}

func isTLSFailure(err error) bool {
	s := err.Error()
	return strings.Contains(s, "certificate") || strings.Contains(s, "tls")
}
