package main

// These tests are in package main, not main_test: they run `millrace dev`
// in this process through run, with an environment of their own, and read
// the route table the policy is built from (routeTable), which only an
// internal test can reach.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/millrace/millrace/platform/auth"
	"github.com/millrace/millrace/platform/kafka"
)

// The secrets a full run is configured with; none may ever be printed.
const (
	e2eJWTSecret    = "e2e-jwt-secret-4b1d9c2a-7f3e-4e5b-9d8c-1a2b3c4d5e6f"
	e2eSASLPassword = "e2e-sasl-password-8f7e6d5c4b3a"
	e2eIssuer       = "https://id.e2e.example/"
	e2eAudience     = "millrace-e2e"
)

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// devRun is a `millrace dev` running in this process.
type devRun struct {
	base           string
	stdout, stderr *lockedBuffer
	stop           func() error
}

// startDevInProcess runs `millrace dev` with args and env until the test
// ends or stop is called, and waits until it is ready.
func startDevInProcess(t *testing.T, env map[string]string, args ...string) *devRun {
	t.Helper()
	addr := freeLoopbackAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	d := &devRun{base: "http://" + addr, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}}
	done := make(chan error, 1)
	all := append([]string{"dev", "--http-addr", addr, "--data-dir", t.TempDir(), "--partitions", "1"}, args...)
	go func() { done <- run(ctx, all, func(k string) string { return env[k] }, d.stdout, d.stderr) }()
	var once sync.Once
	var stopErr error
	d.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(60 * time.Second):
				stopErr = errors.New("millrace dev did not stop within 60s")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = d.stop() })
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(d.stdout.String(), "millrace dev is ready") {
		select {
		case err := <-done:
			t.Fatalf("millrace dev stopped before it was ready: %v\nstderr:\n%s", err, d.stderr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("millrace dev not ready after 90s\nstderr:\n%s", d.stderr)
		}
	}
	return d
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// e2eToken signs a token for subject with scope; change adjusts claims.
func e2eToken(t *testing.T, subject, scope, key string, change ...func(jwt.MapClaims)) string {
	t.Helper()
	c := jwt.MapClaims{"iss": e2eIssuer, "aud": e2eAudience, "sub": subject, "scope": scope, "exp": time.Now().Add(time.Hour).Unix()}
	for _, f := range change {
		f(c)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// send makes one request; header is name, value pairs.
func (d *devRun) send(t *testing.T, method, path, body string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, d.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, b
}

// makeKey runs `millrace keys create` and returns the key it printed.
func makeKey(t *testing.T, authFile, subject string, scopes ...string) (key, id string) {
	t.Helper()
	var out, errOut bytes.Buffer
	args := []string{"keys", "create", "--auth-file", authFile, "--subject", subject}
	for _, s := range scopes {
		args = append(args, "--scope", s)
	}
	if err := run(context.Background(), args, func(string) string { return "" }, &out, &errOut); err != nil {
		t.Fatalf("keys create: %v\n%s", err, errOut.String())
	}
	for _, f := range strings.Fields(out.String()) {
		if strings.HasPrefix(f, auth.APIKeyPrefix) {
			key = f
		}
	}
	id, err := auth.ParseAPIKey(key)
	if err != nil {
		t.Fatalf("keys create printed no key: %s", out.String())
	}
	return key, id
}

// TestSecurityEndToEnd runs millrace dev against a Kafka broker that
// requires SASL, with JWT and API keys configured, and checks: every route
// of the route table without credentials, with an expired token, a token
// for another audience, a token with a wrong signature, a valid token
// lacking the scope and one with it; an API key revoked while the process
// runs; admin actions in the audit log; and, after the run, that no
// configured secret appears anywhere in its output, at debug level.
func TestSecurityEndToEnd(t *testing.T) {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser(kafka.SASLSCRAMSHA512, "millrace", e2eSASLPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()

	authFile := filepath.Join(t.TempDir(), "auth.yaml")
	writerKey, writerID := makeKey(t, authFile, "ci-writer", auth.ScopeCommandsWrite, auth.ScopeQueriesRead)
	adminKey, _ := makeKey(t, authFile, "ops", auth.ScopeAdmin)
	secrets := map[string]string{
		"JWT secret":                    e2eJWTSecret,
		"SASL password":                 e2eSASLPassword,
		"writer API key":                writerKey,
		"admin API key":                 adminKey,
		"secret part of the writer key": writerKey[len(auth.APIKeyPrefix)+17:],
	}

	d := startDevInProcess(t, map[string]string{
		"KAFKA_BROKERS":         strings.Join(broker.ListenAddrs(), ","),
		"KAFKA_SASL_MECHANISM":  kafka.SASLSCRAMSHA512,
		"KAFKA_SASL_USERNAME":   "millrace",
		"KAFKA_SASL_PASSWORD":   e2eSASLPassword,
		"MILLRACE_JWT_SECRET":   e2eJWTSecret,
		"MILLRACE_JWT_ISSUER":   e2eIssuer,
		"MILLRACE_JWT_AUDIENCE": e2eAudience,
		"MILLRACE_AUTH_FILE":    authFile,
	}, "--log-level", "debug")

	if !strings.Contains(d.stdout.String(), "auth      JWT (HS256)") {
		t.Errorf("the banner does not describe authentication:\n%s", d.stdout)
	}

	t.Run("every route", func(t *testing.T) {
		expired := func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }
		otherAudience := func(c jwt.MapClaims) { c["aud"] = "someone-else" }
		for _, row := range routeTable() {
			req := row.Requirement
			scope := req.Scope
			cases := []struct {
				name   string
				header []string
				want   int // 0: neither 401 nor 403
			}{
				{"no credentials", nil, 401},
				{"expired token", []string{"Authorization", "Bearer " + e2eToken(t, "alice", scope, e2eJWTSecret, expired)}, 401},
				{"wrong audience", []string{"Authorization", "Bearer " + e2eToken(t, "alice", scope, e2eJWTSecret, otherAudience)}, 401},
				{"wrong signature", []string{"Authorization", "Bearer " + e2eToken(t, "alice", scope, "not-the-secret-but-long-enough-anyway!!")}, 401},
				{"lacking the scope", []string{"Authorization", "Bearer " + e2eToken(t, "alice", "nothing:here", e2eJWTSecret)}, 403},
				{"with the scope", []string{"Authorization", "Bearer " + e2eToken(t, "alice", scope, e2eJWTSecret)}, 0},
			}
			for _, tc := range cases {
				t.Run(row.SampleMethod+" "+row.SamplePath+"/"+tc.name, func(t *testing.T) {
					want := tc.want
					switch {
					case req.Public:
						want = 0
					case scope == "" && want == 403:
						want = 0 // any valid credentials do
					}
					body := ""
					if row.SampleMethod == http.MethodPost || row.SampleMethod == http.MethodPut {
						body = "{}"
					}
					status, header, b := d.send(t, row.SampleMethod, row.SamplePath, body, tc.header...)
					switch {
					case want == 0 && (status == 401 || status == 403):
						t.Fatalf("status %d, want the route to serve it: %s", status, b)
					case want != 0 && status != want:
						t.Fatalf("status %d, want %d: %s", status, want, b)
					case want == 401 && !strings.HasPrefix(header.Get("WWW-Authenticate"), `Bearer realm="millrace"`):
						t.Fatalf("401 without a Bearer challenge: %q", header.Get("WWW-Authenticate"))
					}
					if header.Get("X-Frame-Options") != "DENY" || header.Get("X-Content-Type-Options") != "nosniff" {
						t.Fatalf("security headers missing: %v", header)
					}
				})
			}
		}
	})

	t.Run("a command records its sender", func(t *testing.T) {
		status, _, b := d.send(t, http.MethodPost, "/v1/users", `{"email":"sec@example.com","name":"Sec"}`, "X-API-Key", writerKey)
		if status != http.StatusAccepted {
			t.Fatalf("register with the writer key: %d %s", status, b)
		}
		var acc struct {
			CommandID string `json:"command_id"`
		}
		_ = json.Unmarshal(b, &acc)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var found bool
		err := kafka.Tail(ctx, (kafkaSecurity{SASL: kafka.SASL{Mechanism: kafka.SASLSCRAMSHA512, Username: "millrace", Password: e2eSASLPassword}}).
			apply(kafka.Config{Brokers: broker.ListenAddrs()}), "users.commands", kafka.TailOptions{FromBeginning: true},
			func(r kafka.Record) error {
				if r.Headers["ce_id"] == acc.CommandID {
					found = true
					if r.Headers["ce_authid"] != "ci-writer" || r.Headers["ce_authtype"] != "api_key" {
						t.Errorf("command headers %v: want ce_authid ci-writer, ce_authtype api_key", r.Headers)
					}
					cancel()
				}
				return nil
			})
		if !found {
			t.Fatalf("command %s not found on users.commands: %v", acc.CommandID, err)
		}
	})

	t.Run("admin actions are audited", func(t *testing.T) {
		status, _, b := d.send(t, http.MethodPost, "/admin/poison/requeue", `{"topic":"none"}`, "Authorization", "Bearer "+adminKey)
		if status == 401 || status == 403 {
			t.Fatalf("admin key refused: %d %s", status, b)
		}
		waitFor(t, "the audit record", func() bool {
			return strings.Contains(d.stderr.String(), `msg="admin action"`) && strings.Contains(d.stderr.String(), "subject=ops")
		})
		// And the audit event on millrace.audit.
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var event map[string]any
		_ = kafka.Tail(ctx, (kafkaSecurity{SASL: kafka.SASL{Mechanism: kafka.SASLSCRAMSHA512, Username: "millrace", Password: e2eSASLPassword}}).
			apply(kafka.Config{Brokers: broker.ListenAddrs()}), auditTopic, kafka.TailOptions{FromBeginning: true},
			func(r kafka.Record) error {
				if r.Headers["ce_type"] == auditEventType && r.Headers["ce_authid"] == "ops" {
					_ = json.Unmarshal(r.Value, &event)
					cancel()
				}
				return nil
			})
		if event["path"] != "/admin/poison/requeue" || event["method"] != "POST" || event["subject"] != "ops" || event["auth_type"] != "api_key" {
			t.Fatalf("audit event %v: want the POST /admin/poison/requeue of ops by API key", event)
		}
	})

	t.Run("an API key revoked while running", func(t *testing.T) {
		if status, _, b := d.send(t, http.MethodGet, "/v1/orders/x", "", "X-API-Key", writerKey); status == 401 {
			t.Fatalf("writer key refused before revocation: %s", b)
		}
		var out bytes.Buffer
		if err := run(context.Background(), []string{"keys", "revoke", writerID, "--auth-file", authFile}, func(string) string { return "" }, &out, io.Discard); err != nil {
			t.Fatalf("keys revoke: %v", err)
		}
		waitFor(t, "the revoked key to be refused", func() bool {
			status, _, b := d.send(t, http.MethodGet, "/v1/orders/x", "", "X-API-Key", writerKey)
			return status == 401 && bytes.Contains(b, []byte("revoked"))
		})
		// The other key still works.
		if status, _, b := d.send(t, http.MethodGet, "/admin/poison", "", "Authorization", "Bearer "+adminKey); status != http.StatusOK {
			t.Fatalf("admin key after the reload: %d %s", status, b)
		}
	})

	t.Run("wrong credentials", func(t *testing.T) {
		forged := writerKey[:len(writerKey)-2] + "xx"
		d.send(t, http.MethodGet, "/v1/orders/x", "", "Authorization", "Bearer "+forged)
		d.send(t, http.MethodGet, "/v1/orders/x", "", "Authorization", "Basic "+e2eSASLPassword)
		d.send(t, http.MethodGet, "/v1/orders/x", "", "Authorization", "Bearer "+e2eToken(t, "x", "admin", e2eJWTSecret+"!"))
	})

	if err := d.stop(); err != nil {
		t.Fatalf("millrace dev: %v", err)
	}
	t.Run("no secret in the output", func(t *testing.T) {
		out := d.stdout.String() + d.stderr.String()
		t.Logf("%d bytes of output; %d lines", len(out), strings.Count(out, "\n"))
		if len(out) < 1000 {
			t.Fatalf("only %d bytes of output: the scan would prove nothing", len(out))
		}
		for name, s := range secrets {
			if strings.Contains(out, s) {
				i := strings.Index(out, s)
				t.Errorf("the %s appears in the output: …%s…", name, out[max(0, i-200):min(len(out), i+len(s)+50)])
			}
		}
	})
}

// waitFor polls cond until it holds, for at most 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNonLoopbackRefused: a non-loopback address without authentication
// stops the start, before anything is started.
func TestNonLoopbackRefused(t *testing.T) {
	cases := []struct {
		addr string
		args []string
		want string // part of the error; empty: no refusal from checkExposure
	}{
		{"0.0.0.0:0", nil, "refusing to listen on 0.0.0.0:0 without authentication"},
		{"[::]:0", nil, "refusing to listen on [::]:0"},
		{":0", nil, "refusing to listen on :0"},
		{"192.0.2.10:8080", nil, "refusing to listen on 192.0.2.10:8080"},
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			var stderr lockedBuffer
			err := run(t.Context(), append([]string{"dev", "--http-addr", tc.addr, "--data-dir", dataDir}, tc.args...),
				func(string) string { return "" }, io.Discard, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--insecure") {
				t.Fatalf("run: %v, want a refusal with %q that names --insecure", err, tc.want)
			}
			if _, statErr := os.Stat(dataDir); !errors.Is(statErr, os.ErrNotExist) {
				t.Fatalf("the data directory was created before the refusal: %v", statErr)
			}
		})
	}
}

func TestCheckExposure(t *testing.T) {
	cases := []struct {
		addr           string
		auth, insecure bool
		refused        bool
	}{
		{"127.0.0.1:8080", false, false, false},
		{"localhost:8080", false, false, false},
		{"[::1]:8080", false, false, false},
		{"0.0.0.0:8080", false, false, true},
		{"0.0.0.0:8080", true, false, false},
		{"0.0.0.0:8080", false, true, false},
		{"example.com:8080", false, false, true},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s auth=%v insecure=%v", tc.addr, tc.auth, tc.insecure), func(t *testing.T) {
			if err := checkExposure(tc.addr, tc.auth, tc.insecure); (err != nil) != tc.refused {
				t.Fatalf("checkExposure: %v, want refused=%v", err, tc.refused)
			}
		})
	}
}

// TestOpenDevSaysSo: on loopback without authentication, dev starts and
// says so in a warning and in the banner.
func TestOpenDevSaysSo(t *testing.T) {
	d := startDevInProcess(t, map[string]string{}, "--kafka-addr", "127.0.0.1:0")
	if !strings.Contains(d.stdout.String(), "auth      OFF") {
		t.Errorf("banner does not say authentication is off:\n%s", d.stdout)
	}
	if !strings.Contains(d.stderr.String(), "level=WARN msg=\"authentication is OFF") {
		t.Errorf("no warning that authentication is off:\n%s", d.stderr)
	}
	status, _, b := d.send(t, http.MethodGet, "/admin/poison", "")
	if status != http.StatusOK {
		t.Fatalf("open admin API: %d %s", status, b)
	}
}

// TestSecurityDocRouteTable keeps the route table of docs/security.md equal
// to the one the policy is built from. Run with MILLRACE_UPDATE_DOCS=1 to
// rewrite it.
func TestSecurityDocRouteTable(t *testing.T) {
	const (
		begin = "<!-- route table: generated by TestSecurityDocRouteTable from the router; do not edit -->\n"
		end   = "<!-- end of route table -->"
	)
	path := filepath.Join("..", "..", "docs", "security.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no route table between %q and %q", path, strings.TrimSpace(begin), end)
	}
	want := routeTableMarkdown()
	if got := s[i+len(begin) : j]; got != want {
		if os.Getenv("MILLRACE_UPDATE_DOCS") == "1" {
			if err := os.WriteFile(path, []byte(s[:i+len(begin)]+want+s[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("rewrote the route table of %s", path)
			return
		}
		t.Fatalf("the route table of %s is out of date; run MILLRACE_UPDATE_DOCS=1 go test -run TestSecurityDocRouteTable ./cmd/millrace/\nwant:\n%s", path, want)
	}
}

// TestKeysCommand: create, list and revoke keep the file's comments and
// other settings, write it 0600, never write the key, and refuse what
// makes no sense.
func TestKeysCommand(t *testing.T) {
	file := filepath.Join(t.TempDir(), "auth.yaml")
	original := "# who may call millrace\npublic:\n  metrics: false # scrapers use a key\n"
	if err := os.WriteFile(file, []byte(original), 0o600); err != nil {
		t.Fatal(err)
	}
	key, id := makeKey(t, file, "ci", auth.ScopeQueriesRead)
	_, _ = makeKey(t, file, "ops", auth.ScopeAdmin)

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# who may call millrace", "metrics: false # scrapers use a key", "id: " + id, "subject: ci", "hash: sha256:"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("auth file lacks %q:\n%s", want, data)
		}
	}
	if strings.Contains(string(data), key) {
		t.Fatal("the auth file holds the key itself")
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("auth file mode %v, want 0600", fi.Mode().Perm())
	}

	keys := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append(append([]string{"keys"}, args...), "--auth-file", file), func(string) string { return "" }, &out, io.Discard)
		return out.String(), err
	}
	if _, err := keys("revoke", id); err != nil {
		t.Fatal(err)
	}
	list, err := keys("list")
	if err != nil {
		t.Fatal(err)
	}
	var ciLine string
	for _, l := range strings.Split(list, "\n") {
		if strings.HasPrefix(l, id) {
			ciLine = l
		}
	}
	if !strings.Contains(ciLine, "revoked") || !strings.Contains(list, "ops") || strings.Contains(list, "sha256") {
		t.Fatalf("list after revoking %s:\n%s", id, list)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"revoke", id}, "revoked already"},
		{[]string{"revoke", "0000000000000000"}, "no api key has the id"},
		{[]string{"create", "--subject", "x", "--scope", "has space"}, "is not a scope"},
	} {
		if _, err := keys(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("keys %v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

// gatewayPolicy stands for the gateway's part of the policy.
type gatewayPolicy struct{}

func (gatewayPolicy) Requirement(*http.Request) auth.Requirement {
	return auth.Scope("from-the-gateway")
}

func TestPolicy(t *testing.T) {
	s := &security{}
	f := defaultAuthFile()
	s.file.Store(&f)
	policy := s.policy(gatewayPolicy{})
	closed := defaultAuthFile()
	closed.Public = publicRoutes{Health: false, Metrics: false}
	cases := []struct {
		method, path string
		file         authFile
		want         auth.Requirement
	}{
		{"GET", "/healthz", f, auth.Public()},
		{"HEAD", "/metrics", f, auth.Public()},
		{"GET", "/healthz", closed, auth.Scope(auth.ScopeHealthRead)},
		{"GET", "/metrics", closed, auth.Scope(auth.ScopeMetricsRead)},
		{"POST", "/metrics", f, auth.Scope("from-the-gateway")},
		{"GET", "/admin", f, auth.Scope(auth.ScopeAdmin)},
		{"DELETE", "/admin/anything/mounted/later", f, auth.Scope(auth.ScopeAdmin)},
		{"GET", "/v1/../admin/poison", f, auth.Scope(auth.ScopeAdmin)},
		{"GET", "//admin//poison", f, auth.Scope(auth.ScopeAdmin)},
		{"GET", "/administrator", f, auth.Scope("from-the-gateway")},
		{"GET", "/query/v1/orders/1", f, auth.Scope(auth.ScopeQueriesRead)},
		{"PUT", "/query/v1/commands/1", f, auth.Scope(auth.ScopeCommandsWrite)},
		{"GET", "/query/v1/commands/1", f, auth.Scope(auth.ScopeQueriesRead)},
		{"GET", "/v1/orders/1", f, auth.Scope("from-the-gateway")},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			file := tc.file
			s.file.Store(&file)
			r, err := http.NewRequest(tc.method, "http://x", nil)
			if err != nil {
				t.Fatal(err)
			}
			r.URL.Path = tc.path
			if got := policy(r); got != tc.want {
				t.Fatalf("needs %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAuthFileValidate(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string // parts of the error; none for a valid file
	}{
		{"empty", "", nil},
		{"jwt by secret", "jwt: {issuer: i, audience: a, hs256_secret: " + e2eJWTSecret + "}\n", nil},
		{"jwt without a way to verify", "jwt: {issuer: i, audience: a}\n", []string{"jwt.hs256_secret"}},
		{"both jwks sources", "jwt: {issuer: i, audience: a, jwks_file: f, jwks_url: https://x/}\n", []string{"jwks_url"}},
		{"short secret, not shown", "jwt: {issuer: i, audience: a, hs256_secret: tooshort}\n", []string{"at least 32 bytes"}},
		{"bad origin", "cors: {allowed_origins: ['*']}\n", []string{"cors", "allowed_origins[0]"}},
		{"unknown key", "jwt: {issuer: i, audience: a, hs256_secret: " + e2eJWTSecret + ", audiences: [x]}\n", []string{"audiences"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := decodeAuthFile("auth.yaml", []byte(tc.yaml))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want an error with %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "tooshort") {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
}
