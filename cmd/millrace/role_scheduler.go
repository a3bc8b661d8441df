package main

import (
	"context"
	"errors"
	"net/http"

	"golang.org/x/sync/errgroup"

	"github.com/millrace/millrace/gateway/upstream"
	"github.com/millrace/millrace/projections/jobs"
)

// schedulerRole is `millrace scheduler`: the scheduler of the jobs in the
// rules' jobs section (wire_scheduler.go), with its admin API and the run
// history. Run two or more for availability: they compete for the
// scheduler's leader lock (in Consul when CONSUL_HTTP_ADDR is set) and only
// the leader fires; the jobs' records are in Consul KV beside the lock, so
// that a new leader fires each scheduled time exactly once. It reads the
// outcomes of the commands it sends from the query edges (the projectors'
// command log, found through discovery), and keeps the run history
// (projections/jobs) in scheduler.db in --data-dir.
func schedulerRole() roleSpec {
	return roleSpec{
		name:  "scheduler",
		short: "Fire the scheduled jobs of the rules, once per scheduled time across all schedulers",
		long: `scheduler fires the jobs declared in the jobs section of the rules: each run publishes its command
to Kafka with an id derived from the job and the scheduled time. Several schedulers compete for one
leader lock (Consul's, when CONSUL_HTTP_ADDR is set; else an in-process one, for a single
scheduler); the leader alone fires, and records every firing in Consul KV (else in scheduler.db)
before it publishes, so that the next leader fires each scheduled time exactly once and catches
up on what was missed by each job's misfire policy. It waits for each command's outcome in the
command log of the projectors' query edges (millrace-query, found through discovery) and retries
per the job's policy. The run history is kept in scheduler.db in --data-dir.
/admin/jobs is its admin API (millrace jobs); see docs/scheduling.md.`,
		httpAddr: "127.0.0.1:8380",
		dataDir:  true,
		build:    buildSchedulerRole,
	}
}

func buildSchedulerRole(ctx context.Context, env *roleEnv) (*roleParts, error) {
	a, cfg := env.app, env.cfg
	pub, err := env.publisher()
	if err != nil {
		return nil, err
	}

	// scheduler.db: the run history, and the jobs' records when there is
	// no Consul.
	db, err := a.openDB(ctx, cfg.path("scheduler.db"))
	if err != nil {
		return nil, err
	}
	rp, subscriber, err := env.router(ctx, pub)
	if err != nil {
		return nil, err
	}
	history := jobs.New(db)
	manager, err := buildProjections(ctx, a, env.kafka, db, rp.router, subscriber, env.obs.watchProjection, env.logger, history)
	if err != nil {
		return nil, err
	}
	// The command log is the projectors': read through their query edges.
	commands, err := upstream.New(upstream.Config{Resolver: env.disc.resolver, Registerer: env.obs.registerer(),
		Logger: env.logger.With("component", "upstream")})
	if err != nil {
		return nil, err
	}
	// The jobs come with the rules, which the runner applies once built.
	sp, err := buildScheduler(ctx, schedulerDeps{
		leaders: env.disc.leaders, getenv: env.getenv, env: cfg.Env, stateDB: db, stateFile: cfg.path("scheduler.db"), publisher: pub,
		commands: commands, history: history, instance: instanceName(cfg.HTTPAddr),
		registerer: env.obs.registerer(), logger: env.logger,
	})
	if err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	projectionsAdmin := manager.AdminHandler()
	mux.Handle("/admin/projections", projectionsAdmin)
	mux.Handle("/admin/projections/", projectionsAdmin)
	mux.Handle("/", withPoisonAdmin(rp.admin, http.NotFoundHandler()))
	return &roleParts{
		handler:   withJobsAdmin(sp, mux),
		holders:   ruleHolders{router: rp.stack, scheduler: sp.sched},
		publisher: pub,
		services:  []edgeService{{serviceScheduler, "scheduler"}},
		run: func(ctx context.Context, ready chan<- struct{}) error {
			g, gctx := errgroup.WithContext(ctx)
			g.Go(func() error { return commands.Run(gctx) })
			g.Go(func() error { return runProjector(gctx, rp.router, manager, ready) })
			g.Go(func() error { return sp.sched.Run(gctx) })
			err := g.Wait()
			if errors.Is(err, context.Canceled) {
				err = nil
			}
			return err
		},
		health: func(context.Context) any {
			return map[string]any{"leading": sp.sched.Leading(), "jobs": len(sp.sched.Jobs())}
		},
		banner: [][2]string{
			{"jobs", sp.desc},
			{"admin", "/admin/jobs, /admin/projections, /admin/poison, /admin/config"},
		},
	}, nil
}

// serviceScheduler is the service name schedulers register as.
const serviceScheduler = "millrace-scheduler"
