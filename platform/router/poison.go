package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Admission is what a PoisonQueue decides about a message before its handler sees it.
type Admission int

const (
	// Handle: hand the message to the handler.
	Handle Admission = iota
	// Park: the queue stored the message behind an earlier poisoned message
	// of its key; ack it without handling.
	Park
	// Skip: nothing to do (a requeued message meant for another handler, a
	// stale or duplicate requeue, a message already stored); ack it.
	Skip
)

// Causes of poisoning: the cause label of millrace_handler_poisoned_total
// and the x-poison-cause header.
const (
	CausePermanent        = "permanent"
	CauseRetriesExhausted = "retries-exhausted"
	CausePanic            = "panic"
)

// Failure describes why a message is poisoned.
type Failure struct {
	// Cause is CausePermanent, CauseRetriesExhausted or CausePanic.
	Cause string
	// Reason is the error text; for a panic, the panic value and the stack.
	Reason string
	// Attempts is how many times the handler was called with the message.
	Attempts int
	// FirstError and LastError are when the first and the last attempt failed.
	FirstError, LastError time.Time
}

// PoisonQueue keeps the messages a handler could not process, in order per
// key. Package poison implements it with a SQLite store and a Kafka topic.
// Its methods are called concurrently for different messages, and with the
// message's context, which ends at shutdown.
type PoisonQueue interface {
	// Admit decides whether handler gets msg: Handle it, or the queue Parked
	// it behind an earlier poisoned message of its key, or there is nothing
	// to do (Skip).
	Admit(ctx context.Context, handler string, msg *message.Message) (Admission, error)
	// Poison records that msg failed for good in handler.
	Poison(ctx context.Context, handler string, msg *message.Message, f Failure) error
	// Handled is called after handler succeeded with an admitted msg, so that
	// a requeued message leaves the queue and its key's sequence moves on.
	Handled(ctx context.Context, handler string, msg *message.Message) error
}

// poisoned is the poison middleware. It asks the poison queue whether the
// message may be handled, and records it there when it failed for good, then
// acks it so that the handler moves on. A failure after the message context
// ended (shutdown) is not poisoned: the message is nacked and delivered again.
func (s *Stack) poisoned(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		d := deliveryOf(msg)

		adm, err := s.poison.Admit(ctx, d.handler, msg)
		if err != nil {
			return nil, fmt.Errorf("ask the poison queue about message %s for %s: %w", msg.UUID, d.handler, err)
		}
		switch adm {
		case Park:
			d.outcome = OutcomeParked
			s.metrics.parked.WithLabelValues(d.handler).Inc()
			trace.SpanFromContext(ctx).AddEvent("parked", trace.WithAttributes(
				attribute.String("millrace.handler", d.handler)))
			return nil, nil
		case Skip:
			d.outcome = OutcomeSkipped
			return nil, nil
		}

		out, err := h(msg)
		msg.SetContext(ctx)
		if err == nil {
			if herr := s.poison.Handled(ctx, d.handler, msg); herr != nil {
				return nil, fmt.Errorf("record message %s as handled by %s in the poison queue: %w", msg.UUID, d.handler, herr)
			}
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}

		f := Failure{
			Cause:      causeOf(err),
			Reason:     reasonOf(err),
			Attempts:   d.attempts,
			FirstError: d.firstError,
			LastError:  d.lastError,
		}
		if f.LastError.IsZero() {
			f.FirstError, f.LastError = time.Now(), time.Now()
		}
		if perr := s.poison.Poison(ctx, d.handler, msg, f); perr != nil {
			return nil, errors.Join(err, fmt.Errorf("poison message %s of %s: %w", msg.UUID, d.handler, perr))
		}
		d.outcome = OutcomePoisoned
		s.metrics.poisoned.WithLabelValues(d.handler, f.Cause).Inc()
		trace.SpanFromContext(ctx).AddEvent("poisoned", trace.WithAttributes(
			attribute.String("millrace.handler", d.handler),
			attribute.String("millrace.poison.cause", f.Cause),
			attribute.Int("millrace.poison.attempts", f.Attempts),
			attribute.String("millrace.poison.reason", firstLine(f.Reason)),
		))
		s.logger.WarnContext(ctx, "message poisoned",
			"handler", d.handler, "topic", message.SubscribeTopicFromCtx(ctx), "message_id", msg.UUID,
			"cause", f.Cause, "attempts", f.Attempts, "reason", firstLine(f.Reason))
		return nil, nil
	}
}

// causeOf classifies a failure that reached the poison middleware.
func causeOf(err error) string {
	var p *PanicError
	if errors.As(err, &p) {
		return CausePanic
	}
	var x *RetriesExhaustedError
	if errors.As(err, &x) {
		return CauseRetriesExhausted
	}
	return CausePermanent
}

// reasonOf is the poison reason of err: its text, and for a panic the stack.
func reasonOf(err error) string {
	var p *PanicError
	if errors.As(err, &p) {
		return err.Error() + "\n\n" + p.Stack
	}
	return err.Error()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
