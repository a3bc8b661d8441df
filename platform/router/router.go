// Package router builds the Watermill router every millrace process runs its
// handlers and projections on, and the governance stack every one of them
// runs behind. What Sentinel and RocketMQ's retry and dead-letter queue gave
// a Java service, the stack gives a Watermill handler:
//
//	measure      handled messages by outcome, duration          (metrics.go)
//	 poison      park behind a poisoned key; poison failures    (poison.go)
//	  throttle   messages per second, token bucket              (throttle.go)
//	   retry     exponential backoff with jitter                (retry.go)
//	    breaker  hold the handler's messages while open         (breaker.go)
//	     timeout per attempt                                    (timeout.go)
//	      recoverer: a panic becomes a permanent error          (recoverer.go)
//	       handler (and any handler-level middleware, e.g. Idempotency)
//
// A message flows down the stack once. A transient failure comes back up to
// retry, which tries again after a growing, jittered wait; a permanent one
// (see Permanent and IsPermanent, a panic, or what Config.IsPermanent
// reports) is not retried. Either kind, once retry gives up, reaches the
// poison middleware, which records the message in the poison queue (see
// package poison) and acks it, so the handler moves on. Once a message of a
// key is poisoned, later messages of that key are parked behind it instead
// of overtaking it, while other keys flow.
//
// The circuit breaker sits inside retry and sees every attempt. When it
// opens, the handler stops consuming: the message in hand is held (no
// retries are spent, nothing is poisoned) until the open timeout ends, then
// tried once as the probe. Shutdown cancels the message context, and a held
// message is nacked to be delivered again later.
//
// Rules (retry, breaker, timeout, throttle; defaults and per handler) live in
// the Stack and change while messages flow: Stack.SetRules validates and
// swaps them, and every middleware reads the current rules per message.
//
// Retries and poisoning are added as events to the span in the message
// context (put there by tracing middleware in Config.Outer); with no span
// they are no-ops.
//
// Handlers that have no dedupe of their own (a reactor a user writes) can
// add the Idempotency middleware, which skips messages the handler
// completed before, across restarts and instances sharing its SQLite file.
//
// docs/governance.md explains each rule with a runnable example.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// DefaultPoisonTopic is the Kafka topic poisoned messages are published to.
const DefaultPoisonTopic = "millrace.poison"

// Config configures New and NewStack.
type Config struct {
	// Rules are the initial rules; DefaultRules() when zero.
	Rules Rules
	// Poison records failed messages and parks the later messages of their
	// key (package poison implements it). Required.
	Poison PoisonQueue
	// IsPermanent reports failures that retrying cannot fix, besides those
	// IsPermanent recognises (errors of Permanent, panics). May be nil.
	IsPermanent func(error) bool
	// Registerer receives the stack's metrics. When nil they are registered
	// on a private registry nobody scrapes; the default registerer is never used.
	Registerer prometheus.Registerer
	// Logger receives one record per poisoned message, per breaker
	// transition and per retry (debug). Nothing is logged when nil.
	Logger *slog.Logger
	// Outer middleware run outside the stack, outermost first, on every
	// handler. Tracing belongs here, so that the span it starts is in the
	// message context when the stack adds retry and poison events.
	Outer []message.HandlerMiddleware
	// CloseTimeout bounds how long the router's Close waits for in-flight
	// messages; 30 s when zero. Only New uses it.
	CloseTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Rules.isZero() {
		c.Rules = DefaultRules()
	}
	if c.IsPermanent == nil {
		c.IsPermanent = func(error) bool { return false }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 30 * time.Second
	}
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.Poison == nil {
		errs = append(errs, errors.New("poison queue: required, failed messages must go somewhere (see package poison)"))
	}
	if c.CloseTimeout < 0 {
		errs = append(errs, fmt.Errorf("close timeout %s: must not be negative", c.CloseTimeout))
	}
	if !c.Rules.isZero() { // zero rules are the defaults
		if err := c.Rules.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("rules: %w", err))
		}
	}
	return errors.Join(errs...)
}

// New returns a Watermill router whose every handler runs behind cfg.Outer
// and then the Stack, and the Stack itself (to change rules, read breaker
// states). The caller runs the router (Run) and closes it (Close); closing
// cancels the context of in-flight messages (a message held by an open
// breaker is nacked) and waits up to CloseTimeout for them.
func New(cfg Config) (*message.Router, *Stack, error) {
	cfg.setDefaults()
	s, err := NewStack(cfg)
	if err != nil {
		return nil, nil, err
	}
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, NewWatermillLogger(cfg.Logger))
	if err != nil {
		return nil, nil, fmt.Errorf("create router: %w", err)
	}
	r.AddMiddleware(cfg.Outer...)
	r.AddMiddleware(s.Middleware)
	return r, s, nil
}

// Stack is the governance middleware and the state it keeps per handler:
// the current rules, a circuit breaker and a rate limiter per handler, and
// the metrics. It is safe for concurrent use. It owns no goroutines and
// needs no closing.
type Stack struct {
	rules     atomic.Pointer[Rules]
	poison    PoisonQueue
	permanent func(error) bool
	logger    *slog.Logger
	metrics   *metrics

	// mu guards the maps below and rule changes to their values. Every
	// message looks its handler up in them, so look-ups share it.
	mu       sync.RWMutex
	breakers map[string]*circuit
	limiters map[string]*rate.Limiter
}

// NewStack builds the stack alone, for a router built elsewhere:
// router.AddMiddleware(stack.Middleware). It registers the metrics on
// cfg.Registerer; registering two stacks on one registerer fails.
func NewStack(cfg Config) (*Stack, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("router config: %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register router metrics: %w", err)
	}
	s := &Stack{
		poison:    cfg.Poison,
		permanent: cfg.IsPermanent,
		logger:    cfg.Logger,
		metrics:   m,
		breakers:  make(map[string]*circuit),
		limiters:  make(map[string]*rate.Limiter),
	}
	rules := cfg.Rules
	s.rules.Store(&rules)
	return s, nil
}

// Middleware wraps h in the whole stack, in the order the package
// documentation shows. Add it as router-level middleware.
func (s *Stack) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return s.measure(s.poisoned(s.throttle(s.retry(s.breaker(s.timeout(s.attempt(s.recoverer(h))))))))
}

// Rules returns the rules in force.
func (s *Stack) Rules() Rules { return *s.rules.Load() }

// SetRules validates r and, when it is valid, puts it in force at once: every
// message started from now on uses it. An invalid r is refused with every
// problem listed, and the rules in force stay. Breakers keep their state
// (open stays open); their thresholds change in place.
func (s *Stack) SetRules(r Rules) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("refuse router rules: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules.Store(&r)
	for name, b := range s.breakers {
		b.setRules(r.For(name).Breaker)
	}
	for name, l := range s.limiters {
		setLimit(l, r.For(name).Throttle)
	}
	return nil
}

// isPermanent reports failures that are not retried.
func (s *Stack) isPermanent(err error) bool {
	return IsPermanent(err) || s.permanent(err)
}

// rulesFor returns the current rules of handler.
func (s *Stack) rulesFor(handler string) HandlerRules {
	return s.rules.Load().For(handler)
}

// delivery is what the middleware of one message share, kept in the message
// context by measure: the handler's name, attempts and error times for the
// poison headers, time held by the breaker (not counted against
// retry.max_elapsed), and the outcome for the metrics.
type delivery struct {
	handler    string
	attempts   int
	firstError time.Time
	lastError  time.Time
	held       time.Duration
	outcome    string
}

type deliveryKey struct{}

// deliveryOf returns the delivery of msg, or a fresh one when msg did not go
// through measure (a middleware used on its own in a test).
func deliveryOf(msg *message.Message) *delivery {
	if d, ok := msg.Context().Value(deliveryKey{}).(*delivery); ok {
		return d
	}
	d := &delivery{handler: handlerName(msg)}
	msg.SetContext(context.WithValue(msg.Context(), deliveryKey{}, d))
	return d
}

// handlerName is the name the handler was added to the router with.
func handlerName(msg *message.Message) string {
	if n := message.HandlerNameFromCtx(msg.Context()); n != "" {
		return n
	}
	return "unnamed"
}

// attempt counts the attempts at a message and when they failed, for the
// poison queue's records. It runs inside the breaker and the timeout, so
// every call of the handler (a probe included) counts.
func (s *Stack) attempt(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		d := deliveryOf(msg)
		d.attempts++
		out, err := h(msg)
		if err != nil {
			now := time.Now()
			if d.firstError.IsZero() {
				d.firstError = now
			}
			d.lastError = now
		}
		return out, err
	}
}

func withDelivery(ctx context.Context, d *delivery) context.Context {
	return context.WithValue(ctx, deliveryKey{}, d)
}
