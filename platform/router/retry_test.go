package router_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
)

func TestRetry(t *testing.T) {
	errMalformed := errors.New("malformed payload")
	cases := []struct {
		name string
		// failure returns the error of the n-th call (from 1).
		failure      func(n int) error
		rules        func(*router.HandlerRules)
		wantCalls    int
		wantOutcome  string
		wantCause    string // of the poison entry; "" when none
		wantInReason string
	}{
		{
			name: "transient failures are retried until the handler succeeds",
			failure: func(n int) error {
				if n <= 2 {
					return errTransient
				}
				return nil
			},
			wantCalls:   3,
			wantOutcome: router.OutcomeSuccess,
		},
		{
			name:         "a Permanent error is poisoned at once",
			failure:      func(int) error { return router.Permanent(errors.New("unknown version 9")) },
			wantCalls:    1,
			wantOutcome:  router.OutcomePoisoned,
			wantCause:    router.CausePermanent,
			wantInReason: "unknown version 9",
		},
		{
			name:         "an error the configured predicate calls permanent is poisoned at once",
			failure:      func(int) error { return fmt.Errorf("decode order: %w", errMalformed) },
			wantCalls:    1,
			wantOutcome:  router.OutcomePoisoned,
			wantCause:    router.CausePermanent,
			wantInReason: "malformed payload",
		},
		{
			name:         "transient failures are poisoned after max attempts",
			failure:      func(int) error { return errTransient },
			rules:        func(h *router.HandlerRules) { h.Retry.MaxAttempts = 3; h.Breaker.ConsecutiveFailures = 0 },
			wantCalls:    3,
			wantOutcome:  router.OutcomePoisoned,
			wantCause:    router.CauseRetriesExhausted,
			wantInReason: "gave up after 3 attempts (retry.max_attempts reached): dependency unavailable",
		},
		{
			name:    "transient failures are poisoned once max elapsed would be passed",
			failure: func(int) error { return errTransient },
			rules: func(h *router.HandlerRules) {
				h.Retry.MaxAttempts = 100
				h.Retry.InitialInterval = router.Duration(20 * time.Millisecond)
				h.Retry.MaxInterval = router.Duration(20 * time.Millisecond)
				h.Retry.MaxElapsed = router.Duration(30 * time.Millisecond)
				h.Breaker.ConsecutiveFailures = 0
				h.Breaker.ErrorRatio = 0
			},
			wantCalls:    -1, // fewer than max attempts; how many depends on the clock
			wantOutcome:  router.OutcomePoisoned,
			wantCause:    router.CauseRetriesExhausted,
			wantInReason: "(retry.max_elapsed reached)",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, router.Config{
				Rules:       fastRules(tc.rules),
				IsPermanent: func(err error) bool { return errors.Is(err, errMalformed) },
			})
			var c calls
			e.handle("h", "in", func(msg *message.Message) error { return tc.failure(c.add(msg.UUID)) })
			e.run()

			m := newMsg("k-1", "{}")
			e.publish("in", m)

			got := c.get(m.UUID)
			if tc.wantCalls >= 0 && got != tc.wantCalls {
				t.Errorf("handler called %d times, want %d", got, tc.wantCalls)
			}
			if tc.wantCalls < 0 && (got < 1 || got >= 100) {
				t.Errorf("handler called %d times, want at least 1 and fewer than max attempts", got)
			}
			if n := metric(t, e.reg, "millrace_handler_messages_total", "handler=h", "outcome="+tc.wantOutcome); n != 1 {
				t.Errorf("messages with outcome %s = %v, want 1", tc.wantOutcome, n)
			}
			if n := metric(t, e.reg, "millrace_handler_retries_total", "handler=h"); int(n) != got-1 {
				t.Errorf("retries metric = %v, want %d (calls - 1)", n, got-1)
			}
			entries := e.entries(poison.Filter{Handler: "h"})
			if tc.wantCause == "" {
				if len(entries) != 0 {
					t.Fatalf("poison entries = %+v, want none", entries)
				}
				return
			}
			if len(entries) != 1 {
				t.Fatalf("%d poison entries, want 1", len(entries))
			}
			pe := entries[0]
			if pe.MessageID != m.UUID || pe.Status != poison.StatusPoisoned || pe.Cause != tc.wantCause || pe.Attempts != got {
				t.Errorf("entry = id %s, status %s, cause %s, attempts %d; want %s, poisoned, %s, %d",
					pe.MessageID, pe.Status, pe.Cause, pe.Attempts, m.UUID, tc.wantCause, got)
			}
			if !strings.Contains(pe.Reason, tc.wantInReason) {
				t.Errorf("reason %q does not contain %q", pe.Reason, tc.wantInReason)
			}
		})
	}
}

// TestRetrySpanEvents checks that retries and the poisoning are events on
// the span in the message context, and that no span is no problem.
func TestRetrySpanEvents(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tracing := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx, span := tp.Tracer("test").Start(msg.Context(), "handle")
			defer span.End()
			msg.SetContext(ctx)
			return h(msg)
		}
	}
	e := newEnv(t, router.Config{
		Rules: fastRules(func(h *router.HandlerRules) { h.Retry.MaxAttempts = 3; h.Breaker.ConsecutiveFailures = 0 }),
		Outer: []message.HandlerMiddleware{tracing},
	})
	e.handle("h", "in", func(*message.Message) error { return errTransient })
	e.run()
	e.publish("in", newMsg("k", "{}"))

	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want 1", len(spans))
	}
	var names []string
	for _, ev := range spans[0].Events() {
		names = append(names, ev.Name)
	}
	if got, want := strings.Join(names, ","), "retry,retry,poisoned"; got != want {
		t.Errorf("span events = %s, want %s", got, want)
	}
}
