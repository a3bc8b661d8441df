package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/sync/errgroup"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/handlers/orders"
	"github.com/millrace/millrace/handlers/users"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/commandstore"
	"github.com/millrace/millrace/platform/config"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/schema"
	"github.com/millrace/millrace/platform/sqlite"
	"github.com/millrace/millrace/projections"
	commandlog "github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/jobs"
	orderviews "github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/queryapi"
	"github.com/millrace/millrace/projections/sales"
	"github.com/millrace/millrace/schemas"
)

// app is every part of one millrace process, built in order by buildApp
// and closed in reverse order by Close.
type app struct {
	logger    *slog.Logger
	publisher message.Publisher
	router    *message.Router
	// stack holds the router's live rules and breaker states; poisonAdmin
	// serves the poison queue's admin API (see wire_router.go).
	stack       *router.Stack
	poisonAdmin http.Handler
	relay       *commandstore.Relay
	gateway     *gateway.Gateway
	closers     []func() error
	ready       chan struct{}

	// queryEdge serves the read models to other processes' gateways under
	// /query/v1/ (see wire_discovery.go).
	queryEdge http.Handler

	// replay runs the projections (rebuilds included) and resets handlers,
	// with their admin API under /admin/projections and /admin/handlers
	// (see wire_replay.go).
	replay *replayParts

	// kafka is how the process reaches the brokers.
	kafka kafka.Config

	// stateDB and views are what the scheduler reads and keeps its
	// records in (wire_scheduler.go).
	stateDB *sql.DB
	views   readModels
}

// buildApp builds the command handlers, reactors, projections and gateway
// on the given brokers and the SQLite files under cfg.DataDir.
func buildPlatform(ctx context.Context, cfg devConfig, brokers []string, logger *slog.Logger, obs *observability) (_ *app, err error) {
	a := &app{logger: logger, ready: make(chan struct{})}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.Close())
		}
	}()
	wlog := router.NewWatermillLogger(logger)

	// Kafka: reach the brokers with the configured SASL and TLS first, so
	// that wrong credentials stop the start with one clear error
	// (wire_security.go); then topics, since publishing to a missing topic
	// fails.
	kcfg := cfg.Security.Kafka.apply(kafka.Config{Brokers: brokers, ClientID: "millrace-dev", Partitioner: cfg.KafkaPartitioner})
	a.kafka = kcfg
	if err := connectKafka(ctx, kcfg, cfg.Partitions); err != nil {
		return a, err
	}
	kpub, err := kafka.NewPublisher(kcfg, wlog)
	if err != nil {
		return a, fmt.Errorf("create kafka publisher: %w", err)
	}
	a.closers = append(a.closers, kpub.Close)
	pub := obs.tracePublisher(kpub) // a producer span per message (wire_telemetry.go)
	a.publisher = pub

	// SQLite: command-side state (aggregates, inbox, outbox), read models,
	// and the notifications reactor's store.
	stateDB, err := a.openDB(ctx, cfg.path("state.db"))
	if err != nil {
		return a, err
	}
	a.stateDB = stateDB
	viewDB, err := a.openDB(ctx, cfg.path("projections.db"))
	if err != nil {
		return a, err
	}
	notifyDB, err := a.openDB(ctx, cfg.path("notifications.db"))
	if err != nil {
		return a, err
	}

	store, err := commandstore.New(ctx, stateDB)
	if err != nil {
		return a, fmt.Errorf("open command store: %w", err)
	}
	a.closers = append(a.closers, store.Close) // its statements, before their database
	a.relay = store.NewRelay(pub, logger.With("component", "outbox-relay"))
	if err := obs.watch(kcfg, store); err != nil { // consumer lag and outbox backlog on /metrics
		return a, err
	}

	// The router runs every consumer behind the governance stack, with the
	// poison queue in poison.db (see wire_router.go).
	rp, err := buildRouter(ctx, a, cfg, routerDeps{
		Publisher:  pub,
		Logger:     logger,
		Registerer: obs.registerer(),  // router metrics on /metrics
		Outer:      obs.routerOuter(), // a consumer span around the stack
	})
	if err != nil {
		return a, err
	}
	r := rp.router
	a.router, a.stack, a.poisonAdmin = rp.router, rp.stack, rp.admin

	subscriber := func(group string) (message.Subscriber, error) {
		return kafka.NewSubscriber(kcfg, group, wlog)
	}
	// Handlers consume through resettable subscriptions; what a reset
	// delivers again is marked as a replay (see wire_replay.go).
	handlerControl, err := newHandlerControl(ctx, a, kcfg, viewDB, subscriber, logger)
	if err != nil {
		return a, err
	}

	// Command handlers: one handler group per context, so that the commands
	// of one aggregate are handled in partition order.
	commandGroups, err := buildCommandGroups(store, stateDB, commandContexts())
	if err != nil {
		return a, err
	}
	if err := addGroups(r, handlerControl.subscriber, wlog, false, commandGroups); err != nil {
		return a, fmt.Errorf("add command handlers: %w", err)
	}

	// Reactors: side effects of events, keyed by event id.
	reactor, reactorGroups, err := buildNotifications(ctx, a, notifyDB, logger)
	if err != nil {
		return a, err
	}
	if err := addGroups(r, handlerControl.subscriber, wlog, true, reactorGroups); err != nil {
		return a, fmt.Errorf("add reactors: %w", err)
	}

	// Projections: the active version of each consumes on the router, in
	// consumer groups derived from name and version; rebuilds build the next
	// version beside it (see wire_replay.go). Every runner's positions are
	// reported as millrace_projection_position.
	views := newReadModels(viewDB)
	a.views = views
	orderView, salesView, commandView := views.orders, views.sales, views.commands
	projectionManager, err := buildProjections(ctx, a, kcfg, viewDB, r, subscriber, obs.watchProjection, logger,
		append(views.all(), views.jobs)...)
	if err != nil {
		return a, err
	}
	a.replay = &replayParts{manager: projectionManager, handlers: handlerControl}

	validator, err := schema.New(schemas.FS())
	if err != nil {
		return a, fmt.Errorf("compile schemas: %w", err)
	}
	// The gateway publishes through a publisher of its own, whose
	// concurrent requests share produce batches: each still answers only
	// once the broker acknowledged its command (docs/benchmarks.md).
	intakePub, err := kafka.NewBatchPublisher(kcfg, kafka.BatchPublisherOptions{}, logger)
	if err != nil {
		return a, fmt.Errorf("create the gateway's kafka publisher: %w", err)
	}
	a.closers = append(a.closers, intakePub.Close)
	gw, err := gateway.New(gateway.Config{MaxBodyBytes: cfg.MaxBodyBytes, Logger: logger}, gateway.Deps{
		Validator:     validator,
		Publisher:     obs.tracePublisher(intakePub),
		Commands:      commandView,
		Orders:        orderView,
		Sales:         salesView,
		Notifications: reactor,
		Progress:      projectionManager, // read-your-writes
	})
	if err != nil {
		return a, fmt.Errorf("create gateway: %w", err)
	}
	a.gateway = gw

	// The query edge: the same read models, for gateways elsewhere.
	a.queryEdge, err = newQueryEdge(views, reactor, projectionManager, logger)
	if err != nil {
		return a, err
	}
	return a, nil
}

// The parts below are shared by `millrace dev`, which builds them all in
// one process, and the roles (roles.go), which each build some of them.

// connectKafka reaches the brokers with the configured SASL and TLS first,
// so that wrong credentials stop the start with one clear error
// (wire_security.go), then declares every topic millrace uses, since
// publishing to a missing topic fails. Every process declares them all:
// declaring is idempotent, and no role then depends on another to start
// first.
func connectKafka(ctx context.Context, kcfg kafka.Config, partitions int) error {
	if err := kafka.Check(ctx, kcfg); err != nil {
		return err
	}
	topics := []kafka.Topic{
		{Name: router.DefaultPoisonTopic, Partitions: int32(partitions)},
		{Name: auditTopic, Partitions: int32(partitions)}, // admin actions (wire_security.go)
		// The history of configuration changes: one partition, every
		// record kept (wire_config.go).
		{Name: config.HistoryTopic, Partitions: 1},
	}
	for _, t := range events.Topics() {
		topics = append(topics, kafka.Topic{Name: t.Name, Partitions: int32(partitions), Retention: t.Retention})
	}
	if err := kafka.EnsureTopics(ctx, kcfg, topics...); err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	return nil
}

// commandContexts names the bounded contexts whose commands millrace
// handles, in the order their handler groups are built.
func commandContexts() []string { return []string{"users", "orders"} }

// buildCommandGroups builds the command handler groups of the named
// contexts on store: one group per context, consuming its command topic.
// The orders context asks whether a user is registered by reading the users
// aggregate in the same store, so store must hold the users' state too
// (docs/adr/0005-shared-sqlite-per-role.md). stateDB is store's database:
// the orders context's scheduled commands read the orders in it
// (wire_scheduler.go).
func buildCommandGroups(store *commandstore.Store, stateDB *sql.DB, contexts []string) (map[string]handlerGroup, error) {
	userAgg, err := commandstore.NewAggregate[users.User, events.Message](store, commandstore.AggregateConfig{
		Name: "user", Handler: "users", Topic: events.TopicUserEvents, Source: events.SourceUsers,
	})
	if err != nil {
		return nil, err
	}
	orderAgg, err := commandstore.NewAggregate[orders.Order, events.Message](store, commandstore.AggregateConfig{
		Name: "order", Handler: "orders", Topic: events.TopicOrderEvents, Source: events.SourceOrders,
	})
	if err != nil {
		return nil, err
	}
	// The commands scheduled jobs send to the orders context are handled
	// in its group too (wire_scheduler.go).
	orderJobs, err := orderJobHandlers(store, stateDB)
	if err != nil {
		return nil, err
	}
	all := map[string]handlerGroup{
		"users":  {events.TopicUserCommands, users.New(userAgg, time.Now).GroupHandlers()},
		"orders": {events.TopicOrderCommands, append(orders.New(orderAgg, userAgg, time.Now).GroupHandlers(), orderJobs...)},
	}
	groups := map[string]handlerGroup{}
	for _, name := range contexts {
		g, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("command handlers: unknown context %q: want one of %s", name, strings.Join(commandContexts(), ", "))
		}
		groups[name] = g
	}
	return groups, nil
}

// buildNotifications creates the notifications reactor on db, delivering
// to the log, and its handler groups: one per event topic it reacts to.
func buildNotifications(ctx context.Context, a *app, db *sql.DB, logger *slog.Logger) (*notifications.Reactor, map[string]handlerGroup, error) {
	reactor, err := notifications.New(ctx, db, time.Now,
		notifications.WithDeliverer(logDeliverer{logger.With("component", "notifications")}))
	if err != nil {
		return nil, nil, fmt.Errorf("create notifications reactor: %w", err)
	}
	a.closers = append(a.closers, reactor.Close) // its statements, before their database
	groups := map[string]handlerGroup{}
	for _, topic := range []string{events.TopicUserEvents, events.TopicOrderEvents} {
		groups["notifications."+topic] = handlerGroup{topic, reactor.GroupHandlers()}
	}
	return reactor, groups, nil
}

// readModels are the projections' read models on one database.
type readModels struct {
	orders   *orderviews.Projection
	sales    *sales.Projection
	commands *commandlog.Projection
	// jobs is the run history of scheduled jobs (wire_scheduler.go).
	jobs *jobs.Projection
}

func newReadModels(db *sql.DB) readModels {
	return readModels{orders: orderviews.New(db), sales: sales.New(db), commands: commandlog.New(db), jobs: jobs.New(db)}
}

// all lists the projections a projector runs, in the order `millrace dev`
// runs them. The run history (jobs) is not among them: `millrace dev` and
// the scheduler role run it beside their scheduler (wire_scheduler.go).
func (m readModels) all() []projections.Projection {
	return []projections.Projection{m.orders, m.sales, m.commands}
}

// named returns the projections of the given names, in the order given.
func (m readModels) named(names []string) ([]projections.Projection, error) {
	byName := map[string]projections.Projection{}
	var known []string
	for _, p := range m.all() {
		byName[p.Name()] = p
		known = append(known, p.Name())
	}
	var out []projections.Projection
	for _, n := range names {
		p, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("projections: unknown projection %q: want one of %s", n, strings.Join(known, ", "))
		}
		out = append(out, p)
	}
	return out, nil
}

// newQueryEdge serves the read models and the notifications list to
// gateways in other processes (projections/queryapi).
func newQueryEdge(m readModels, n queryapi.NotificationReader, p queryapi.Progress, logger *slog.Logger) (http.Handler, error) {
	return queryapi.New(queryapi.Config{Logger: logger}, queryapi.Deps{
		Orders: m.orders, Sales: m.sales, Notifications: n, Commands: m.commands, Progress: p,
	})
}

// handlerGroup is a set of typed handlers sharing one consumer group on one topic.
type handlerGroup struct {
	topic    string
	handlers []cqrs.GroupEventHandler
}

// addGroups registers cqrs handler groups on r, one consumer group each.
func addGroups(r *message.Router, subscriber func(string) (message.Subscriber, error), wlog watermill.LoggerAdapter, ackUnknown bool, groups map[string]handlerGroup) error {
	proc, err := cqrs.NewEventGroupProcessorWithConfig(r, cqrs.EventGroupProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.EventGroupProcessorGenerateSubscribeTopicParams) (string, error) {
			g, ok := groups[p.EventGroupName]
			if !ok {
				return "", fmt.Errorf("no topic for handler group %s", p.EventGroupName)
			}
			return g.topic, nil
		},
		SubscriberConstructor: func(p cqrs.EventGroupProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return subscriber(p.EventGroupName)
		},
		AckOnUnknownEvent: ackUnknown,
		Marshaler:         cloudevents.Marshaler{},
		Logger:            wlog,
	})
	if err != nil {
		return fmt.Errorf("create handler group processor: %w", err)
	}
	for name, g := range groups {
		if err := proc.AddHandlersGroup(name, g.handlers...); err != nil {
			return fmt.Errorf("add handler group %s: %w", name, err)
		}
	}
	return nil
}

// isPermanent reports the failures that retrying cannot fix, so that the
// router poisons them at once instead of retrying.
func isPermanent(err error) bool {
	return errors.Is(err, cloudevents.ErrMalformedPayload) ||
		errors.Is(err, projections.ErrMalformedEvent) ||
		// cqrs's group processor reports a command type no handler knows with
		// this plain error; an unknown command never becomes known by retrying.
		strings.HasPrefix(err.Error(), "no handler found for event ")
}

func (a *app) openDB(ctx context.Context, path string) (*sql.DB, error) {
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, db.Close)
	// Keep the connections a burst of concurrent requests opened: with
	// database/sql's default of 2 idle ones, each transaction beyond them
	// opened and closed a SQLite connection (15% of the CPU of the intake
	// profile, docs/benchmarks.md).
	db.SetMaxIdleConns(sqliteIdleConns)
	return db, nil
}

// sqliteIdleConns is how many idle connections each SQLite pool keeps.
const sqliteIdleConns = 32

// HTTPHandler serves the gateway, the poison admin API under /admin/poison,
// the projections' and handlers' admin API under /admin/projections and
// /admin/handlers, and the query edge under /query/v1/.
func (a *app) HTTPHandler() http.Handler {
	return withQueryEdge(a.queryEdge, withReplayAdmin(a.replay, withPoisonAdmin(a.poisonAdmin, a.gateway.Handler())))
}

// Ready is closed once every consumer is running.
func (a *app) Ready() <-chan struct{} { return a.ready }

// Run runs the router and the outbox relay until ctx is cancelled, then
// drains in-flight messages and flushes the outbox.
func (a *app) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	relayDone := make(chan error, 1)
	go func() { relayDone <- a.relay.Run(relayCtx) }()

	g.Go(func() error {
		if err := a.router.Run(gctx); err != nil {
			return fmt.Errorf("run router: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		select {
		case <-a.router.Running():
			// Projections consume on the router: they start once it runs,
			// and the app is ready once they do (wire_replay.go).
			g.Go(func() error { return a.replay.run(gctx, a.ready) })
		case <-gctx.Done():
		}
		<-gctx.Done()
		// router.Run returns once Close has drained in-flight handlers.
		if err := a.router.Close(); err != nil {
			return fmt.Errorf("close router: %w", err)
		}
		return nil
	})
	err := g.Wait()

	// Handlers have stopped writing: publish what they left in the outbox.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	stopRelay()
	if rerr := <-relayDone; rerr != nil {
		err = errors.Join(err, fmt.Errorf("outbox relay: %w", rerr))
	}
	if ferr := a.relay.Flush(fctx); ferr != nil {
		err = errors.Join(err, fmt.Errorf("flush outbox: %w", ferr))
	}
	return err
}

// Close releases what buildApp opened, in reverse order.
func (a *app) Close() error {
	var err error
	for i := len(a.closers) - 1; i >= 0; i-- {
		err = errors.Join(err, a.closers[i]())
	}
	a.closers = nil
	return err
}
