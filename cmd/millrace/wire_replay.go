package main

// Replay wiring: the projection manager (live versions on the router, rebuilds
// in batches), handlers whose consumer groups can be reset, the replay mark
// for what a reset delivers again, and the admin API of both.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/projections"
)

// replayParts are the parts of the app that replay and reset.
type replayParts struct {
	manager  *projections.Manager
	handlers *handlerControl
}

// buildProjections creates the projection manager over db: the active version
// of each projection consumes on router r (through subscriber, so behind the
// governance stack), rebuilds consume with a batch consumer of their own.
func buildProjections(ctx context.Context, a *app, kcfg kafka.Config, db *sql.DB, r *message.Router,
	subscriber func(group string) (message.Subscriber, error), onRunner func(*projections.Runner),
	logger *slog.Logger, ps ...projections.Projection,
) (*projections.Manager, error) {
	adm, err := kafka.NewAdmin(kcfg)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, adm.Close)
	src, err := kafka.NewBatchConsumer(kcfg, kafka.BatchOptions{}, logger.With("component", "rebuild-consumer"))
	if err != nil {
		return nil, err
	}
	m, err := projections.NewManager(ctx, projections.Config{
		DB:          db,
		Projections: ps,
		Source:      src,
		Offsets:     adm,
		Groups:      adm,
		Live:        &routerLive{router: r, subscriber: subscriber},
		Logger:      logger.With("component", "projections"),
		OnRunner:    onRunner,
	})
	if err != nil {
		return nil, fmt.Errorf("create projections: %w", err)
	}
	return m, nil
}

// routerLive runs the active version of a projection on the Watermill router:
// one handler per topic, consuming in the version's group (Runner.GroupFor),
// so that live consumption goes through the same middleware as every
// handler. The handler's name does not carry the version
// ("projection.<name>.<topic>"): metrics, rules and poison-queue entries of a
// projection stay the same across rebuilds. Only one version of a projection
// runs live at a time, so the names never clash.
type routerLive struct {
	router     *message.Router
	subscriber func(group string) (message.Subscriber, error)
}

// Start implements projections.Live. The router must be running.
func (l *routerLive) Start(ctx context.Context, r *projections.Runner) (func(context.Context) error, error) {
	type started struct {
		h   *message.Handler
		sub message.Subscriber
	}
	var hs []started
	stop := func(ctx context.Context) error {
		var errs []error
		for _, s := range hs {
			select {
			case <-s.h.Started():
				s.h.Stop()
				select {
				case <-s.h.Stopped():
				case <-ctx.Done():
					errs = append(errs, fmt.Errorf("stop %s: %w", r.Group(), ctx.Err()))
				}
			default:
			}
			if err := s.sub.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	for _, topic := range r.Topics() {
		group := r.GroupFor(topic)
		sub, err := l.subscriber(group)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("subscribe %s: %w", group, err), stop(ctx))
		}
		name := "projection." + r.Name() + "." + topic
		hs = append(hs, started{h: l.router.AddConsumerHandler(name, topic, sub, r.Handle), sub: sub})
	}
	if err := l.router.RunHandlers(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("run projection %s v%d: %w", r.Name(), r.Version(), err), stop(ctx))
	}
	return stop, nil
}

// handlerControl makes the consumer groups of handlers (command handlers,
// reactors) resettable: it hands out their subscribers, and can take one
// handler's consumer out of its group, move the group, and subscribe again,
// all under the router's feet — the router's handler keeps running on the
// same channel and never notices, so its middleware and its place in the
// router stay as they were. Messages a reset delivers again are marked as
// replays (cloudevents.WithReplay), so that reactors do not act on them twice;
// the replay horizons are kept in db, so a restart in the middle of a replay
// still marks the rest.
type handlerControl struct {
	admin  *kafka.Admin
	newSub func(group string) (message.Subscriber, error)
	db     *sql.DB
	logger *slog.Logger

	mu       sync.Mutex
	handlers map[string]*replayAwareSubscriber // by handler name (= consumer group)
	resets   map[string]bool                   // handlers being reset
}

const setupReplaysSQL = `
CREATE TABLE IF NOT EXISTS handler_replays (
	consumer_group TEXT    NOT NULL,
	topic          TEXT    NOT NULL,
	"partition"    INTEGER NOT NULL,
	replay_until   INTEGER NOT NULL,
	PRIMARY KEY (consumer_group, topic, "partition")
) WITHOUT ROWID;`

func newHandlerControl(ctx context.Context, a *app, kcfg kafka.Config, db *sql.DB,
	newSub func(group string) (message.Subscriber, error), logger *slog.Logger,
) (*handlerControl, error) {
	if _, err := db.ExecContext(ctx, setupReplaysSQL); err != nil {
		return nil, fmt.Errorf("create handler replay table: %w", err)
	}
	adm, err := kafka.NewAdmin(kcfg)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, adm.Close)
	return &handlerControl{admin: adm, newSub: newSub, db: db, logger: logger.With("component", "handler-reset"),
		handlers: map[string]*replayAwareSubscriber{}, resets: map[string]bool{}}, nil
}

// subscriber is the subscriber constructor for handler groups: the group
// name is the handler's name, as cqrs.EventGroupProcessor names them.
func (c *handlerControl) subscriber(group string) (message.Subscriber, error) {
	s := &replayAwareSubscriber{group: group, control: c}
	c.mu.Lock()
	c.handlers[group] = s
	c.mu.Unlock()
	return s, nil
}

// horizons reads up to where each partition of topic is a replay for group.
func (c *handlerControl) horizons(ctx context.Context, group, topic string) (map[int32]int64, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT "partition", replay_until FROM handler_replays WHERE consumer_group = ? AND topic = ?`, group, topic)
	if err != nil {
		return nil, fmt.Errorf("read replay horizons of %s: %w", group, err)
	}
	defer rows.Close()
	out := map[int32]int64{}
	for rows.Next() {
		var (
			p int32
			o int64
		)
		if err := rows.Scan(&p, &o); err != nil {
			return nil, fmt.Errorf("read replay horizons of %s: %w", group, err)
		}
		out[p] = o
	}
	return out, rows.Err()
}

// replayAwareSubscriber is the subscriber of one handler. The channel it
// gives the router stays open for as long as the router's context lives;
// behind it, a Kafka consumer in the handler's group (an inner subscriber)
// can be detached — it leaves the group — and a new one attached, which is
// how a reset moves the group while nobody consumes in it. It marks the
// messages below the replay horizons as replays.
type replayAwareSubscriber struct {
	group   string
	control *handlerControl

	mu        sync.Mutex
	topic     string
	outer     context.Context // the router's, for the inner subscriptions
	out       chan *message.Message
	inner     message.Subscriber
	cancel    context.CancelFunc
	forwarded chan struct{} // closed when the inner subscription's messages stopped
	closed    bool
}

// Subscribe implements message.Subscriber. One subscription per subscriber:
// the router makes one per handler.
func (s *replayAwareSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out != nil {
		return nil, fmt.Errorf("subscribe %s: already subscribed to %s", s.group, s.topic)
	}
	s.topic, s.outer, s.out = topic, ctx, make(chan *message.Message)
	if err := s.attachLocked(); err != nil {
		s.out = nil
		return nil, err
	}
	out := s.out
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.detachLocked()
		s.closed = true
		close(out) // nothing forwards any more
	}()
	return out, nil
}

// attachLocked subscribes a new inner subscriber and forwards its messages.
func (s *replayAwareSubscriber) attachLocked() error {
	if s.closed || s.outer == nil || s.outer.Err() != nil {
		return fmt.Errorf("subscribe %s: the handler has stopped", s.group)
	}
	horizons, err := s.control.horizons(s.outer, s.group, s.topic)
	if err != nil {
		return err
	}
	inner, err := s.control.newSub(s.group)
	if err != nil {
		return err
	}
	ictx, cancel := context.WithCancel(s.outer)
	in, err := inner.Subscribe(ictx, s.topic)
	if err != nil {
		cancel()
		return errors.Join(err, inner.Close())
	}
	forwarded := make(chan struct{})
	out := s.out
	go func() {
		defer close(forwarded)
		for msg := range in {
			if _, p, offset, ok := kafka.Position(msg); ok && offset < horizons[p] {
				msg.SetContext(cloudevents.WithReplay(msg.Context()))
			}
			select {
			case out <- msg:
			case <-ictx.Done():
				// Not handed over: the group reads it again.
			}
		}
	}()
	s.inner, s.cancel, s.forwarded = inner, cancel, forwarded
	return nil
}

// detachLocked ends the inner subscription: its consumer leaves the group.
func (s *replayAwareSubscriber) detachLocked() {
	if s.inner == nil {
		return
	}
	s.cancel()
	<-s.forwarded
	if err := s.inner.Close(); err != nil {
		s.control.logger.Warn("close the consumer of a handler", "handler", s.group, "error", err)
	}
	s.inner, s.cancel, s.forwarded = nil, nil, nil
}

// attached reports whether a consumer of the group is subscribed.
func (s *replayAwareSubscriber) attached() (topic string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.topic, s.inner != nil
}

// Close implements message.Subscriber; the router calls it when it closes.
func (s *replayAwareSubscriber) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.detachLocked()
	return nil
}

// handlerReset is what a reset did, as the admin API answers.
type handlerReset struct {
	Handler     string                `json:"handler"`
	Topic       string                `json:"topic"`
	Group       string                `json:"group"`
	Target      string                `json:"target"`
	Partitions  []partitionRedelivery `json:"partitions"`
	Redelivered int64                 `json:"redelivered"`
	Skipped     int64                 `json:"skipped"`
}

type partitionRedelivery struct {
	Partition   int32 `json:"partition"`
	From        int64 `json:"from"`
	To          int64 `json:"to"`
	Redelivered int64 `json:"redelivered"`
	Skipped     int64 `json:"skipped"`
}

// errUnknownHandler is wrapped by the error of reset for a name that is no
// resettable handler.
var errUnknownHandler = errors.New("unknown handler")

// errResetInProgress: the handler is already being reset.
var errResetInProgress = errors.New("handler reset in progress")

// reset takes handler name's consumer out of its group, moves the group to
// target, records what will be a replay, and subscribes again — whatever
// happened in between. The router's handler keeps running meanwhile; it just
// receives nothing.
func (c *handlerControl) reset(ctx context.Context, name string, target kafka.ResetTarget) (_ handlerReset, err error) {
	c.mu.Lock()
	s, ok := c.handlers[name]
	busy := c.resets[name]
	if ok && !busy {
		c.resets[name] = true
	}
	c.mu.Unlock()
	if !ok {
		return handlerReset{}, fmt.Errorf("%w %q: the handlers are %s", errUnknownHandler, name, strings.Join(c.names(), ", "))
	}
	if busy {
		return handlerReset{}, fmt.Errorf("reset handler %s: %w", name, errResetInProgress)
	}
	defer func() {
		c.mu.Lock()
		delete(c.resets, name)
		c.mu.Unlock()
	}()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inner == nil {
		return handlerReset{}, fmt.Errorf("reset handler %s: it is not consuming (the router is not running it)", name)
	}
	topic := s.topic
	s.detachLocked()
	defer func() {
		if aerr := s.attachLocked(); aerr != nil {
			err = errors.Join(err, fmt.Errorf("reset handler %s: subscribe again: %w", name, aerr))
		}
	}()
	if err := pollUntil(ctx, 30*time.Second, func() (bool, error) {
		n, err := c.admin.GroupMembers(ctx, name)
		return n == 0, err
	}); err != nil {
		return handlerReset{}, fmt.Errorf("reset handler %s: its consumer group still has members (other processes run it? stop them first): %w", name, err)
	}

	plan, err := c.admin.ResetGroup(ctx, name, topic, target)
	if err != nil {
		return handlerReset{}, fmt.Errorf("reset handler %s: %w", name, err)
	}
	out := handlerReset{Handler: name, Topic: topic, Group: name, Target: target.String(), Partitions: []partitionRedelivery{}}
	for _, r := range plan {
		out.Partitions = append(out.Partitions, partitionRedelivery{Partition: r.Partition, From: r.From, To: r.To,
			Redelivered: r.Redelivered(), Skipped: r.Skipped()})
		out.Redelivered += r.Redelivered()
		out.Skipped += r.Skipped()
		if r.Redelivered() == 0 {
			continue
		}
		if _, err := c.db.ExecContext(ctx, `
INSERT INTO handler_replays (consumer_group, topic, "partition", replay_until) VALUES (?, ?, ?, ?)
ON CONFLICT (consumer_group, topic, "partition") DO UPDATE SET replay_until = max(replay_until, excluded.replay_until)`,
			name, topic, r.Partition, r.From); err != nil {
			return handlerReset{}, fmt.Errorf("reset handler %s: record replay of partition %d: %w", name, r.Partition, err)
		}
	}
	c.logger.InfoContext(ctx, "handler reset", "handler", name, "topic", topic, "target", target.String(),
		"redelivered", out.Redelivered, "skipped", out.Skipped)
	return out, nil
}

func (c *handlerControl) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.handlers))
}

// pollUntil polls cond every 20 ms until it holds, ctx is done or d passed.
func pollUntil(ctx context.Context, d time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond()
		if err == nil && ok {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// handlerInfo is one line of GET /admin/handlers.
type handlerInfo struct {
	Name    string `json:"name"`
	Topic   string `json:"topic"`
	Group   string `json:"group"`
	Running bool   `json:"running"`
}

// resetRequest is the body of POST /admin/handlers/{name}/reset: to_time
// (RFC 3339), or to_offset ("earliest", "latest", an offset for every
// partition, or partition=offset pairs separated by commas).
type resetRequest struct {
	ToTime   string `json:"to_time,omitempty"`
	ToOffset string `json:"to_offset,omitempty"`
}

// parseResetTarget reads a reset target as the CLI and the admin API take it.
func parseResetTarget(toTime, toOffset string) (kafka.ResetTarget, error) {
	switch {
	case toTime != "" && toOffset != "":
		return kafka.ResetTarget{}, errors.New("give a time or an offset to reset to, not both")
	case toTime != "":
		t, err := time.Parse(time.RFC3339Nano, toTime)
		if err != nil {
			return kafka.ResetTarget{}, fmt.Errorf("time %q: want RFC 3339, e.g. 2025-01-31T12:00:00Z", toTime)
		}
		return kafka.ResetTarget{Time: t}, nil
	case toOffset == "earliest":
		return kafka.ResetTarget{Earliest: true}, nil
	case toOffset == "latest":
		return kafka.ResetTarget{Latest: true}, nil
	case toOffset == "":
		return kafka.ResetTarget{}, errors.New("give a time (RFC 3339) or an offset (earliest, latest, N or partition=offset,…) to reset to")
	}
	target := kafka.ResetTarget{Offsets: map[int32]int64{}}
	if n, err := strconv.ParseInt(toOffset, 10, 64); err == nil {
		target.Offsets[-1] = n // every partition: expanded by the caller
		return target, nil
	}
	for _, part := range strings.Split(toOffset, ",") {
		p, o, ok := strings.Cut(strings.TrimSpace(part), "=")
		pn, perr := strconv.ParseInt(p, 10, 32)
		on, oerr := strconv.ParseInt(o, 10, 64)
		if !ok || perr != nil || oerr != nil {
			return kafka.ResetTarget{}, fmt.Errorf("offset %q: want earliest, latest, an offset, or partition=offset pairs such as 0=42,1=40", toOffset)
		}
		target.Offsets[int32(pn)] = on
	}
	return target, nil
}

// expandAllPartitions turns an offset for every partition (key -1) into one
// per partition of topic.
func (c *handlerControl) expandAllPartitions(ctx context.Context, topic string, t kafka.ResetTarget) (kafka.ResetTarget, error) {
	all, ok := t.Offsets[-1]
	if !ok {
		return t, nil
	}
	ends, err := c.admin.EndOffsets(ctx, topic)
	if err != nil {
		return t, err
	}
	t.Offsets = map[int32]int64{}
	for p := range ends[topic] {
		t.Offsets[p] = all
	}
	return t, nil
}

// adminHandler serves GET /admin/handlers and POST /admin/handlers/{name}/reset.
func (c *handlerControl) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/handlers", func(w http.ResponseWriter, r *http.Request) {
		list := []handlerInfo{}
		for _, name := range c.names() {
			c.mu.Lock()
			s := c.handlers[name]
			c.mu.Unlock()
			topic, running := s.attached()
			list = append(list, handlerInfo{Name: name, Topic: topic, Group: name, Running: running})
		}
		writeAdminJSON(w, http.StatusOK, map[string]any{"handlers": list})
	})
	mux.HandleFunc("POST /admin/handlers/{name}/reset", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
		var req resetRequest
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		if err != nil {
			writeAdminProblem(w, r, http.StatusBadRequest, "bad-request", "Bad request",
				`The body is not a reset request: send {"to_time": "2025-01-31T12:00:00Z"} or {"to_offset": "earliest"}.`)
			return
		}
		target, err := parseResetTarget(req.ToTime, req.ToOffset)
		if err != nil {
			writeAdminProblem(w, r, http.StatusBadRequest, "bad-request", "Bad request", err.Error())
			return
		}
		c.mu.Lock()
		h, known := c.handlers[name]
		c.mu.Unlock()
		if known {
			topic, _ := h.attached()
			if target, err = c.expandAllPartitions(r.Context(), topic, target); err != nil {
				writeAdminProblem(w, r, http.StatusInternalServerError, "internal", "Internal server error", err.Error())
				return
			}
		}
		res, err := c.reset(r.Context(), name, target)
		switch {
		case errors.Is(err, errUnknownHandler):
			writeAdminProblem(w, r, http.StatusNotFound, "unknown-handler", "Unknown handler", err.Error())
		case errors.Is(err, errResetInProgress), errors.Is(err, kafka.ErrGroupActive):
			writeAdminProblem(w, r, http.StatusConflict, "handler-busy", "Handler busy", err.Error())
		case err != nil:
			c.logger.ErrorContext(r.Context(), "reset handler", "handler", name, "error", err)
			writeAdminProblem(w, r, http.StatusInternalServerError, "internal", "Internal server error", err.Error())
		default:
			writeAdminJSON(w, http.StatusOK, res)
		}
	})
	return mux
}

// withReplayAdmin serves the projections' admin API under /admin/projections
// and the handlers' under /admin/handlers, and everything else with next.
func withReplayAdmin(p *replayParts, next http.Handler) http.Handler {
	projectionsAdmin := p.manager.AdminHandler()
	handlersAdmin := p.handlers.adminHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch path := r.URL.Path; {
		case path == "/admin/projections" || strings.HasPrefix(path, "/admin/projections/"):
			projectionsAdmin.ServeHTTP(w, r)
		case path == "/admin/handlers" || strings.HasPrefix(path, "/admin/handlers/"):
			handlersAdmin.ServeHTTP(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// run runs the projection manager; call it once the router runs. It returns
// when ctx is done and the projections' consumers stopped; started is
// closed once the projections consume.
func (p *replayParts) run(ctx context.Context, started chan<- struct{}) error {
	errc := make(chan error, 1)
	go func() { errc <- p.manager.Run(ctx) }()
	select {
	case <-p.manager.Started():
		close(started)
	case err := <-errc:
		return fmt.Errorf("run projections: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("run projections: %w", err)
	}
	return nil
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeAdminProblem(w, nil, http.StatusInternalServerError, "internal", "Internal server error", "The answer could not be encoded.")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func writeAdminProblem(w http.ResponseWriter, r *http.Request, status int, kind, title, detail string) {
	p := projections.Problem{Type: "https://millrace.dev/problems/" + kind, Title: title, Status: status, Detail: detail}
	if r != nil {
		p.Instance = r.URL.Path
	}
	body, _ := json.Marshal(p) // a Problem always encodes
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// logDeliverer "delivers" notifications to the log, as a mail or push service
// would send them: in millrace dev, the reactor's side effect to watch.
type logDeliverer struct{ logger *slog.Logger }

func (d logDeliverer) Deliver(ctx context.Context, n notifications.Notification) error {
	d.logger.InfoContext(ctx, "notification delivered", "user_id", n.UserID, "kind", n.Kind, "subject", n.Subject, "event_id", n.EventID)
	return nil
}
