package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/gateway/upstream"
	"github.com/millrace/millrace/platform/auth/secret"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/schema"
	"github.com/millrace/millrace/schemas"
)

// envUpstreamToken is the credential a gateway sends to the query edges
// when they require one: an API key or JWT with queries:read and
// commands:write (docs/security.md).
const envUpstreamToken = "MILLRACE_UPSTREAM_TOKEN"

// gatewayRole is `millrace gateway`: the HTTP edge. It validates commands
// and publishes them to their command topics (through a batching publisher,
// as millrace dev does), records them in the command log, and answers reads,
// both through gateway/upstream: the healthy query edges of the projectors
// that Consul reports, balanced by weight, retried on another instance, and
// served from the last known instances while Consul is away. It keeps no
// state of its own: any number of gateways serve the same answers.
func gatewayRole() roleSpec {
	var maxBody int64
	return roleSpec{
		name:  "gateway",
		short: "Run the HTTP gateway: commands in to Kafka, reads from the projectors' query edges",
		long: `gateway runs the HTTP edge of millrace (/v1/...) without any state of its own: commands are
validated, published to their command topics and recorded in the command log, and reads are
answered, both through the query edges of the projectors (millrace projector) that Consul reports
as healthy (service millrace-query), balanced by weight, retried on another instance, and served
from the instances last known while Consul cannot be reached. It registers as millrace-gateway.
Send the credential the query edges require, if any, in ` + envUpstreamToken + `.

Queries with ?after=<command id> (read-your-writes) wait, up to Prefer: wait=N, until the
query edges' read model has handled the command's events.`,
		httpAddr:      "127.0.0.1:8080",
		needsRegistry: true,
		flags: func(fs *pflag.FlagSet, getenv func(string) string) {
			fs.Int64Var(&maxBody, "max-body-bytes", 1<<20, "largest request body the gateway accepts")
		},
		validate: func() error {
			if maxBody < 1024 {
				return fmt.Errorf("max body bytes %d: want at least 1024", maxBody)
			}
			return nil
		},
		build: func(ctx context.Context, env *roleEnv) (*roleParts, error) {
			return buildGatewayRole(ctx, env, maxBody)
		},
	}
}

func buildGatewayRole(_ context.Context, env *roleEnv, maxBody int64) (*roleParts, error) {
	parts := &roleParts{}
	// The command intake: concurrent requests share produce batches, each
	// answered only once the broker acknowledged its command.
	intake, err := kafka.NewBatchPublisher(env.kafka, kafka.BatchPublisherOptions{}, env.logger)
	if err != nil {
		return nil, fmt.Errorf("create the gateway's kafka publisher: %w", err)
	}
	parts.closers = append(parts.closers, intake.Close)
	pub := env.obs.tracePublisher(intake)
	parts.publisher = pub

	// Reads and the command log: the projectors' query edges, found in
	// the registry.
	ucfg := upstream.Config{
		Resolver:   env.disc.resolver,
		Registerer: env.obs.registerer(),
		Logger:     env.logger.With("component", "upstream"),
	}
	if tok := strings.TrimSpace(env.getenv(envUpstreamToken)); tok != "" {
		transport := upstreamTransport()
		ucfg.HTTPClient = &http.Client{Transport: bearerTransport{token: secret.String(tok), next: transport}}
		parts.closers = append(parts.closers, func() error { transport.CloseIdleConnections(); return nil })
	}
	up, err := upstream.New(ucfg)
	if err != nil {
		return nil, err
	}
	validator, err := schema.New(schemas.FS())
	if err != nil {
		return nil, fmt.Errorf("compile schemas: %w", err)
	}
	gw, err := gateway.New(gateway.Config{MaxBodyBytes: maxBody, Logger: env.logger}, gateway.Deps{
		Validator:     validator,
		Publisher:     pub,
		Commands:      up,
		Orders:        up,
		Sales:         up,
		Notifications: up,
		Progress:      up, // read-your-writes, answered by the query edges
	})
	if err != nil {
		return nil, fmt.Errorf("create gateway: %w", err)
	}

	parts.handler = gw.Handler()
	parts.requirements = gw
	parts.route = routeOf(gw)
	parts.holders = ruleHolders{gateway: gw}
	parts.services = []edgeService{{serviceGateway, "gateway"}}
	parts.run = func(ctx context.Context, ready chan<- struct{}) error {
		// Takes requests at once: reads wait up to a few seconds for the
		// registry's first answer, commands need a query edge to be
		// recorded.
		close(ready)
		return up.Run(ctx)
	}
	parts.health = func(context.Context) any {
		st := up.Status()
		reads := "ok"
		switch {
		case !st.Serving():
			reads = "unavailable: no query edge known"
		case st.Stale:
			reads = "degraded: " + st.Reason
		}
		return map[string]any{"reads": reads, "upstream": st}
	}
	parts.banner = [][2]string{
		{"gateway", "/v1/ (commands to Kafka; reads and the command log from " + serviceQuery + ")"},
	}
	return parts, nil
}

// upstreamTransport is the transport of the gateway's client of the query
// edges when they require a credential: the one upstream makes by default.
func upstreamTransport() *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
}
