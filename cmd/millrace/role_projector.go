package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/platform/telemetry"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/queryapi"
)

// projectionNames are the projections a projector can run, in the order
// millrace dev runs them.
func projectionNames() []string {
	var names []string
	for _, p := range newReadModels(nil).all() {
		names = append(names, p.Name())
	}
	return names
}

// projectorRole is `millrace projector`: the projection runners of the
// named projections and the query edge (projections/queryapi) that gateways
// read, registered as millrace-query. Projectors share each projection's
// partitions through its consumer group; the projectors on one machine share
// projections.db in --data-dir, so that a partition moved to another
// projector continues from the position stored with the read model, and
// every query edge answers from the whole read model.
func projectorRole() roleSpec {
	var names []string
	return roleSpec{
		name:  "projector",
		short: "Run projections and serve the read models to gateways (the query edge)",
		long: `projector runs the projections --projections names (orders, sales, commands) and serves the read
models under /query/v1/ (registered as millrace-query), where the gateways (millrace gateway) read
them and record accepted commands in the command log. Projectors share each projection's
partitions through its consumer group; the projectors on one machine share --data-dir, whose
projections.db holds the read models with their positions, so that a partition moved to another
projector goes on from the stored position and any query edge answers from the whole read model.
It also serves the notifications list from notifications.db, which the workers on the same data
directory write. See docs/adr/0005-shared-sqlite-per-role.md. /admin/projections and
/admin/poison are its admin APIs.`,
		httpAddr: "127.0.0.1:8180",
		dataDir:  true,
		flags: func(fs *pflag.FlagSet, getenv func(string) string) {
			def := projectionNames()
			if v := getenv("MILLRACE_PROJECTIONS"); v != "" {
				def = splitList(v)
			}
			fs.StringSliceVar(&names, "projections", def, "projections this projector runs: "+strings.Join(projectionNames(), ", ")+" (MILLRACE_PROJECTIONS)")
		},
		validate: func() error {
			err := checkNames("projection", names, projectionNames())
			if len(names) == 0 {
				err = errors.Join(err, errors.New("projections: none given; a projector needs one at least"))
			}
			return err
		},
		build: func(ctx context.Context, env *roleEnv) (*roleParts, error) {
			return buildProjectorRole(ctx, env, names)
		},
	}
}

func buildProjectorRole(ctx context.Context, env *roleEnv, names []string) (*roleParts, error) {
	a, cfg := env.app, env.cfg
	pub, err := env.publisher()
	if err != nil {
		return nil, err
	}

	viewDB, err := a.openDB(ctx, cfg.path("projections.db"))
	if err != nil {
		return nil, err
	}
	// The notifications list is the workers' reactor's table; the query
	// edge serves it like a read model.
	notifyDB, err := a.openDB(ctx, cfg.path("notifications.db"))
	if err != nil {
		return nil, err
	}
	notes, err := notifications.New(ctx, notifyDB, time.Now)
	if err != nil {
		return nil, fmt.Errorf("open the notifications list: %w", err)
	}
	a.closers = append(a.closers, notes.Close) // its statements, before their database
	// Consumer lag of every group on /metrics.
	lag, err := telemetry.NewLagCollector(telemetry.LagConfig{Kafka: env.kafka, Logger: env.logger.With("component", "metrics")})
	if err != nil {
		return nil, err
	}
	if err := env.obs.registry.Register(lag); err != nil {
		return nil, fmt.Errorf("register consumer lag: %w", err)
	}

	rp, subscriber, err := env.router(ctx, pub)
	if err != nil {
		return nil, err
	}
	views := newReadModels(viewDB)
	selected, err := views.named(names)
	if err != nil {
		return nil, err
	}
	manager, err := buildProjections(ctx, a, env.kafka, viewDB, rp.router, subscriber, env.obs.watchProjection, env.logger, selected...)
	if err != nil {
		return nil, err
	}
	edge, err := newQueryEdge(views, notes, manager, env.logger)
	if err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.Handle(queryapi.Prefix, edge)
	projectionsAdmin := manager.AdminHandler()
	mux.Handle("/admin/projections", projectionsAdmin)
	mux.Handle("/admin/projections/", projectionsAdmin)
	mux.Handle("/", withPoisonAdmin(rp.admin, http.NotFoundHandler()))
	return &roleParts{
		handler:   mux,
		holders:   ruleHolders{router: rp.stack},
		publisher: pub,
		services:  []edgeService{{serviceQuery, "projector"}},
		run: func(ctx context.Context, ready chan<- struct{}) error {
			return runProjector(ctx, rp.router, manager, ready)
		},
		health: func(ctx context.Context) any {
			return map[string]any{"projections": names, "handlers": len(rp.router.Handlers())}
		},
		banner: [][2]string{
			{"query", queryapi.Prefix + " (registered as " + serviceQuery + ")"},
			{"runs", strings.Join(names, ", ")},
			{"admin", "/admin/projections, /admin/poison, /admin/config"},
		},
	}, nil
}

// runProjector runs the router and, once it runs, the projections on it,
// until ctx is done; then the projections stop and the router drains.
func runProjector(ctx context.Context, r *message.Router, m *projections.Manager, ready chan<- struct{}) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := r.Run(gctx); err != nil {
			return fmt.Errorf("run router: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		select {
		case <-r.Running():
		case <-gctx.Done():
			return r.Close()
		}
		// Projections consume on the router: they start once it runs, and
		// Run returns once ctx is done and their consumers stopped.
		errc := make(chan error, 1)
		go func() { errc <- m.Run(gctx) }()
		var err error
		select {
		case <-m.Started():
			close(ready)
			err = <-errc
		case err = <-errc:
		}
		if err != nil {
			err = fmt.Errorf("run projections: %w", err)
		}
		// router.Run returns once Close has drained in-flight handlers.
		return errors.Join(err, r.Close())
	})
	return g.Wait()
}
