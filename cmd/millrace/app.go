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
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/schema"
	"github.com/millrace/millrace/platform/sqlite"
	"github.com/millrace/millrace/projections"
	commandlog "github.com/millrace/millrace/projections/commands"
	orderviews "github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/sales"
	"github.com/millrace/millrace/schemas"
)

// app is every part of one millrace process, built in order by buildApp
// and closed in reverse order by Close.
type app struct {
	logger    *slog.Logger
	publisher message.Publisher
	router    *message.Router
	relay     *commandstore.Relay
	gateway   *gateway.Gateway
	closers   []func() error
	ready     chan struct{}
}

// buildApp builds the command handlers, reactors, projections and gateway
// on the given brokers and the SQLite files under cfg.DataDir.
func buildPlatform(ctx context.Context, cfg devConfig, brokers []string, logger *slog.Logger) (_ *app, err error) {
	a := &app{logger: logger, ready: make(chan struct{})}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.Close())
		}
	}()
	wlog := watermill.NewSlogLoggerWithLevelMapping(logger, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})

	// Kafka: topics first, since publishing to a missing topic fails.
	kcfg := kafka.Config{Brokers: brokers, ClientID: "millrace-dev"}
	topics := []kafka.Topic{{Name: router.DefaultPoisonTopic, Partitions: int32(cfg.Partitions)}}
	for _, t := range events.Topics() {
		topics = append(topics, kafka.Topic{Name: t.Name, Partitions: int32(cfg.Partitions), Retention: t.Retention})
	}
	if err := kafka.EnsureTopics(ctx, kcfg, topics...); err != nil {
		return a, fmt.Errorf("create topics: %w", err)
	}
	pub, err := kafka.NewPublisher(kcfg, wlog)
	if err != nil {
		return a, fmt.Errorf("create kafka publisher: %w", err)
	}
	a.publisher = pub
	a.closers = append(a.closers, pub.Close)

	// SQLite: command-side state (aggregates, inbox, outbox), read models,
	// and the notifications reactor's store.
	stateDB, err := a.openDB(ctx, cfg.path("state.db"))
	if err != nil {
		return a, err
	}
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
	a.relay = store.NewRelay(pub, logger.With("component", "outbox-relay"))

	// The router runs every consumer with the default middleware stack.
	r, err := router.New(router.Config{IsPermanent: isPermanent}, pub, logger)
	if err != nil {
		return a, err
	}
	a.router = r

	subscriber := func(group string) (message.Subscriber, error) {
		return kafka.NewSubscriber(kcfg, group, wlog)
	}

	// Command handlers: one handler group per context, so that the commands
	// of one aggregate are handled in partition order.
	userAgg, err := commandstore.NewAggregate[users.User, events.Message](store, commandstore.AggregateConfig{
		Name: "user", Handler: "users", Topic: events.TopicUserEvents, Source: events.SourceUsers,
	})
	if err != nil {
		return a, err
	}
	orderAgg, err := commandstore.NewAggregate[orders.Order, events.Message](store, commandstore.AggregateConfig{
		Name: "order", Handler: "orders", Topic: events.TopicOrderEvents, Source: events.SourceOrders,
	})
	if err != nil {
		return a, err
	}
	commandGroups := map[string]handlerGroup{
		"users":  {events.TopicUserCommands, users.New(userAgg, time.Now).GroupHandlers()},
		"orders": {events.TopicOrderCommands, orders.New(orderAgg, userAgg, time.Now).GroupHandlers()},
	}
	if err := addGroups(r, subscriber, wlog, false, commandGroups); err != nil {
		return a, fmt.Errorf("add command handlers: %w", err)
	}

	// Reactors: side effects of events, keyed by event id.
	reactor, err := notifications.New(ctx, notifyDB, time.Now)
	if err != nil {
		return a, fmt.Errorf("create notifications reactor: %w", err)
	}
	reactorGroups := map[string]handlerGroup{}
	for _, topic := range []string{events.TopicUserEvents, events.TopicOrderEvents} {
		reactorGroups["notifications."+topic] = handlerGroup{topic, reactor.GroupHandlers()}
	}
	if err := addGroups(r, subscriber, wlog, true, reactorGroups); err != nil {
		return a, fmt.Errorf("add reactors: %w", err)
	}

	// Projections: one consumer group per projection version and topic.
	orderView := orderviews.New(viewDB)
	salesView := sales.New(viewDB)
	commandView := commandlog.New(viewDB)
	for _, p := range []projections.Projection{orderView, salesView, commandView} {
		runner, err := projections.NewRunner(ctx, viewDB, p, logger.With("projection", p.Name()))
		if err != nil {
			return a, fmt.Errorf("create projection %s: %w", p.Name(), err)
		}
		for _, topic := range p.Topics() {
			sub, err := subscriber(runner.Group() + "." + topic)
			if err != nil {
				return a, fmt.Errorf("subscribe projection %s to %s: %w", p.Name(), topic, err)
			}
			r.AddNoPublisherHandler("projection."+p.Name()+"."+topic, topic, sub, runner.Handle)
		}
	}

	validator, err := schema.New(schemas.FS())
	if err != nil {
		return a, fmt.Errorf("compile schemas: %w", err)
	}
	gw, err := gateway.New(gateway.Config{MaxBodyBytes: cfg.MaxBodyBytes, Logger: logger}, gateway.Deps{
		Validator:     validator,
		Publisher:     pub,
		Commands:      commandView,
		Orders:        orderView,
		Sales:         salesView,
		Notifications: reactor,
	})
	if err != nil {
		return a, fmt.Errorf("create gateway: %w", err)
	}
	a.gateway = gw
	return a, nil
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
	return db, nil
}

// HTTPHandler serves the gateway.
func (a *app) HTTPHandler() http.Handler { return a.gateway.Handler() }

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
			close(a.ready)
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
