package main_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/gateway/upstream"
	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/consul/consultest"
	"github.com/millrace/millrace/projections/orders"
)

// startDevWithEnv starts millrace dev with extra environment variables and
// returns it once ready, with what it printed.
func startDevWithEnv(t *testing.T, env ...string) (*devProcess, *bytes.Buffer) {
	t.Helper()
	return launchDev(t, []string{"dev", "--data-dir", t.TempDir(), "--http-addr", freeAddr(t), "--kafka-addr", freeAddr(t), "--log-level", "info"},
		append([]string{"KAFKA_BROKERS=", "CONSUL_HTTP_ADDR="}, env...)...)
}

// TestDevRegistersWithConsul runs millrace dev against a real Consul agent:
// its edge is registered as gateway and query edge with its weight and
// zone, a gateway-side client reads the query edge through Consul, and a
// graceful stop deregisters both before the process exits.
func TestDevRegistersWithConsul(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{})
	client := agent.Client(t)
	dev, printed := startDevWithEnv(t, "CONSUL_HTTP_ADDR="+agent.Addr(), "MILLRACE_WEIGHT=3", "MILLRACE_ZONE=zone-a")
	if !strings.Contains(printed.String(), "registry  consul at http://"+agent.Addr()) {
		t.Errorf("ready banner does not name the registry:\n%s", printed)
	}

	res := consul.NewResolver(client, consul.ResolverConfig{})
	for _, service := range []string{"millrace-gateway", "millrace-query"} {
		list, _, err := res.Healthy(t.Context(), service, 0)
		if err != nil || len(list) != 1 {
			t.Fatalf("healthy %s = %v, %v; want the dev instance", service, list, err)
		}
		in := list[0]
		if "http://"+in.HostPort() != dev.base || in.Weight != 3 || in.Zone != "zone-a" || in.Version != "dev" {
			t.Errorf("%s instance = %+v, want %s with weight 3, zone zone-a, version dev", service, in, dev.base)
		}
	}

	// A gateway elsewhere reads the dev's read models through Consul.
	up, err := upstream.New(upstream.Config{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	runDone := make(chan error, 1)
	go func() { runDone <- up.Run(ctx) }()
	if _, err := up.Order(t.Context(), "no-such-order"); !errors.Is(err, orders.ErrNotFound) {
		t.Errorf("order through the query edge: %v, want orders.ErrNotFound", err)
	}
	cancel()
	<-runDone

	if err := dev.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-dev.exited:
		if err != nil {
			t.Fatalf("millrace dev exited with %v\n%s", err, dev.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("millrace dev did not stop within 60s of SIGINT")
	}
	services, err := client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	for id, s := range services {
		if strings.HasPrefix(s.Service, "millrace-") {
			t.Errorf("instance %s still registered after a graceful stop", id)
		}
	}
	// Deregistered as the shutdown began, before the server and the
	// platform stopped.
	logs := dev.stderr.String()
	shut, dereg, stopped := strings.Index(logs, `msg="shutting down"`), strings.Index(logs, "msg=deregistered"), strings.Index(logs, "msg=stopped")
	if shut < 0 || dereg < shut || stopped < dereg {
		t.Errorf("want shutting down, then deregistered, then stopped in the log:\n%s", logs)
	}
}

// TestDevServesQueryEdge: without Consul, dev registers in-process and
// serves the query edge beside the gateway.
func TestDevServesQueryEdge(t *testing.T) {
	dev, printed := startDevWithEnv(t)
	if !strings.Contains(printed.String(), "registry  in-process") {
		t.Errorf("ready banner does not name the in-process registry:\n%s", printed)
	}
	r := mustDo(t, "GET", dev.base+"/query/v1/orders/no-such-order", nil, nil)
	if r.status != 404 || r.body["code"] != "order-not-found" {
		t.Fatalf("query edge: %d %s, want 404 order-not-found", r.status, r.raw)
	}
	if r := mustDo(t, "GET", dev.base+"/v1/orders/no-such-order", nil, nil); r.status != 404 {
		t.Fatalf("gateway beside the query edge: %d %s", r.status, r.raw)
	}
}
