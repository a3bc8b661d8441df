package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// TimeoutError is the cause of a message context cancelled by the
// handler's timeout; a handler that returns the context's error returns one
// wrapping it. It is transient: the attempt is retried.
type TimeoutError struct {
	// After is the timeout that was reached.
	After time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("attempt timed out after %s (rule timeout)", e.After)
}

// Unwrap makes a TimeoutError match context.DeadlineExceeded.
func (e *TimeoutError) Unwrap() error { return context.DeadlineExceeded }

// timeout bounds each attempt: the message context passed to the handler is
// cancelled once the handler's timeout rule has elapsed, with a
// TimeoutError as its cause. A handler that honours its context then
// returns; the failure is transient and retried.
func (s *Stack) timeout(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		d := deliveryOf(msg)
		limit := s.rulesFor(d.handler).Timeout.D()
		if limit <= 0 {
			return h(msg)
		}
		parent := msg.Context()
		cause := &TimeoutError{After: limit}
		ctx, cancel := context.WithTimeoutCause(parent, limit, cause)
		defer cancel()
		msg.SetContext(ctx)
		out, err := h(msg)
		msg.SetContext(parent)
		if err != nil && parent.Err() == nil && errors.Is(context.Cause(ctx), cause) {
			s.metrics.timeouts.WithLabelValues(d.handler).Inc()
			if !errors.As(err, new(*TimeoutError)) {
				err = fmt.Errorf("%w: %w", cause, err)
			}
		}
		return out, err
	}
}
