package router

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// retry tries a message again after a transient failure, waiting with
// exponential backoff and jitter, until it succeeds, fails permanently, or
// the handler's retry rules (read afresh before each retry) say stop: then
// it returns a RetriesExhaustedError wrapping the last failure. Time the
// breaker held the message does not count against retry.max_elapsed. When
// the message context ends (shutdown), it stops and returns the failure
// without a verdict.
func (s *Stack) retry(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		d := deliveryOf(msg)
		start := time.Now()
		for try := 1; ; try++ {
			msg.SetContext(ctx) // an attempt's timeout must not cancel the next one
			out, err := h(msg)
			if err == nil || ctx.Err() != nil || s.isPermanent(err) {
				return out, err
			}

			r := s.rulesFor(d.handler).Retry
			if try >= r.MaxAttempts {
				return nil, &RetriesExhaustedError{Attempts: d.attempts, Limit: "max_attempts", Err: err}
			}
			wait := backoff(r, try)
			if time.Since(start)-d.held+wait > r.MaxElapsed.D() {
				return nil, &RetriesExhaustedError{Attempts: d.attempts, Limit: "max_elapsed", Err: err}
			}

			s.metrics.retries.WithLabelValues(d.handler).Inc()
			trace.SpanFromContext(ctx).AddEvent("retry", trace.WithAttributes(
				attribute.String("millrace.handler", d.handler),
				attribute.Int("millrace.retry.attempt", try),
				attribute.String("millrace.retry.wait", wait.String()),
				attribute.String("millrace.retry.error", firstLine(err.Error())),
			))
			s.logger.DebugContext(ctx, "retrying message",
				"handler", d.handler, "message_id", msg.UUID, "attempt", try, "wait", wait, "error", err)

			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil, err
			case <-timer.C:
			}
		}
	}
}

// backoff is the wait after the try-th failed attempt: the initial interval
// grown by the multiplier per retry, capped at the max interval, then
// spread by the jitter.
func backoff(r RetryRules, try int) time.Duration {
	wait := float64(r.InitialInterval) * math.Pow(r.Multiplier, float64(try-1))
	wait = math.Min(wait, float64(r.MaxInterval))
	if r.Jitter > 0 {
		wait *= 1 - r.Jitter + 2*r.Jitter*rand.Float64()
	}
	return time.Duration(wait)
}
