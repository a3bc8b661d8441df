package router_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/router"
)

// TestTimeoutCancelsTheAttempt: the handler's context is cancelled after
// the timeout, with a TimeoutError as cause; the failure is transient and
// the next attempt, with a fresh deadline, succeeds.
func TestTimeoutCancelsTheAttempt(t *testing.T) {
	e := newEnv(t, router.Config{Rules: fastRules(func(h *router.HandlerRules) {
		h.Timeout = router.Duration(30 * time.Millisecond)
	})})
	var c calls
	var firstErr, firstCause error
	var secondDeadlineOK bool
	e.handle("h", "in", func(msg *message.Message) error {
		ctx := msg.Context()
		if c.add(msg.UUID) == 1 {
			<-ctx.Done() // a handler stuck on its dependency, honouring its context
			firstErr, firstCause = ctx.Err(), context.Cause(ctx)
			return ctx.Err()
		}
		_, secondDeadlineOK = ctx.Deadline()
		return ctx.Err()
	})
	e.run()
	m := newMsg("k", "{}")
	e.publish("in", m)

	if !errors.Is(firstErr, context.DeadlineExceeded) {
		t.Errorf("first attempt's context error = %v, want deadline exceeded", firstErr)
	}
	var te *router.TimeoutError
	if !errors.As(firstCause, &te) || te.After != 30*time.Millisecond {
		t.Errorf("first attempt's context cause = %v, want a TimeoutError of 30ms", firstCause)
	}
	if n := c.get(m.UUID); n != 2 {
		t.Errorf("handler called %d times, want 2 (a timeout is retried)", n)
	}
	if !secondDeadlineOK {
		t.Error("second attempt had no deadline: each attempt gets its own timeout")
	}
	if n := metric(t, e.reg, "millrace_handler_timeouts_total", "handler=h"); n != 1 {
		t.Errorf("timeouts = %v, want 1", n)
	}
	if n := metric(t, e.reg, "millrace_handler_messages_total", "handler=h", "outcome=success"); n != 1 {
		t.Errorf("successes = %v, want 1", n)
	}
}
