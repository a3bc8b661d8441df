package orders

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"

	"github.com/millrace/millrace/events"
)

// Store loads and saves orders. Apply runs fn on the current order (nil when
// none) and stores the returned order and events atomically; a command it has
// already applied is skipped. A nil order from fn leaves the stored one as it
// is. Apply finds the incoming command message in ctx
// (cqrs.OriginalMessageFromCtx). Implementations are safe for concurrent use.
type Store interface {
	Apply(ctx context.Context, orderID string, fn func(current *Order) (*Order, []events.Message, error)) error
}

// Users tells whether a user is registered. It is safe for concurrent use.
type Users interface {
	Exists(ctx context.Context, userID string) (bool, error)
}

// Handler handles the orders context's commands.
type Handler struct {
	store Store
	users Users
	now   func() time.Time
}

// New returns the orders command handler. now stamps decisions; time.Now
// when nil.
func New(store Store, users Users, now func() time.Time) *Handler {
	if now == nil {
		now = time.Now
	}
	return &Handler{store: store, users: users, now: now}
}

// GroupHandlers returns one typed handler per order command. Register them
// all as ONE group on events.TopicOrderCommands (see the package
// documentation for why). A handler's error means the command was not
// applied and should be redelivered; rejections are not errors, they are
// events.
func (h *Handler) GroupHandlers() []cqrs.GroupEventHandler {
	return []cqrs.GroupEventHandler{
		cqrs.NewGroupEventHandler(h.placeOrder),
		cqrs.NewGroupEventHandler(func(ctx context.Context, c *events.PayOrder) error { return h.decide(ctx, *c, false) }),
		cqrs.NewGroupEventHandler(func(ctx context.Context, c *events.CancelOrder) error { return h.decide(ctx, *c, false) }),
		cqrs.NewGroupEventHandler(func(ctx context.Context, c *events.ShipOrder) error { return h.decide(ctx, *c, false) }),
		// Sent for each order a sweep of unpaid orders found (expire.go).
		cqrs.NewGroupEventHandler(h.expireOrder),
	}
}

func (h *Handler) placeOrder(ctx context.Context, c *events.PlaceOrder) error {
	registered := false
	if c.UserID != "" {
		ok, err := h.users.Exists(ctx, c.UserID)
		if err != nil {
			return fmt.Errorf("place order %s: check user %s: %w", c.OrderID, c.UserID, err)
		}
		registered = ok
	}
	return h.decide(ctx, *c, registered)
}

// decide applies Decide to the order the command names, in the store.
func (h *Handler) decide(ctx context.Context, cmd events.Message, userExists bool) error {
	msg := cqrs.OriginalMessageFromCtx(ctx)
	if msg == nil {
		return fmt.Errorf("handle %s for order %s: no incoming message in context", cmd.Name(), cmd.Key())
	}
	err := h.store.Apply(ctx, cmd.Key(), func(current *Order) (*Order, []events.Message, error) {
		next, emitted := Decide(current, cmd, userExists, msg.UUID, h.now())
		if next == current {
			next = nil // rejected: nothing to save
		}
		return next, emitted, nil
	})
	if err != nil {
		return fmt.Errorf("handle %s %s for order %s: %w", cmd.Name(), msg.UUID, cmd.Key(), err)
	}
	return nil
}
