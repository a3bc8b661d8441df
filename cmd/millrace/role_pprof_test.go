package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/consul/consultest"
	"github.com/millrace/millrace/platform/kafka"
)

// `millrace gateway --pprof` serves Go's profiles beside the gateway's
// routes, as millrace dev --pprof does, on a loopback address only.
func TestRolePprof(t *testing.T) {
	t.Run("refused on a non-loopback address", func(t *testing.T) {
		var spec roleSpec
		for _, s := range roleSpecs() {
			if s.name == "gateway" {
				spec = s
			}
		}
		getenv := func(k string) string { return map[string]string{"CONSUL_HTTP_ADDR": "127.0.0.1:8500"}[k] }
		cmd, cfg := roleCommand(spec, getenv, io.Discard, io.Discard)
		if err := cmd.ParseFlags([]string{"--kafka-brokers", "k:9092", "--pprof", "--insecure", "--http-addr", "0.0.0.0:8080"}); err != nil {
			t.Fatal(err)
		}
		cfg.setDefaults()
		err := cfg.validate(spec, getenv)
		if err == nil || !strings.Contains(err.Error(), "--pprof") || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("gateway --pprof on 0.0.0.0: %v, want a refusal naming --pprof and loopback", err)
		}
	})

	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = broker.Close() })
	agent := consultest.Start(t, consultest.Options{})
	env := map[string]string{"CONSUL_HTTP_ADDR": agent.Addr(), "OTEL_SDK_DISABLED": "true"}
	for _, tc := range []struct {
		name   string
		args   []string
		served bool
	}{
		{"with --pprof", []string{"--pprof"}, true},
		{"without", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := freeLoopbackAddr(t)
			args := append([]string{"gateway", "--kafka-brokers", broker.Addrs()[0], "--http-addr", addr, "--partitions", "1"}, tc.args...)
			stdout, stderr := &lockedBuffer{}, &lockedBuffer{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- run(ctx, args, func(k string) string { return env[k] }, stdout, stderr) }()
			defer func() {
				cancel()
				select {
				case err := <-done:
					if err != nil && !errors.Is(err, context.Canceled) {
						t.Errorf("gateway stopped with %v", err)
					}
				case <-time.After(60 * time.Second):
					t.Errorf("gateway did not stop within 60s")
				}
			}()
			deadline := time.Now().Add(60 * time.Second)
			for !strings.Contains(stdout.String(), "millrace gateway is ready") {
				select {
				case err := <-done:
					t.Fatalf("gateway stopped before it was ready: %v\nstderr:\n%s", err, stderr)
				case <-time.After(50 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("gateway not ready after 60s\nstderr:\n%s", stderr)
				}
			}

			resp, err := http.Get("http://" + addr + "/debug/pprof/cmdline")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := strings.Join(os.Args, "\x00")
			switch {
			case tc.served && (resp.StatusCode != http.StatusOK || string(body) != want):
				t.Errorf("GET /debug/pprof/cmdline = %d %q, want 200 and this process's command line", resp.StatusCode, body)
			case !tc.served && resp.StatusCode == http.StatusOK:
				t.Errorf("GET /debug/pprof/cmdline = 200 without --pprof")
			}
			resp, err = http.Get("http://" + addr + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /healthz beside the profiles = %d, want 200", resp.StatusCode)
			}
		})
	}
}
