package discovery_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/discovery"
	"github.com/millrace/millrace/platform/discovery/discoverytest"
)

func TestMain(m *testing.M) {
	if discoverytest.ServeChild() {
		return
	}
	m.Run()
}

func TestMemory(t *testing.T) {
	discoverytest.Run(t, func(t *testing.T) discoverytest.Harness {
		m := discovery.NewMemory(discovery.MemoryConfig{Logger: discoverytest.Logger(t)})
		t.Cleanup(func() {
			if err := m.Close(); err != nil {
				t.Errorf("close registry: %v", err)
			}
		})
		return discoverytest.Harness{Registrar: m, Resolver: m}
	})
}

// TestMemoryRemovesLongCritical: an instance critical for longer than its
// DeregisterCriticalAfter is removed, which wakes blocking queries.
func TestMemoryRemovesLongCritical(t *testing.T) {
	var (
		mu  sync.Mutex
		now = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	var logs syncBuffer
	m := discovery.NewMemory(discovery.MemoryConfig{
		Now:    clock,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	t.Cleanup(func() { _ = m.Close() })

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	r := discovery.Registration{
		ID: "long-critical", Service: "svc", Address: "127.0.0.1", Port: port,
		Check: discovery.Check{Interval: time.Second, Timeout: 500 * time.Millisecond},
	}
	if err := m.Register(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	list, index, err := m.Healthy(ctx, "svc", 0)
	for err == nil && len(list) != 0 {
		list, index, err = m.Healthy(ctx, "svc", index)
	}
	if err != nil {
		t.Fatalf("instance never went critical: %v", err)
	}

	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	// Only the removal can change the service now.
	_, next, err := m.Healthy(ctx, "svc", index)
	if err != nil || next == index {
		t.Fatalf("blocking query after the critical period: index %d → %d, %v; want a change", index, next, err)
	}
	if !strings.Contains(logs.String(), "instance removed after being critical too long") {
		t.Errorf("no removal logged:\n%s", logs.String())
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestNewID(t *testing.T) {
	cases := []struct {
		service, host string
		port          int
		want          string
	}{
		{"millrace-query", "127.0.0.1", 8080, "millrace-query-127.0.0.1-8080"},
		{"millrace-query", "::1", 8080, "millrace-query-1-8080"},
		{"millrace-query", "worker 7.example", 80, "millrace-query-worker-7.example-80"},
	}
	for _, c := range cases {
		t.Run(c.host, func(t *testing.T) {
			if got := discovery.NewID(c.service, c.host, c.port); got != c.want {
				t.Fatalf("NewID = %q, want %q", got, c.want)
			}
		})
	}
}
