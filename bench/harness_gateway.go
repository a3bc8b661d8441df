package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/millrace/millrace/platform/consul/consultest"
)

// The production intake shape: `millrace gateway` (the stateless HTTP edge)
// in a process of its own, publishing to a `millrace broker` in another,
// with nothing consuming the commands, as the baselines only publish. The
// gateway role finds the other roles in Consul and refuses to start without
// it, so a Consul agent in dev mode runs beside them.

// brokerProc is a running `millrace broker` of one broker.
type brokerProc struct {
	*proc
	addr string // host:port
}

// startBroker starts `millrace broker` with one broker on a free loopback
// port, persisted under the work directory, and returns once it listens.
func startBroker(ctx context.Context, cfg Config, name string) (*brokerProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	data, err := emptyDataDir(cfg, name)
	if err != nil {
		return nil, err
	}
	p, err := startProc(name, cfg.WorkDir, cfg.Millrace, []string{
		"broker", "--brokers", "1", "--addr", addr, "--data-dir", data, "--log-level", "warn",
	}, nil)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, _, err := p.waitLine(wctx, "millrace broker is ready"); err != nil {
		_ = p.stop(10 * time.Second)
		return nil, err
	}
	return &brokerProc{proc: p, addr: addr}, nil
}

// startGateway starts `millrace gateway` on a free loopback port, publishing
// to broker and registered with the Consul agent at consulAddr, and returns
// it with its base URL once it is ready.
func startGateway(ctx context.Context, cfg Config, name, broker, consulAddr string) (*proc, string, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := startProc(name, cfg.WorkDir, cfg.Millrace, []string{
		"gateway", "--kafka-brokers", broker, "--http-addr", httpAddr, "--log-level", "warn",
	}, []string{"OTEL_SDK_DISABLED=true", "CONSUL_HTTP_ADDR=" + consulAddr})
	if err != nil {
		return nil, "", err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, _, err := p.waitLine(wctx, "millrace gateway is ready"); err != nil {
		_ = p.stop(10 * time.Second)
		return nil, "", err
	}
	return p, "http://" + httpAddr, nil
}

// startConsul starts a Consul agent in dev mode for the gateway role, or
// says why it cannot (no binary: scripts/consul-agent.sh builds it).
func startConsul(cfg Config) (*consultest.Agent, error) {
	dir := filepath.Join(cfg.WorkDir, "consul")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("start consul: %w", err)
	}
	a, err := consultest.StartAgent(dir, consultest.Options{})
	if err != nil {
		// The agent's log follows the error: keep the report's note short.
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return nil, errors.New(msg)
	}
	return a, nil
}
