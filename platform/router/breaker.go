package router

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/eapache/go-resiliency/breaker"
)

// State is the state of a circuit breaker. Its numbers are the values of the
// millrace_handler_breaker_state gauge.
type State int

const (
	// Closed: messages flow.
	Closed State = 0
	// HalfOpen: one message is let through as a probe; the others wait.
	HalfOpen State = 1
	// Open: the handler's messages are held until the open timeout ends.
	Open State = 2
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// MarshalText writes the state as "closed", "half-open" or "open".
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// BreakerStatus describes one handler's circuit breaker.
type BreakerStatus struct {
	Handler string    `json:"handler"`
	State   State     `json:"state"`
	Since   time.Time `json:"since"`
	// Reason says why the breaker last opened from closed.
	Reason string `json:"reason,omitempty"`
}

// consPoll is how often a held message looks again whether the
// go-resiliency breaker has half-opened once the open timeout is over: that
// breaker changes state from its own timer, a moment after ours.
const consPoll = 2 * time.Millisecond

// circuit is one handler's circuit breaker. Two kinds of rule trip it (see
// BreakerRules): consecutive failures, counted by a go-resiliency breaker
// beside it, and the error and slow-call ratios over a sliding window. Once
// either trips, the circuit is open for the open timeout (and for as long as the
// go-resiliency breaker stays open), then half-open: one call at a time is
// let through as the probe. A successful probe closes it; a failed or slow
// probe opens it again. Only transient failures count; permanent failures
// and calls cut short by shutdown are not counted at all.
//
// It is safe for concurrent use.
type circuit struct {
	handler  string
	onChange func(b *circuit, from, to State, reason string)

	mu           sync.Mutex
	rules        BreakerRules
	consPending  bool             // rules for cons changed while it was not closed
	cons         *breaker.Breaker // consecutive failures; nil when that rule is off
	consFailures int              // failures fed to cons since its last success
	win          window
	state        State
	since        time.Time
	reason       string
	openUntil    time.Time
	probing      bool
	changed      chan struct{} // closed and replaced when waiters should look again
}

func newCircuit(handler string, rules BreakerRules, onChange func(*circuit, State, State, string)) *circuit {
	b := &circuit{
		handler:  handler,
		onChange: onChange,
		rules:    rules,
		win:      newWindow(rules.Window.D()),
		since:    time.Now(),
		changed:  make(chan struct{}),
	}
	b.rebuildCons()
	return b
}

// Status returns the breaker's state, since when, and why it last opened
// from closed.
func (b *circuit) Status() BreakerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advance(time.Now())
	return BreakerStatus{Handler: b.handler, State: b.state, Since: b.since, Reason: b.reason}
}

// acquire waits until the breaker lets a call through and reports whether
// that call is the probe, and how long it waited. It returns ctx's error
// when ctx ends first.
func (b *circuit) acquire(ctx context.Context) (probe bool, held time.Duration, err error) {
	start := time.Now()
	waited := false
	heldFor := func() time.Duration {
		if !waited {
			return 0
		}
		return time.Since(start)
	}
	for {
		b.mu.Lock()
		now := time.Now()
		b.advance(now)
		var wait time.Duration
		switch b.state {
		case Closed:
			b.mu.Unlock()
			return false, heldFor(), nil
		case HalfOpen:
			if !b.probing {
				b.probing = true
				b.mu.Unlock()
				return true, heldFor(), nil
			}
		case Open:
			wait = max(b.openUntil.Sub(now), consPoll)
		}
		changed := b.changed
		b.mu.Unlock()

		waited = true
		var timer *time.Timer
		var timeout <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-changed:
		case <-timeout:
		}
		if timer != nil {
			timer.Stop()
		}
		if err != nil {
			return false, heldFor(), err
		}
	}
}

// record counts the outcome, at now, of a call acquire let through. counted
// is false for calls that say nothing about the dependency (permanent
// failures, shutdown); such a probe only gives its turn to the next caller.
func (b *circuit) record(now time.Time, probe, counted, failed bool, took time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
		b.broadcast()
	}
	if !counted {
		return
	}
	slow := b.rules.SlowCall > 0 && took > b.rules.SlowCall.D()
	switch {
	case probe:
		b.feedCons(failed)
		switch {
		case failed:
			b.trip(now, "the probe failed")
		case slow && b.rules.SlowRatio > 0:
			b.trip(now, fmt.Sprintf("the probe took %s, more than breaker.slow_call %s", took.Round(time.Millisecond), b.rules.SlowCall))
		default:
			b.transition(now, Closed, "")
		}
	case b.state == Closed:
		b.feedCons(failed)
		if b.cons != nil && b.cons.GetState() == breaker.Open {
			b.trip(now, fmt.Sprintf("%d consecutive failures (breaker.consecutive_failures)", b.rules.ConsecutiveFailures))
			return
		}
		if b.rules.ErrorRatio <= 0 && b.rules.SlowRatio <= 0 {
			return
		}
		b.win.add(now, failed, slow)
		calls, fails, slows := b.win.sum(now)
		if calls < b.rules.MinRequests {
			return
		}
		if r := float64(fails) / float64(calls); b.rules.ErrorRatio > 0 && r >= b.rules.ErrorRatio {
			b.trip(now, fmt.Sprintf("%d of the last %d calls failed (%.0f%%, breaker.error_ratio %g)", fails, calls, 100*r, b.rules.ErrorRatio))
		} else if r := float64(slows) / float64(calls); b.rules.SlowRatio > 0 && r >= b.rules.SlowRatio {
			b.trip(now, fmt.Sprintf("%d of the last %d calls took more than %s (%.0f%%, breaker.slow_ratio %g)", slows, calls, b.rules.SlowCall, 100*r, b.rules.SlowRatio))
		}
	default:
		// A call let through while closed ended after the breaker opened:
		// the breaker has made up its mind already.
	}
}

// feedCons tells the go-resiliency breaker the outcome of one call. Its own
// count does not reset on success, so on the first success after failures
// it is replaced by a fresh one: the rule counts failures in a row.
func (b *circuit) feedCons(failed bool) {
	if b.cons == nil {
		return
	}
	if !failed && b.cons.GetState() == breaker.Closed {
		if b.consFailures > 0 {
			b.consFailures = 0
			b.rebuildCons()
		}
		// A success changes nothing in a closed go-resiliency breaker:
		// no need to run it (most calls, each taking its lock).
		return
	}
	if failed {
		b.consFailures++
	}
	_ = b.cons.Run(func() error {
		if failed {
			return errCounted
		}
		return nil
	})
}

// errCounted is what feedCons reports to the go-resiliency breaker for a
// failed call.
var errCounted = errors.New("counted failure")

// rebuildCons replaces the go-resiliency breaker with one built from the
// current rules that has seen the same failures in a row (short of tripping).
func (b *circuit) rebuildCons() {
	b.consPending = false
	if b.rules.ConsecutiveFailures <= 0 || b.rules.OpenTimeout <= 0 {
		b.cons, b.consFailures = nil, 0
		return
	}
	b.cons = breaker.New(b.rules.ConsecutiveFailures, 1, b.rules.OpenTimeout.D())
	b.consFailures = min(b.consFailures, b.rules.ConsecutiveFailures-1)
	for range b.consFailures {
		_ = b.cons.Run(func() error { return errCounted })
	}
}

// setRules changes the thresholds in place: an open breaker stays open, the
// window keeps its counts unless its length changed, and the consecutive
// count carries over (applied once that breaker is closed again).
func (b *circuit) setRules(r BreakerRules) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.rules
	b.rules = r
	if r.Window != old.Window {
		b.win = newWindow(r.Window.D())
	}
	if r.ConsecutiveFailures != old.ConsecutiveFailures || r.OpenTimeout != old.OpenTimeout {
		if b.cons == nil || b.cons.GetState() == breaker.Closed {
			b.rebuildCons()
		} else {
			b.consPending = true
		}
	}
	b.broadcast()
}

// advance half-opens an open breaker whose time is up.
func (b *circuit) advance(now time.Time) {
	if b.state == Open && !now.Before(b.openUntil) && (b.cons == nil || b.cons.GetState() != breaker.Open) {
		b.transition(now, HalfOpen, "")
	}
}

func (b *circuit) trip(now time.Time, reason string) {
	b.openUntil = now.Add(b.rules.OpenTimeout.D())
	b.win.reset()
	if b.cons != nil && b.cons.GetState() == breaker.Closed {
		b.consFailures = 0
		b.rebuildCons()
	}
	b.transition(now, Open, reason)
}

func (b *circuit) transition(now time.Time, to State, reason string) {
	from := b.state
	b.state, b.since = to, now
	if to == Open && from == Closed {
		b.reason = reason // a failed probe keeps the reason it first opened for
	}
	if to == Closed {
		b.win.reset()
		b.consFailures = 0
		if b.consPending {
			b.rebuildCons()
		}
	}
	b.broadcast()
	if b.onChange != nil && from != to {
		b.onChange(b, from, to, reason)
	}
}

func (b *circuit) broadcast() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// breaker holds the handler's messages while its circuit breaker is open.
// Each attempt first asks the breaker; while it is open the attempt waits
// (the message is held, the handler stops consuming). An attempt that fails
// transiently and finds the breaker open afterwards (it tripped it, or it
// was a failed probe) is held too instead of being returned to retry, so no
// retry is spent and nothing is poisoned while the breaker is open.
func (s *Stack) breaker(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		d := deliveryOf(msg)
		b := s.breakerFor(d.handler)
		for {
			probe, held, err := b.acquire(ctx)
			d.held += held
			if err != nil {
				return nil, err
			}
			msg.SetContext(ctx)
			start := time.Now()
			out, err := h(msg)
			end := time.Now()

			transient := err != nil && ctx.Err() == nil && !s.isPermanent(err)
			b.record(end, probe, err == nil || transient, transient, end.Sub(start))
			if !transient || b.Status().State == Closed {
				return out, err
			}
		}
	}
}

// breakerFor returns the handler's breaker, creating it on first use.
func (s *Stack) breakerFor(handler string) *circuit {
	s.mu.RLock()
	b, ok := s.breakers[handler]
	s.mu.RUnlock()
	if ok {
		return b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok = s.breakers[handler]
	if !ok {
		b = newCircuit(handler, s.rulesFor(handler).Breaker, s.breakerChanged)
		s.breakers[handler] = b
		s.metrics.state.WithLabelValues(handler).Set(float64(Closed))
	}
	return b
}

func (s *Stack) breakerChanged(b *circuit, from, to State, reason string) {
	s.metrics.state.WithLabelValues(b.handler).Set(float64(to))
	s.metrics.transitions.WithLabelValues(b.handler, to.String()).Inc()
	switch to {
	case Open:
		s.logger.Warn("circuit breaker opened: holding the handler's messages",
			"handler", b.handler, "from", from.String(), "reason", reason, "open_timeout", b.rules.OpenTimeout.String())
	case HalfOpen:
		s.logger.Info("circuit breaker half-open: probing with one message", "handler", b.handler)
	case Closed:
		s.logger.Info("circuit breaker closed: the handler consumes again", "handler", b.handler)
	}
}

// Breakers returns the status of every handler's breaker, by handler name.
// A handler that has not handled a message yet has none.
func (s *Stack) Breakers() []BreakerStatus {
	s.mu.RLock()
	names := slices.Sorted(maps.Keys(s.breakers))
	bs := make([]*circuit, len(names))
	for i, n := range names {
		bs[i] = s.breakers[n]
	}
	s.mu.RUnlock()
	out := make([]BreakerStatus, len(bs))
	for i, b := range bs {
		out[i] = b.Status()
	}
	return out
}

// BreakerState returns the state of the handler's breaker; Closed when it
// has none yet.
func (s *Stack) BreakerState(handler string) State {
	s.mu.RLock()
	b, ok := s.breakers[handler]
	s.mu.RUnlock()
	if !ok {
		return Closed
	}
	return b.Status().State
}
