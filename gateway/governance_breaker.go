package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/eapache/go-resiliency/breaker"

	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/sales"
)

// edgeBreaker is the circuit breaker of one read edge under one rule.
type edgeBreaker struct {
	edge string
	rule BreakerRule
	b    *breaker.Breaker
}

func newEdgeBreaker(edge string, rule BreakerRule) *edgeBreaker {
	return &edgeBreaker{edge: edge, rule: rule, b: breaker.New(rule.Failures, rule.Successes, rule.OpenFor)}
}

// edgeOpenError: a read edge's breaker is open, so the call was not made.
type edgeOpenError struct {
	edge    string
	openFor time.Duration
}

func (e *edgeOpenError) Error() string {
	return fmt.Sprintf("read %s: circuit breaker is open", e.edge)
}

func (e *edgeOpenError) Unwrap() error { return breaker.ErrBreakerOpen }

// errSlowCall marks a call that succeeded too slowly, for the breaker only.
var errSlowCall = errors.New("slow call")

// guarded runs one call of a read edge through the edge's breaker in
// force: it fails at once with an *edgeOpenError while the breaker is open,
// and otherwise returns what the call returned. The breaker counts a call
// as failed when it returned an error that is not an answer (not found, a
// bad date) and not the client going away, or when it took longer than
// the rule's SlowCall.
func guarded[T any](ctx context.Context, gv *governance, edge string, call func(context.Context) (T, error)) (T, error) {
	eb := gv.live.Load().breakers[edge]
	var (
		out     T
		callErr error
		ran     bool
	)
	before := eb.b.GetState()
	start := time.Now()
	err := eb.b.Run(func() error {
		ran = true
		out, callErr = call(ctx)
		switch {
		case callErr != nil:
			if isFailure(ctx, callErr) {
				return callErr
			}
			return nil
		case eb.rule.SlowCall > 0 && time.Since(start) > eb.rule.SlowCall:
			return errSlowCall
		default:
			return nil
		}
	})
	if !ran && errors.Is(err, breaker.ErrBreakerOpen) {
		var zero T
		return zero, &edgeOpenError{edge: edge, openFor: eb.rule.OpenFor}
	}
	switch after := eb.b.GetState(); {
	case before != breaker.Open && after == breaker.Open:
		gv.log.WarnContext(ctx, "read edge breaker opened: reads fail fast until it probes again",
			slog.String("edge", edge), slog.Duration("open_for", eb.rule.OpenFor), slog.Any("error", err))
	case before == breaker.HalfOpen && after == breaker.Closed:
		gv.log.InfoContext(ctx, "read edge breaker closed: reads go through again", slog.String("edge", edge))
	}
	return out, callErr
}

// isFailure reports whether a read edge's error says the edge is failing,
// rather than answering.
func isFailure(ctx context.Context, err error) bool {
	switch {
	case isNotFound(err), errors.Is(err, sales.ErrBadDate):
		return false
	case errors.Is(err, context.Canceled), errors.Is(ctx.Err(), context.Canceled):
		return false // the client went away; the edge may be fine
	default:
		return true
	}
}

// guard puts the read edges of d behind their breakers. Each wrapper embeds
// the interface it guards, so a method added to it later passes through
// unguarded until it is listed here.
func (gv *governance) guard(d Deps) Deps {
	d.Orders = guardedOrders{OrderQueries: d.Orders, gv: gv}
	d.Sales = guardedSales{SalesQueries: d.Sales, gv: gv}
	d.Commands = guardedCommands{CommandLog: d.Commands, gv: gv}
	d.Notifications = guardedNotifications{Notifications: d.Notifications, gv: gv}
	return d
}

type guardedOrders struct {
	OrderQueries
	gv *governance
}

func (o guardedOrders) Order(ctx context.Context, id string) (orders.Order, error) {
	return guarded(ctx, o.gv, EdgeOrders, func(ctx context.Context) (orders.Order, error) {
		return o.OrderQueries.Order(ctx, id)
	})
}

func (o guardedOrders) UserOrders(ctx context.Context, userID string) ([]orders.Summary, error) {
	return guarded(ctx, o.gv, EdgeOrders, func(ctx context.Context) ([]orders.Summary, error) {
		return o.OrderQueries.UserOrders(ctx, userID)
	})
}

type guardedSales struct {
	SalesQueries
	gv *governance
}

func (s guardedSales) SalesOn(ctx context.Context, date string) (sales.Day, error) {
	return guarded(ctx, s.gv, EdgeSales, func(ctx context.Context) (sales.Day, error) {
		return s.SalesQueries.SalesOn(ctx, date)
	})
}

// guardedCommands guards the reads of the command log. Wait (a long poll,
// which ends at its deadline by design) goes straight through.
type guardedCommands struct {
	CommandLog
	gv *governance
}

func (c guardedCommands) Get(ctx context.Context, id string) (commands.Outcome, error) {
	return guarded(ctx, c.gv, EdgeCommands, func(ctx context.Context) (commands.Outcome, error) {
		return c.CommandLog.Get(ctx, id)
	})
}

type guardedNotifications struct {
	Notifications
	gv *governance
}

func (n guardedNotifications) ForUser(ctx context.Context, userID string) ([]notifications.Notification, error) {
	return guarded(ctx, n.gv, EdgeNotifications, func(ctx context.Context) ([]notifications.Notification, error) {
		return n.Notifications.ForUser(ctx, userID)
	})
}
