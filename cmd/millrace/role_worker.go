package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/millrace/millrace/platform/commandstore"
)

// workerReactors names the reactors a worker can run.
func workerReactors() []string { return []string{"notifications"} }

// workerRole is `millrace worker`: the command handlers of the named
// contexts, the outbox relay, and the reactors. Workers share the work of
// each context through its consumer group; the workers on one machine share
// the SQLite files of --data-dir (aggregates, inbox and outbox in state.db,
// notifications.db, poison.db), so that whichever worker a partition moves
// to finds the state the last one left. One worker at a time publishes the
// shared outbox: the one holding the relay lock of the data directory.
func workerRole() roleSpec {
	var contexts, reactors []string
	return roleSpec{
		name:  "worker",
		short: "Run command handlers, the outbox relay and reactors for the named contexts",
		long: `worker runs the command handlers of the bounded contexts --contexts names (users, orders), the
outbox relay that publishes their events, and the reactors --reactors names (notifications).
Workers share each context's commands through its consumer group: start another and the
partitions are spread over both; stop one (or kill it) and the others take its partitions.

The workers on one machine share --data-dir: the aggregates, inbox and outbox (state.db), the
reactors' store (notifications.db) and the poison queue (poison.db), so that a partition moved to
another worker finds its aggregates where the last one left them, and a redelivered command is
found in the shared inbox. One worker at a time publishes the outbox, the one holding the
data directory's relay lock; when it stops or dies, another takes over within a moment. The
orders context checks users in the same state.db. See docs/adr/0005-shared-sqlite-per-role.md.
It registers as millrace-worker; /admin/poison and /admin/handlers are its admin APIs.`,
		httpAddr: "127.0.0.1:8280",
		dataDir:  true,
		flags: func(fs *pflag.FlagSet, getenv func(string) string) {
			ctxDefault := commandContexts()
			if v := getenv("MILLRACE_CONTEXTS"); v != "" {
				ctxDefault = splitList(v)
			}
			reactorDefault := workerReactors()
			if v := getenv("MILLRACE_REACTORS"); v != "" {
				reactorDefault = splitList(v)
			}
			fs.StringSliceVar(&contexts, "contexts", ctxDefault, "bounded contexts whose commands this worker handles: "+strings.Join(commandContexts(), ", ")+", or none (MILLRACE_CONTEXTS)")
			fs.StringSliceVar(&reactors, "reactors", reactorDefault, "reactors this worker runs: "+strings.Join(workerReactors(), ", ")+", or none (MILLRACE_REACTORS)")
		},
		validate: func() error {
			contexts, reactors = noneIsEmpty(contexts), noneIsEmpty(reactors)
			var errs []error
			errs = append(errs, checkNames("context", contexts, commandContexts()))
			errs = append(errs, checkNames("reactor", reactors, workerReactors()))
			if len(contexts) == 0 && len(reactors) == 0 {
				errs = append(errs, errors.New("contexts and reactors: none given; a worker needs something to run"))
			}
			return errors.Join(errs...)
		},
		build: func(ctx context.Context, env *roleEnv) (*roleParts, error) {
			return buildWorkerRole(ctx, env, contexts, reactors)
		},
	}
}

// worker is the running part of a worker role.
type worker struct {
	logger  *slog.Logger
	router  *message.Router
	control *handlerControl
	relay   *commandstore.Relay
	// relayLock makes one worker per data directory publish the outbox.
	relayLock *fileLock
	// relaying is true while this worker holds the relay lock.
	relaying atomic.Bool
}

func buildWorkerRole(ctx context.Context, env *roleEnv, contexts, reactors []string) (*roleParts, error) {
	a, cfg := env.app, env.cfg
	pub, err := env.publisher()
	if err != nil {
		return nil, err
	}

	stateDB, err := a.openDB(ctx, cfg.path("state.db"))
	if err != nil {
		return nil, err
	}
	store, err := commandstore.New(ctx, stateDB)
	if err != nil {
		return nil, fmt.Errorf("open command store: %w", err)
	}
	a.closers = append(a.closers, store.Close) // its statements, before their database
	w := &worker{
		logger:    env.logger.With("component", "outbox-relay"),
		relay:     store.NewRelay(pub, env.logger.With("component", "outbox-relay")),
		relayLock: newFileLock(filepath.Join(cfg.DataDir, "outbox-relay.lock")),
	}
	if err := env.obs.watch(env.kafka, store); err != nil { // consumer lag and outbox backlog on /metrics
		return nil, err
	}
	rp, subscriber, err := env.router(ctx, pub)
	if err != nil {
		return nil, err
	}
	w.router = rp.router
	// Handlers consume through resettable subscriptions; their replay
	// horizons are kept in state.db (wire_replay.go).
	w.control, err = newHandlerControl(ctx, a, env.kafka, stateDB, subscriber, env.logger)
	if err != nil {
		return nil, err
	}
	groups, err := buildCommandGroups(store, stateDB, contexts)
	if err != nil {
		return nil, err
	}
	if err := addGroups(rp.router, w.control.subscriber, env.wlog, false, groups); err != nil {
		return nil, fmt.Errorf("add command handlers: %w", err)
	}
	if slices.Contains(reactors, "notifications") {
		notifyDB, err := a.openDB(ctx, cfg.path("notifications.db"))
		if err != nil {
			return nil, err
		}
		_, reactorGroups, err := buildNotifications(ctx, a, notifyDB, env.logger)
		if err != nil {
			return nil, err
		}
		if err := addGroups(rp.router, w.control.subscriber, env.wlog, true, reactorGroups); err != nil {
			return nil, fmt.Errorf("add reactors: %w", err)
		}
	}

	admin := http.NewServeMux()
	handlersAdmin := w.control.adminHandler()
	admin.Handle("/admin/handlers", handlersAdmin)
	admin.Handle("/admin/handlers/", handlersAdmin)
	return &roleParts{
		handler:   withPoisonAdmin(rp.admin, admin),
		holders:   ruleHolders{router: rp.stack},
		publisher: pub,
		services:  []edgeService{{serviceWorker, "worker"}},
		run:       w.run,
		health: func(context.Context) any {
			return map[string]any{
				"contexts":     contexts,
				"reactors":     reactors,
				"handlers":     len(w.router.Handlers()),
				"outbox_relay": w.relayState(),
			}
		},
		banner: [][2]string{
			{"contexts", listOrNone(contexts)},
			{"reactors", listOrNone(reactors)},
			{"relay", "one worker per data directory publishes the outbox (" + w.relayLock.path + ")"},
			{"admin", "/admin/poison, /admin/handlers, /admin/config"},
		},
	}, nil
}

// run runs the router until ctx is done, and the outbox relay whenever this
// worker holds the relay lock; then it drains the handlers and, holding the
// lock, flushes the outbox.
func (w *worker) run(ctx context.Context, ready chan<- struct{}) error {
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	relayDone := make(chan error, 1)
	go func() { relayDone <- w.runRelay(relayCtx) }()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := w.router.Run(gctx); err != nil {
			return fmt.Errorf("run router: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		select {
		case <-w.router.Running():
			close(ready)
		case <-gctx.Done():
		}
		<-gctx.Done()
		// router.Run returns once Close has drained in-flight handlers.
		if err := w.router.Close(); err != nil {
			return fmt.Errorf("close router: %w", err)
		}
		return nil
	})
	err := g.Wait()

	// Handlers have stopped writing: publish what is left in the outbox,
	// if no other worker does (the lock says who does).
	stopRelay()
	if rerr := <-relayDone; rerr != nil {
		err = errors.Join(err, fmt.Errorf("outbox relay: %w", rerr))
	}
	held, lerr := w.relayLock.tryLock()
	if lerr != nil {
		err = errors.Join(err, lerr)
	}
	if held {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if ferr := w.relay.Flush(fctx); ferr != nil {
			err = errors.Join(err, fmt.Errorf("flush outbox: %w", ferr))
		}
		cancel()
	}
	w.relaying.Store(false)
	return errors.Join(err, w.relayLock.unlock())
}

// relayPoll is how often a standing-by worker tries to take the relay lock.
const relayPoll = 200 * time.Millisecond

// runRelay waits for the relay lock, then publishes the outbox until ctx
// is done. It keeps the lock: run releases it after the final flush.
func (w *worker) runRelay(ctx context.Context) error {
	held, err := w.relayLock.tryLock()
	if err != nil {
		return err
	}
	if !held {
		w.logger.Info("another worker on this data directory publishes the outbox; standing by", "lock", w.relayLock.path)
		if err := w.relayLock.lock(ctx, relayPoll); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	w.relaying.Store(true)
	w.logger.Info("publishing the outbox", "lock", w.relayLock.path)
	return w.relay.Run(ctx)
}

// relayState says whether this worker publishes the outbox.
func (w *worker) relayState() string {
	if w.relaying.Load() {
		return "publishing"
	}
	return "standby"
}

// checkNames reports every name that is not one of known.
func checkNames(kind string, names, known []string) error {
	var errs []error
	for _, n := range names {
		if !slices.Contains(known, n) {
			errs = append(errs, fmt.Errorf("%s %q: unknown; want one of %s", kind, n, strings.Join(known, ", ")))
		}
	}
	return errors.Join(errs...)
}

// listOrNone joins names, or says none.
func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// noneIsEmpty reads the list "none" as no names.
func noneIsEmpty(names []string) []string {
	if len(names) == 1 && names[0] == "none" {
		return nil
	}
	return names
}
