package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The role runner's own parts; the roles running as processes are tested
// by fault_test.go, compose.yaml by compose_test.go.

func TestRoleConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		role string
		args []string
		env  map[string]string
		want []string // substrings of the error; none: valid
	}{
		{"worker", "worker", []string{"--kafka-brokers", "k:9092"}, nil, nil},
		{"worker without brokers", "worker", nil, nil, []string{"kafka brokers: none given", "KAFKA_BROKERS"}},
		{"worker brokers from the environment", "worker", nil, map[string]string{"KAFKA_BROKERS": "k:9092"}, nil},
		{"unknown context", "worker", []string{"--kafka-brokers", "k:9092", "--contexts", "users,billing"}, nil,
			[]string{`context "billing": unknown; want one of users, orders`}},
		{"worker with nothing to run", "worker", []string{"--kafka-brokers", "k:9092", "--contexts", "none", "--reactors", "none"}, nil,
			[]string{"a worker needs something to run"}},
		{"reactors only", "worker", []string{"--kafka-brokers", "k:9092", "--contexts", "none"}, nil, nil},
		{"unknown projection", "projector", []string{"--kafka-brokers", "k:9092", "--projections", "orders,stock"}, nil,
			[]string{`projection "stock": unknown; want one of orders, sales, commands`}},
		{"gateway without consul", "gateway", []string{"--kafka-brokers", "k:9092"}, nil,
			[]string{"the gateway role finds the other roles in Consul: set CONSUL_HTTP_ADDR"}},
		{"gateway", "gateway", []string{"--kafka-brokers", "k:9092"}, map[string]string{"CONSUL_HTTP_ADDR": "127.0.0.1:8500"}, nil},
		{"java partitioner", "worker", []string{"--kafka-brokers", "k:9092", "--kafka-partitioner", "murmur2"}, nil, nil},
		{"partitioner from the environment", "worker", nil, map[string]string{"KAFKA_BROKERS": "k:9092", "KAFKA_PARTITIONER": "murmur"},
			[]string{`kafka partitioner "murmur"`}},
		{"unknown partitioner", "worker", []string{"--kafka-brokers", "k:9092", "--kafka-partitioner", "murmur3"}, nil,
			[]string{`kafka partitioner "murmur3": want one of [fnv1a murmur2 crc32]`}},
		{"every problem at once", "gateway", []string{"--max-body-bytes", "10", "--http-addr", "8080"}, nil,
			[]string{"kafka brokers: none given", "max body bytes 10", `http address "8080"`, "CONSUL_HTTP_ADDR"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			var spec roleSpec
			for _, s := range roleSpecs() {
				if s.name == tc.role {
					spec = s
				}
			}
			cmd, cfg := roleCommand(spec, getenv, io.Discard, io.Discard)
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg.setDefaults()
			err := cfg.validate(spec, getenv)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				if cfg.Role != tc.role {
					t.Errorf("--role defaults to %q, want the role's name %q", cfg.Role, tc.role)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate accepted %v", tc.args)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestRoleHealth(t *testing.T) {
	ready := make(chan struct{})
	var stopping atomic.Bool
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := withRoleHealth("worker", ready, &stopping, func(context.Context) any { return map[string]string{"relay": "standby"} }, next)
	get := func(method, path string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		var body map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body
	}
	steps := []struct {
		name       string
		before     func()
		method     string
		path       string
		wantStatus int
		wantState  string
	}{
		{"starting", nil, http.MethodGet, "/healthz", http.StatusServiceUnavailable, "starting"},
		{"ready", func() { close(ready) }, http.MethodGet, "/healthz", http.StatusOK, "ok"},
		{"other routes pass through", nil, http.MethodGet, "/admin/poison", http.StatusTeapot, ""},
		{"only reads", nil, http.MethodPost, "/healthz", http.StatusMethodNotAllowed, ""},
		{"stopping", func() { stopping.Store(true) }, http.MethodGet, "/healthz", http.StatusServiceUnavailable, "stopping"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.before != nil {
				s.before()
			}
			code, body := get(s.method, s.path)
			if code != s.wantStatus {
				t.Fatalf("%s %s: %d, want %d", s.method, s.path, code, s.wantStatus)
			}
			if s.wantState == "" {
				return
			}
			details, _ := body["details"].(map[string]any)
			if body["status"] != s.wantState || body["role"] != "worker" || details["relay"] != "standby" {
				t.Errorf("body %v: want status %s, role worker and the role's details", body, s.wantState)
			}
		})
	}
}

func TestFileLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox-relay.lock")
	a, b := newFileLock(path), newFileLock(path)
	if held, err := a.tryLock(); err != nil || !held {
		t.Fatalf("first lock: %v, %v", held, err)
	}
	if held, err := b.tryLock(); err != nil || held {
		t.Fatalf("second lock while the first is held: %v, %v; want not held", held, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := b.lock(ctx, 10*time.Millisecond); err == nil {
		t.Fatal("lock while held elsewhere returned before its context ended")
	}
	if err := a.unlock(); err != nil {
		t.Fatal(err)
	}
	if err := b.lock(context.Background(), 10*time.Millisecond); err != nil {
		t.Fatalf("lock once released: %v", err)
	}
	if held, _ := a.tryLock(); held {
		t.Error("the lock is held twice")
	}
	if err := b.unlock(); err != nil {
		t.Fatal(err)
	}
}

func TestBrokerConfig(t *testing.T) {
	tests := []struct {
		name      string
		cfg       brokerConfig
		wantErr   string
		wantPorts []int
	}{
		{"three brokers from 9092", brokerConfig{Addr: "127.0.0.1:9092"}, "", []int{9092, 9093, 9094}},
		{"free ports", brokerConfig{Addr: "localhost:0", Brokers: 2}, "", []int{0, 0}},
		{"not loopback", brokerConfig{Addr: "0.0.0.0:9092"}, "must be a loopback address", nil},
		{"too many", brokerConfig{Brokers: 40}, "brokers 40: want 1..16", nil},
		{"ports run out", brokerConfig{Addr: "127.0.0.1:65534"}, "want a port from 0 to 65533", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.setDefaults()
			err := tc.cfg.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate() = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			host, ports := tc.cfg.ports()
			if host != "127.0.0.1" || len(ports) != len(tc.wantPorts) {
				t.Fatalf("ports() = %s %v, want 127.0.0.1 %v", host, ports, tc.wantPorts)
			}
			for i := range ports {
				if ports[i] != tc.wantPorts[i] {
					t.Errorf("ports() = %v, want %v", ports, tc.wantPorts)
				}
			}
		})
	}
}

func TestRoleRoute(t *testing.T) {
	tests := []struct{ method, path, want string }{
		{"GET", "/healthz", "GET /healthz"},
		{"GET", "/query/v1/orders/0198d6a4", "GET /query/v1/orders/"},
		{"PUT", "/query/v1/commands/0198d6a4", "PUT /query/v1/commands/"},
		{"GET", "/admin/poison/3", "GET /admin/poison"},
		{"GET", "/admin/projections", "GET /admin/projections"},
		{"GET", "/wp-login.php", "unmatched"},
		{"GET", "/query/v1/unknown/x", "unmatched"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			if got := roleRoute(httptest.NewRequest(tc.method, tc.path, nil)); got != tc.want {
				t.Errorf("roleRoute = %q, want %q", got, tc.want)
			}
		})
	}
}
