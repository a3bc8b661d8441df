package main

// The roles of the many-machines deployment: `millrace gateway`, `millrace
// worker`, `millrace projector` and `millrace scheduler` (role_*.go; a new
// role is a roleSpec in roleSpecs). Each is an independent process that
// builds only its part of the platform, on an external Kafka cluster
// (KAFKA_BROKERS), and shares the rest of the wiring with `millrace dev`:
// the rules from their layers
// (wire_config.go), traces and metrics (wire_telemetry.go), registration in
// discovery (wire_discovery.go), security (wire_security.go), and the parts
// app.go builds.
//
// A role is a roleSpec; newRoleCommand turns it into a cobra command whose
// runner does the same for every role, in this order:
//
//	flags and environment → logger and rules → discovery → tracing and metrics
//	→ security → Kafka (check, topics) → spec.build (under the data
//	directory's setup lock) → rules applied → HTTP listener → run:
//	spec's run, rules and auth file watched, configuration history, HTTP
//	server; once the role is ready: registered in discovery, banner printed
//
// and shuts down in reverse: deregistration, HTTP server shutdown, the
// role's run returns (routers drain, the outbox is flushed), the parts
// close, spans are exported. Every role serves /healthz (200 once ready, 503
// while starting or stopping, with the role's own details) and /metrics on
// its one HTTP port, beside its own routes.
//
// Several instances of one role share the work through Kafka consumer
// groups. Instances on one machine share one --data-dir: its SQLite files
// hold what every instance of the role must see (the command side's state,
// inbox and outbox; the read models). See
// docs/adr/0005-shared-sqlite-per-role.md for why, and for what a
// deployment across machines needs instead.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"

	"github.com/millrace/millrace/platform/auth"
	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/kafka"
)

// roleSpec describes one role of the binary.
type roleSpec struct {
	// name is the command (`millrace <name>`), the default --role (which
	// names the rules in Consul KV: millrace/<env>/<name>/rules) and the
	// Kafka client id (millrace-<name>).
	name        string
	short, long string
	// httpAddr is the default --http-addr.
	httpAddr string
	// dataDir: the role keeps SQLite files under --data-dir, which the
	// instances of the role on one machine share.
	dataDir bool
	// needsRegistry: the role cannot work without Consul (it finds other
	// processes through it), so it refuses to start without CONSUL_HTTP_ADDR.
	needsRegistry bool
	// flags binds the role's own flags; nil for none.
	flags func(fs *pflag.FlagSet, getenv func(string) string)
	// validate reports every problem of the role's own flags; nil for none.
	validate func() error
	// build builds the role's parts. What it opens it registers on
	// env.app's closers (env.app.openDB does), or in roleParts.closers;
	// the runner closes both in reverse order. build runs under the setup
	// lock of the data directory (dataDir roles), so that instances starting
	// together do not race to create the same tables.
	build func(ctx context.Context, env *roleEnv) (*roleParts, error)
}

// roleConfig is the configuration of a role: the settings it shares with
// `millrace dev` (the role leaves KafkaAddr unused: roles never embed a
// broker).
type roleConfig struct {
	devConfig
}

// roleEnv is what the runner hands a role's build.
type roleEnv struct {
	cfg    roleConfig
	getenv func(string) string
	kafka  kafka.Config
	logger *slog.Logger
	wlog   watermill.LoggerAdapter
	obs    *observability
	// disc registers the role and resolves others (Consul when
	// CONSUL_HTTP_ADDR is set); disc.leaders hands out leader locks.
	disc *discoveryWiring
	// app collects what the build opens (app.openDB, buildRouter and
	// buildProjections register their closers on it).
	app *app
}

// publisher creates the role's Kafka publisher, traced and closed with the
// app. It is the app's publisher too (audit events, the rules' history).
func (env *roleEnv) publisher() (message.Publisher, error) {
	kpub, err := kafka.NewPublisher(env.kafka, env.wlog)
	if err != nil {
		return nil, fmt.Errorf("create kafka publisher: %w", err)
	}
	env.app.closers = append(env.app.closers, kpub.Close)
	pub := env.obs.tracePublisher(kpub)
	env.app.publisher = pub
	return pub, nil
}

// router builds the role's router behind the governance stack (poisoned
// messages published with pub), installs it on the app, and returns it with
// the subscriber its consumer groups consume through.
func (env *roleEnv) router(ctx context.Context, pub message.Publisher) (routerParts, func(group string) (message.Subscriber, error), error) {
	rp, err := buildRouter(ctx, env.app, env.cfg.devConfig, routerDeps{
		Publisher:  pub,
		Logger:     env.logger,
		Registerer: env.obs.registerer(),
		Outer:      env.obs.routerOuter(),
	})
	if err != nil {
		return routerParts{}, nil, err
	}
	env.app.router, env.app.stack, env.app.poisonAdmin = rp.router, rp.stack, rp.admin
	subscriber := func(group string) (message.Subscriber, error) {
		return kafka.NewSubscriber(env.kafka, group, env.wlog)
	}
	return rp, subscriber, nil
}

// roleParts are what a role built.
type roleParts struct {
	// handler serves the role's routes; the runner serves /healthz and
	// /metrics in front of it, and the rules' admin API beside it.
	handler http.Handler
	// requirements says what the routes of handler need that policyRules
	// (wire_security.go) does not cover; nil: valid credentials.
	requirements requirementNamer
	// route names a request's route template for the HTTP metrics; nil
	// uses roleRoute.
	route func(*http.Request) string
	// holders hold the live rules.
	holders ruleHolders
	// publisher carries the audit events of admin actions and the history
	// of the rules. Required.
	publisher message.Publisher
	// services are what the HTTP port registers as, once ready.
	services []edgeService
	// run runs the role until ctx is done, closing ready once it serves
	// (consumes, or takes requests); then it drains and returns.
	run func(ctx context.Context, ready chan<- struct{}) error
	// health details the role's state on /healthz; nil for none.
	health func(ctx context.Context) any
	// banner lines, name and value, printed once ready.
	banner [][2]string
	// closers run in reverse order after run returned, before env.app's.
	closers []func() error
}

// Role service names. The projector registers as the query edge
// (serviceQuery), which gateways find through upstream.
const (
	serviceWorker = "millrace-worker"
)

// roleSpecs are the roles of the binary. A spec holds the values its flags
// are parsed into: take fresh ones for each command.
func roleSpecs() []roleSpec {
	return []roleSpec{
		gatewayRole(),
		workerRole(),
		projectorRole(),
		schedulerRole(), // role_scheduler.go
	}
}

// roleCommands are the role commands and `millrace broker`.
func roleCommands(getenv func(string) string, stdout, stderr io.Writer) []*cobra.Command {
	var cmds []*cobra.Command
	for _, spec := range roleSpecs() {
		cmds = append(cmds, newRoleCommand(spec, getenv, stdout, stderr))
	}
	return append(cmds, newBrokerCommand(getenv, stdout, stderr))
}

// newRoleCommand is the command of one role.
func newRoleCommand(spec roleSpec, getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	cmd, _ := roleCommand(spec, getenv, stdout, stderr)
	return cmd
}

// roleCommand is the command of one role and the configuration its flags
// are parsed into.
func roleCommand(spec roleSpec, getenv func(string) string, stdout, stderr io.Writer) (*cobra.Command, *roleConfig) {
	cfg := &roleConfig{}
	cmd := &cobra.Command{
		Use:   spec.name,
		Short: spec.short,
		Long:  spec.long + roleCommonHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.setDefaults()
			if err := cfg.validate(spec, getenv); err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			return runRole(cmd.Context(), spec, *cfg, getenv, stdout, stderr)
		},
	}
	bindRoleFlags(cmd.Flags(), spec, cfg, getenv)
	if spec.flags != nil {
		spec.flags(cmd.Flags(), getenv)
	}
	return cmd, cfg
}

// roleCommonHelp ends the help of every role.
const roleCommonHelp = `

Every role needs a Kafka cluster (--kafka-brokers or KAFKA_BROKERS) and registers its HTTP port
with the Consul agent CONSUL_HTTP_ADDR names (with the other CONSUL_* variables;
MILLRACE_ADVERTISE_ADDR, MILLRACE_WEIGHT and MILLRACE_ZONE describe the instance), or with an
in-process registry without it. It serves /healthz and /metrics on that port, takes its rules
from --config, MILLRACE_RULES__* and the Consul key millrace/<env>/<role>/rules, and stops
gracefully on Ctrl-C or SIGTERM. Run several instances to share the work; see
docs/operations.md.`

// bindRoleFlags registers the flags every role shares, with environment
// variables as their defaults (the same as millrace dev's).
func bindRoleFlags(fs *pflag.FlagSet, spec roleSpec, c *roleConfig, getenv func(string) string) {
	partitions, _ := strconv.Atoi(getenv("MILLRACE_PARTITIONS"))
	fs.StringVar(&c.HTTPAddr, "http-addr", envOr(getenv, "MILLRACE_HTTP_ADDR", spec.httpAddr), "listen address of this process's HTTP port: the role's routes, /healthz, /metrics (MILLRACE_HTTP_ADDR)")
	if spec.dataDir {
		fs.StringVar(&c.DataDir, "data-dir", envOr(getenv, "MILLRACE_DATA_DIR", ".millrace"), "directory of the SQLite files, shared by the instances of the role on this machine (MILLRACE_DATA_DIR)")
	}
	fs.StringSliceVar(&c.KafkaBrokers, "kafka-brokers", splitList(getenv("KAFKA_BROKERS")), "Kafka brokers, host:port, comma-separated; required (KAFKA_BROKERS)")
	bindPartitionerFlag(fs, &c.KafkaPartitioner, getenv)
	fs.IntVar(&c.Partitions, "partitions", partitions, "partitions of each topic millrace creates when missing (MILLRACE_PARTITIONS, default 3)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long a graceful shutdown may take")
	fs.StringVar(&c.LogLevel, "log-level", envOr(getenv, "MILLRACE_LOG_LEVEL", "info"), "debug, info, warn or error (MILLRACE_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", envOr(getenv, "MILLRACE_LOG_FORMAT", "text"), "text or json (MILLRACE_LOG_FORMAT)")
	fs.StringVar(&c.ConfigFile, "config", getenv("MILLRACE_CONFIG"), "rules file, .yaml or .json, applied live when it changes; see docs/configuration.md (MILLRACE_CONFIG)")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go's profiles under /debug/pprof/, without authentication (loopback --http-addr only)")
	bindRulesKeyFlags(fs, &c.Env, &c.Role, getenv)
	// The role's name is the default of --role, so that each role reads
	// its own rules from Consul KV.
	if f := fs.Lookup("role"); f != nil && getenv("MILLRACE_ROLE") == "" {
		_ = f.Value.Set(spec.name) // a string flag takes any value
		f.DefValue = spec.name
	}
	bindSecurityFlags(fs, &c.Security, getenv)
}

// validate reports every problem at once: the shared settings, the Kafka
// brokers every role needs, the registry some need, the role's own flags.
func (c roleConfig) validate(spec roleSpec, getenv func(string) string) error {
	var errs []error
	if len(c.KafkaBrokers) == 0 {
		errs = append(errs, fmt.Errorf("kafka brokers: none given; the %s role runs on a Kafka cluster: set --kafka-brokers or KAFKA_BROKERS (millrace broker runs one on this machine)", spec.name))
	}
	errs = append(errs, c.devConfig.Validate())
	errs = append(errs, checkPprof(c.Pprof, c.HTTPAddr)) // pprof.go
	if spec.needsRegistry && getenv(consul.EnvHTTPAddr) == "" {
		errs = append(errs, fmt.Errorf("registry: the %s role finds the other roles in Consul: set %s to a Consul agent", spec.name, consul.EnvHTTPAddr))
	}
	if spec.validate != nil {
		errs = append(errs, spec.validate())
	}
	return errors.Join(errs...)
}

// runRole runs one role until ctx is cancelled, then shuts it down in
// reverse order of construction.
func runRole(ctx context.Context, spec roleSpec, cfg roleConfig, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	// The logger's level and the rules come from their layers:
	// defaults, --config, MILLRACE_RULES__*, Consul KV (wire_config.go).
	logger, rules, err := setupLogging(ctx, cfg.devConfig, getenv, stderr)
	if err != nil {
		return err
	}
	logger = withTraceIDs(logger).With("role", spec.name)
	disc, err := discoveryFromEnv(getenv, logger)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	obs, err := observabilityFromEnv(getenv, logger)
	if err != nil {
		return errors.Join(fmt.Errorf("configuration: %w", err), disc.Close())
	}
	// Buffered spans are exported last, once everything that makes them stopped.
	defer func() { err = errors.Join(err, obs.shutdown(5*time.Second)) }()
	closers := []func() error{disc.Close}
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			err = errors.Join(err, closers[i]())
		}
	}()
	sec, err := newSecurity(ctx, cfg.devConfig, logger)
	if err != nil {
		return err
	}
	sec.warnOpen(cfg.HTTPAddr)

	kcfg := cfg.Security.Kafka.apply(kafka.Config{Brokers: cfg.KafkaBrokers, ClientID: "millrace-" + spec.name, Partitioner: cfg.KafkaPartitioner})
	if err := connectKafka(ctx, kcfg, cfg.Partitions); err != nil {
		return err
	}
	a := &app{logger: logger, ready: make(chan struct{}), kafka: kcfg}
	closers = append(closers, a.Close)
	env := &roleEnv{
		cfg: cfg, getenv: getenv, kafka: kcfg, logger: logger, obs: obs, disc: disc, app: a,
		wlog: watermill.NewSlogLoggerWithLevelMapping(logger, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug}),
	}
	parts, err := buildRole(ctx, spec, env)
	if err != nil {
		return err
	}
	closers = append(closers, func() error {
		var errs []error
		for i := len(parts.closers) - 1; i >= 0; i-- {
			errs = append(errs, parts.closers[i]())
		}
		return errors.Join(errs...)
	})

	// The rules in force before the first request or message.
	if err := rules.start(parts.holders); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	ready := make(chan struct{})
	var stopping atomic.Bool
	routes := withRoleHealth(spec.name, ready, &stopping, parts.health, parts.handler)
	route := parts.route
	if route == nil {
		route = roleRoute
	}
	handler, err := obs.handler(rules.wrap(routes), route)
	if err != nil {
		return errors.Join(err, ln.Close())
	}
	requirements := parts.requirements
	if requirements == nil {
		requirements = roleRequirements{}
	}
	handler, err = sec.wrap(handler, requirements, parts.publisher, obs.registerer())
	if err != nil {
		return errors.Join(err, ln.Close())
	}
	if cfg.Pprof { // profiles for benchmarking, loopback only (pprof.go)
		handler = withPprof(handler)
	}
	srv := newHTTPServer(handler, cfg.Security.HTTP, logger)
	ln = netutil.LimitListener(ln, cfg.Security.HTTP.MaxConnections)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return parts.run(gctx, ready) })
	g.Go(func() error { return rules.watch(gctx, parts.holders) })
	g.Go(func() error {
		return rules.runHistory(gctx, kcfg, parts.publisher, instanceName(ln.Addr().String()))
	})
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
		case <-ready:
		}
		// Serving: announce the port (deregistered before shutdown, below).
		if err := disc.announceAs(gctx, ln.Addr(), parts.services...); err != nil {
			return err
		}
		printRoleBanner(stdout, spec, cfg, ln.Addr(), parts.banner, obs, rules, disc, sec)
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		stopping.Store(true)
		return shutdownEdge(ctx, cfg.ShutdownTimeout, disc, srv, logger)
	})
	if err := g.Wait(); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// buildRole builds the role's parts, under the setup lock of its data
// directory when it has one.
func buildRole(ctx context.Context, spec roleSpec, env *roleEnv) (*roleParts, error) {
	if !spec.dataDir {
		return spec.build(ctx, env)
	}
	dir := env.cfg.DataDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	// Instances started together would race to create the same tables
	// (a check then an ALTER TABLE is no transaction): one builds at a time.
	lock := newFileLock(filepath.Join(dir, "setup.lock"))
	lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := lock.lock(lctx, 50*time.Millisecond); err != nil {
		return nil, fmt.Errorf("set up the data directory %s: another millrace process holds it: %w", dir, err)
	}
	parts, err := spec.build(ctx, env)
	return parts, errors.Join(err, lock.unlock())
}

// withRoleHealth serves GET /healthz: 200 once ready, 503 while starting or
// stopping, with the role's details; everything else goes to next.
func withRoleHealth(role string, ready <-chan struct{}, stopping *atomic.Bool, details func(context.Context) any, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body := struct {
			Status  string `json:"status"`
			Role    string `json:"role"`
			Details any    `json:"details,omitempty"`
		}{Status: "ok", Role: role}
		status := http.StatusOK
		select {
		case <-ready:
		default:
			body.Status, status = "starting", http.StatusServiceUnavailable
		}
		if stopping.Load() {
			body.Status, status = "stopping", http.StatusServiceUnavailable
		}
		if details != nil {
			body.Details = details(r.Context())
		}
		raw, err := json.Marshal(body)
		if err != nil {
			http.Error(w, "encode health", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_, _ = w.Write(append(raw, '\n'))
	})
}

// roleRequirements is the policy of the routes of a role without a
// gateway that policyRules does not name: valid credentials (they are
// answered 404 anyway).
type roleRequirements struct{}

func (roleRequirements) Requirement(*http.Request) auth.Requirement { return auth.Authenticated() }

// roleRoutePrefixes are the route templates of the roles' own routes, for
// the HTTP metrics: a request is counted under the first prefix of its
// path, others as "unmatched" (never the raw path: that would let clients
// make series without bound).
func roleRoutePrefixes() []string {
	return []string{
		"/healthz", "/metrics",
		"/query/v1/orders/", "/query/v1/users/", "/query/v1/reports/sales", "/query/v1/commands/",
		"/admin/poison", "/admin/handlers", "/admin/projections", "/admin/config",
	}
}

// roleRoute names the route of a request to a role's own routes.
func roleRoute(r *http.Request) string {
	for _, p := range roleRoutePrefixes() {
		if r.URL.Path == strings.TrimSuffix(p, "/") || strings.HasPrefix(r.URL.Path, p) {
			return r.Method + " " + p
		}
	}
	return "unmatched"
}

// printRoleBanner says where the role serves and what it runs.
func printRoleBanner(w io.Writer, spec roleSpec, cfg roleConfig, addr net.Addr, lines [][2]string, obs *observability, rules *liveRules, disc *discoveryWiring, sec *security) {
	base := "http://" + addr.String()
	fmt.Fprintf(w, "millrace %s is ready\n", spec.name)
	row := func(name, value string) { fmt.Fprintf(w, "  %-10s%s\n", name, value) }
	row("http", base+" (health /healthz, metrics /metrics)")
	for _, l := range lines {
		row(l[0], l[1])
	}
	row("kafka", strings.Join(cfg.KafkaBrokers, ","))
	if spec.dataDir {
		row("data", cfg.DataDir)
	}
	row("traces", obs.describeTraces())
	row("rules", rules.describe())
	row("registry", disc.desc)
	row("auth", sec.describe())
	fmt.Fprintf(w, "Press Ctrl-C to stop.\n")
}
