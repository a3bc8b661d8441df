package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
)

// routerDeps are what buildRouter needs from the rest of the process.
type routerDeps struct {
	// Publisher publishes poisoned messages to the poison topic and
	// requeued ones to their original topics.
	Publisher message.Publisher
	// Registerer receives the router's metrics; nil keeps them private
	// (nothing scrapes them).
	Registerer prometheus.Registerer
	// Outer middleware run outside the governance stack (tracing).
	Outer  []message.HandlerMiddleware
	Logger *slog.Logger
}

// routerParts are the router of a process and what hangs off it.
type routerParts struct {
	router *message.Router
	// stack holds the live router rules (SetRules) and breaker states.
	stack *router.Stack
	// poison is the poison queue; admin serves its API under /admin/poison.
	poison *poison.Store
	admin  http.Handler
}

// buildRouter opens the poison store (poison.db in the data directory) and
// builds the router every handler and projection runs on, behind the
// governance stack: retries, breakers, timeouts, throttles and the poison
// queue, with the initial rules and the failures that are permanent
// (isPermanent). Later rules come through parts.stack.SetRules.
func buildRouter(ctx context.Context, a *app, cfg devConfig, deps routerDeps) (routerParts, error) {
	db, err := a.openDB(ctx, cfg.path("poison.db"))
	if err != nil {
		return routerParts{}, err
	}
	store, err := poison.New(ctx, db, poison.Config{
		Publisher: deps.Publisher,
		Topic:     router.DefaultPoisonTopic,
		Logger:    deps.Logger.With("component", "poison"),
	})
	if err != nil {
		return routerParts{}, fmt.Errorf("open poison queue: %w", err)
	}
	a.closers = append(a.closers, store.Close) // before its database, closed in reverse order
	r, stack, err := router.New(router.Config{
		Rules:       router.DefaultRules(),
		Poison:      store,
		IsPermanent: isPermanent,
		Registerer:  deps.Registerer,
		Logger:      deps.Logger.With("component", "router"),
		Outer:       deps.Outer,
	})
	if err != nil {
		return routerParts{}, fmt.Errorf("build router: %w", err)
	}
	return routerParts{
		router: r,
		stack:  stack,
		poison: store,
		admin:  poison.AdminHandler(store, deps.Logger.With("component", "poison-admin")),
	}, nil
}

// withPoisonAdmin serves the poison admin API under /admin/poison and
// everything else from next.
func withPoisonAdmin(admin, next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/admin/poison", admin)
	mux.Handle("/admin/poison/", admin)
	mux.Handle("/", next)
	return mux
}
