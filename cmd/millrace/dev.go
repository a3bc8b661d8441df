package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"

	"github.com/millrace/millrace/platform/kafka"
)

func newDevCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var cfg devConfig
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole platform in one process: embedded broker, SQLite stores, gateway",
		Long: `dev runs every part of millrace in one process on this machine: a Kafka-protocol broker
persisted under the data directory (or an external cluster given by KAFKA_BROKERS), the
users and orders command handlers with their SQLite stores and outbox relay, the
notifications reactor, the projections, and the HTTP gateway.

Its HTTP port registers as the gateway and as a query edge (/query/v1/) with an
in-process registry, or with the Consul agent CONSUL_HTTP_ADDR names (with the other
CONSUL_* variables; MILLRACE_WEIGHT, MILLRACE_ZONE and MILLRACE_ADVERTISE_ADDR describe the
instance). See docs/discovery.md.

Without --auth-file (or MILLRACE_JWT_*) every request is let in, which dev allows on a
loopback address only (and says so); a non-loopback --http-addr is refused without
authentication unless --insecure is given. See docs/security.md.

Stop it with Ctrl-C (SIGINT) or SIGTERM: in-flight work drains, the outbox is flushed,
and a later start resumes where it stopped, with nothing lost and nothing applied twice.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.setDefaults()
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			// The logger's level and the rules come from their layers:
			// defaults, --config, MILLRACE_RULES__*, Consul KV (wire_config.go).
			logger, rules, err := setupLogging(cmd.Context(), cfg, getenv, stderr)
			if err != nil {
				return err
			}
			// Traces (configured by the OTEL_* variables) and metrics; log
			// records get trace ids (wire_telemetry.go).
			logger = withTraceIDs(logger)
			// Service registration and leader locks: Consul when
			// CONSUL_HTTP_ADDR is set, else in-process (wire_discovery.go).
			// Nothing to release until an instance registers.
			disc, err := discoveryFromEnv(getenv, logger)
			if err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			obs, err := observabilityFromEnv(getenv, logger)
			if err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			return runDev(cmd.Context(), cfg, logger, stdout, rules, obs, disc, getenv)
		},
	}
	bindDevFlags(cmd.Flags(), &cfg, getenv)
	cmd.Flags().BoolVar(&cfg.Pprof, "pprof", false, "serve Go's profiles under /debug/pprof/, without authentication (loopback --http-addr only)")
	return cmd
}

// runDev builds the platform, serves until ctx is cancelled, then shuts
// down in reverse order of construction.
func runDev(ctx context.Context, cfg devConfig, logger *slog.Logger, stdout io.Writer, rules *liveRules, obs *observability, disc *discoveryWiring, getenv func(string) string) (err error) {
	// Buffered spans are exported last, once everything that makes them stopped.
	defer func() { err = errors.Join(err, obs.shutdown(5*time.Second)) }()
	// Who may call which route: refused here, before anything starts, when
	// a non-loopback address would be served without authentication
	// (wire_security.go).
	sec, err := newSecurity(ctx, cfg, logger)
	if err != nil {
		return err
	}
	sec.warnOpen(cfg.HTTPAddr)
	if err := checkPprof(cfg.Pprof, cfg.HTTPAddr); err != nil { // pprof.go
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data directory %s: %w", cfg.DataDir, err)
	}

	// Teardown runs in reverse order of construction, whatever happens.
	closers := []func() error{disc.Close}
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			if cerr := closers[i](); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()

	brokers := cfg.KafkaBrokers
	brokerDesc := "external " + strings.Join(brokers, ",")
	if len(brokers) == 0 {
		broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{
			Addr:       cfg.KafkaAddr,
			DataDir:    cfg.path("kafka"),
			Partitions: cfg.Partitions,
		})
		if err != nil {
			return fmt.Errorf("start embedded broker: %w", err)
		}
		closers = append(closers, broker.Close)
		brokers = broker.Addrs()
		brokerDesc = "embedded " + strings.Join(brokers, ",") + " (data in " + cfg.path("kafka") + ")"
	}

	p, err := buildPlatform(ctx, cfg, brokers, logger, obs)
	if err != nil {
		return err
	}
	closers = append(closers, p.Close)

	// The rules of the rules file, put in force before the first request
	// or message, then kept in step with the file (see wire_config.go).
	// The scheduler fires the jobs of the rules' jobs section while it
	// holds the scheduler's leader lock (wire_scheduler.go).
	sp, err := buildScheduler(ctx, schedulerDeps{
		leaders: disc.leaders, getenv: getenv, env: cfg.Env, stateDB: p.stateDB, stateFile: cfg.path("state.db"), publisher: p.publisher,
		commands: p.views.commands, history: p.views.jobs, jobs: rules.current().Jobs,
		instance: instanceName(cfg.HTTPAddr), registerer: obs.registerer(), logger: logger,
	})
	if err != nil {
		return err
	}

	holders := holdersOf(p)
	holders.scheduler = sp.sched
	if err := rules.start(holders); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	// The gateway, traced and measured, and /metrics (wire_telemetry.go).
	// The rules' admin API under /admin/config and the feature flags that
	// act on requests go in front of the platform's handler (wire_config.go).
	handler, err := obs.handler(rules.wrap(withJobsAdmin(sp, p.HTTPHandler())), routeOf(p.gateway))
	if err != nil {
		return err
	}
	// Every route, /metrics and the admin APIs included, behind the
	// security headers, CORS and authentication; the server and listener
	// with the configured abuse limits (wire_security.go).
	handler, err = sec.wrap(handler, p.gateway, p.publisher, obs.registerer())
	if err != nil {
		return err
	}
	if cfg.Pprof { // profiles for benchmarking, loopback only (pprof.go)
		handler = withPprof(handler)
	}
	srv := newHTTPServer(handler, cfg.Security.HTTP, logger)
	ln = netutil.LimitListener(ln, cfg.Security.HTTP.MaxConnections)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.Run(gctx) })
	g.Go(func() error { return sp.sched.Run(gctx) })
	g.Go(func() error { return rules.watch(gctx, holders) })
	// The history of the rules: read from its topic, every accepted change
	// recorded on it (wire_config.go).
	g.Go(func() error { return rules.runHistory(gctx, p.kafka, p.publisher, instanceName(ln.Addr().String())) })
	g.Go(func() error { return sec.watch(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-p.Ready():
		}
		// Serving: announce the edge (deregistered before shutdown, below).
		if err := disc.announce(gctx, ln.Addr()); err != nil {
			return err
		}
		base := "http://" + ln.Addr().String()
		fmt.Fprintf(stdout, "millrace dev is ready\n")
		fmt.Fprintf(stdout, "  gateway   %s/v1/\n", base)
		fmt.Fprintf(stdout, "  health    %s/healthz\n", base)
		fmt.Fprintf(stdout, "  metrics   %s/metrics\n", base)
		fmt.Fprintf(stdout, "  traces    %s\n", obs.describeTraces())
		fmt.Fprintf(stdout, "  kafka     %s\n", brokerDesc)
		fmt.Fprintf(stdout, "  data      %s\n", cfg.DataDir)
		fmt.Fprintf(stdout, "  rules     %s\n", rules.describe())
		fmt.Fprintf(stdout, "  registry  %s\n", disc.desc)
		fmt.Fprintf(stdout, "  jobs      %s; %s/admin/jobs\n", sp.desc, base)
		fmt.Fprintf(stdout, "  auth      %s\n", sec.describe())
		fmt.Fprintf(stdout, "Press Ctrl-C to stop.\n")
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// Stop taking requests first, then let the platform drain.
		return shutdownEdge(ctx, cfg.ShutdownTimeout, disc, srv, logger)
	})
	if err := g.Wait(); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// shutdownEdge stops an HTTP edge within timeout: it leaves the registry
// first, so that clients stop choosing this instance, then lets in-flight
// requests finish.
func shutdownEdge(ctx context.Context, timeout time.Duration, disc *discoveryWiring, srv *http.Server, logger *slog.Logger) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	logger.Info("shutting down", "timeout", timeout)
	wctx, wcancel := context.WithTimeout(sctx, withdrawTimeout)
	if err := disc.withdraw(wctx); err != nil {
		logger.Warn("deregister from discovery; health checks will remove this instance", "error", err)
	}
	wcancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down http server: %w", err)
	}
	return nil
}
