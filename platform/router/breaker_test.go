package router_test

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
)

// stateLog records, for each call of a handler, the breaker state the call
// saw.
type stateLog struct {
	mu    sync.Mutex
	calls map[string][]router.State
}

func (l *stateLog) add(id string, s router.State) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.calls == nil {
		l.calls = map[string][]router.State{}
	}
	l.calls[id] = append(l.calls[id], s)
}

func (l *stateLog) of(id string) []router.State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]router.State(nil), l.calls[id]...)
}

func consecutiveRules(openTimeout time.Duration) router.Rules {
	return fastRules(func(h *router.HandlerRules) {
		h.Retry.MaxAttempts = 3
		h.Breaker = router.BreakerRules{ConsecutiveFailures: 4, OpenTimeout: router.Duration(openTimeout)}
	})
}

// TestBreakerHoldsWhileOpen: consecutive failures open the breaker; the
// message in hand is then held (the handler is not called while open, no
// retry is spent, nothing is poisoned), probed after each open timeout,
// and handled once a probe succeeds, which closes the breaker.
func TestBreakerHoldsWhileOpen(t *testing.T) {
	e := newEnv(t, router.Config{Rules: consecutiveRules(80 * time.Millisecond)})
	var failing atomic.Bool
	failing.Store(true)
	var log stateLog
	e.handle("h", "in", func(msg *message.Message) error {
		log.add(msg.UUID, e.stack.BreakerState("h"))
		if failing.Load() {
			return errTransient
		}
		return nil
	})
	e.run()

	// Three failures: m1 runs out of attempts (3) without tripping (4).
	m1 := newMsg("k-1", "{}")
	e.publish("in", m1)
	if s := e.stack.BreakerState("h"); s != router.Closed {
		t.Fatalf("breaker %s after 3 failures, want closed", s)
	}
	// The fourth failure trips it; m2 is held.
	m2 := newMsg("k-2", "{}")
	done := e.publishAsync("in", m2)
	waitFor(t, 10*time.Second, "the breaker to open, and reopen after a failed probe", func() bool {
		return metric(t, e.reg, "millrace_handler_breaker_transitions_total", "handler=h", "state=open") >= 2
	})
	retriesWhileOpen := metric(t, e.reg, "millrace_handler_retries_total", "handler=h")
	failing.Store(false)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("held message not handled 10s after the dependency recovered")
	}

	states := log.of(m2.UUID)
	if len(states) < 3 || states[0] != router.Closed {
		t.Fatalf("m2 calls saw states %v, want a first call while closed, then probes", states)
	}
	for i, s := range states[1:] {
		if s != router.HalfOpen {
			t.Errorf("m2 call %d ran while the breaker was %s; while open only probes (half-open) may run", i+2, s)
		}
	}
	if got, want := float64(len(states)-1), metric(t, e.reg, "millrace_handler_breaker_transitions_total", "handler=h", "state=half-open"); got != want {
		t.Errorf("%v probes ran, but the breaker half-opened %v times: one probe per half-open", got, want)
	}
	if got := metric(t, e.reg, "millrace_handler_retries_total", "handler=h"); got != 2 || retriesWhileOpen != 2 {
		t.Errorf("retries = %v (%v while open), want 2, m1's only: a held message spends no retries", got, retriesWhileOpen)
	}
	if entries := e.entries(poison.Filter{}); len(entries) != 1 || entries[0].MessageID != m1.UUID {
		t.Errorf("poison entries = %v, want m1's only: nothing is poisoned while the breaker is open", entries)
	}
	if n := metric(t, e.reg, "millrace_handler_messages_total", "handler=h", "outcome=success"); n != 1 {
		t.Errorf("successes = %v, want 1 (m2)", n)
	}
	if s := e.stack.BreakerState("h"); s != router.Closed {
		t.Errorf("breaker %s after a successful probe, want closed", s)
	}
	if n := metric(t, e.reg, "millrace_handler_breaker_state", "handler=h"); n != 0 {
		t.Errorf("breaker state gauge = %v, want 0 (closed)", n)
	}
}

// TestBreakerReleasesHeldMessageOnShutdown: closing the router while a
// message is held nacks it (to be delivered again later) instead of
// poisoning it or waiting out the close timeout.
func TestBreakerReleasesHeldMessageOnShutdown(t *testing.T) {
	e := newEnv(t, router.Config{Rules: consecutiveRules(time.Hour), CloseTimeout: 5 * time.Second})
	e.handle("h", "in", func(*message.Message) error { return errTransient })
	e.run()
	e.publish("in", newMsg("k-1", "{}"))
	e.publishAsync("in", newMsg("k-2", "{}"))
	waitFor(t, 10*time.Second, "the breaker to open", func() bool { return e.stack.BreakerState("h") == router.Open })

	if err := e.close(); err != nil {
		t.Fatalf("close router while a message is held: %v", err)
	}
	// GoChannel redelivers a nacked message at once, until its subscriber
	// is closed: each delivery after the shutdown began is nacked again.
	if n := metric(t, e.reg, "millrace_handler_messages_total", "handler=h", "outcome=nacked"); n < 1 {
		t.Errorf("nacked = %v, want at least 1 (the held message)", n)
	}
	if n := len(e.entries(poison.Filter{})); n != 1 {
		t.Errorf("%d poison entries, want 1: the held message must not be poisoned", n)
	}
}

// TestBreakerRatios: the error ratio and the slow-call ratio over the
// window trip the breaker; a good probe closes it.
func TestBreakerRatios(t *testing.T) {
	cases := []struct {
		name       string
		breaker    router.BreakerRules
		payloads   []string // the last one is published without waiting
		wantReason string
	}{
		{
			name: "error ratio",
			breaker: router.BreakerRules{ErrorRatio: 0.5, MinRequests: 4, Window: router.Duration(time.Minute),
				OpenTimeout: router.Duration(50 * time.Millisecond)},
			payloads:   []string{"ok", "fail", "ok", "fail"},
			wantReason: "2 of the last 4 calls failed (50%, breaker.error_ratio 0.5)",
		},
		{
			name: "slow-call ratio",
			breaker: router.BreakerRules{SlowRatio: 0.6, SlowCall: router.Duration(20 * time.Millisecond), MinRequests: 3,
				Window: router.Duration(time.Minute), OpenTimeout: router.Duration(50 * time.Millisecond)},
			payloads:   []string{"slow", "slow", "slow"},
			wantReason: "3 of the last 3 calls took more than 20ms (100%, breaker.slow_ratio 0.6)",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, router.Config{Rules: fastRules(func(h *router.HandlerRules) {
				h.Retry.MaxAttempts = 1
				h.Breaker = tc.breaker
			})})
			var healed atomic.Bool
			e.handle("h", "in", func(msg *message.Message) error {
				switch string(msg.Payload) {
				case "fail":
					if !healed.Load() {
						return errTransient
					}
				case "slow":
					time.Sleep(40 * time.Millisecond)
				}
				return nil
			})
			e.run()

			last := len(tc.payloads) - 1
			for _, p := range tc.payloads[:last] {
				e.publish("in", newMsg("", p))
			}
			if s := e.stack.BreakerState("h"); s != router.Closed {
				t.Fatalf("breaker %s before the ratio is reached, want closed", s)
			}
			done := e.publishAsync("in", newMsg("", tc.payloads[last]))
			waitFor(t, 10*time.Second, "the breaker to open", func() bool {
				return metric(t, e.reg, "millrace_handler_breaker_transitions_total", "handler=h", "state=open") >= 1
			})
			healed.Store(true)
			<-done
			e.publish("in", newMsg("", "ok")) // held while open, then the probe
			waitFor(t, 10*time.Second, "the breaker to close", func() bool { return e.stack.BreakerState("h") == router.Closed })

			st := e.stack.Breakers()
			if len(st) != 1 || !strings.Contains(st[0].Reason, tc.wantReason) {
				t.Errorf("breakers = %+v, want handler h opened because %q", st, tc.wantReason)
			}
			if n := metric(t, e.reg, "millrace_handler_breaker_transitions_total", "handler=h", "state=half-open"); n < 1 {
				t.Errorf("half-open transitions = %v, want at least 1", n)
			}
		})
	}
}

// TestBreakerIgnoresPermanentFailures: permanent failures say nothing
// about the dependency and never trip the breaker.
func TestBreakerIgnoresPermanentFailures(t *testing.T) {
	e := newEnv(t, router.Config{Rules: fastRules(func(h *router.HandlerRules) {
		h.Retry.MaxAttempts = 1
		h.Breaker = router.BreakerRules{ConsecutiveFailures: 2, ErrorRatio: 0.1, MinRequests: 1,
			Window: router.Duration(time.Minute), OpenTimeout: router.Duration(time.Hour)}
	})})
	e.handle("h", "in", func(*message.Message) error { return router.Permanent(errors.New("bad payload")) })
	e.run()
	for range 5 {
		e.publish("in", newMsg("", "{}"))
	}
	if s := e.stack.BreakerState("h"); s != router.Closed {
		t.Errorf("breaker %s after 5 permanent failures, want closed", s)
	}
	if n := len(e.entries(poison.Filter{Status: poison.StatusPoisoned})); n != 5 {
		t.Errorf("%d poisoned, want 5", n)
	}
}
