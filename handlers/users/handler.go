package users

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"

	"github.com/millrace/millrace/events"
)

// Store loads and saves users. Apply runs fn on the current user (nil when
// none) and stores the returned user and events atomically; a command it has
// already applied is skipped. A nil user from fn leaves the stored one as it
// is. Apply finds the incoming command message in ctx
// (cqrs.OriginalMessageFromCtx). Implementations are safe for concurrent use.
type Store interface {
	Apply(ctx context.Context, userID string, fn func(current *User) (*User, []events.Message, error)) error
}

// Handler handles the users context's commands.
type Handler struct {
	store Store
	now   func() time.Time
}

// New returns the users command handler. now stamps decisions; time.Now when
// nil.
func New(store Store, now func() time.Time) *Handler {
	if now == nil {
		now = time.Now
	}
	return &Handler{store: store, now: now}
}

// GroupHandlers returns one typed handler per users command. Register them as
// ONE group on events.TopicUserCommands (see the package documentation). A
// handler's error means the command was not applied and should be
// redelivered; rejections are not errors, they are events.
func (h *Handler) GroupHandlers() []cqrs.GroupEventHandler {
	return []cqrs.GroupEventHandler{
		cqrs.NewGroupEventHandler(func(ctx context.Context, c *events.RegisterUser) error { return h.decide(ctx, *c) }),
	}
}

// decide applies Decide to the user the command names, in the store.
func (h *Handler) decide(ctx context.Context, cmd events.Message) error {
	msg := cqrs.OriginalMessageFromCtx(ctx)
	if msg == nil {
		return fmt.Errorf("handle %s for user %s: no incoming message in context", cmd.Name(), cmd.Key())
	}
	err := h.store.Apply(ctx, cmd.Key(), func(current *User) (*User, []events.Message, error) {
		next, emitted := Decide(current, cmd, msg.UUID, h.now())
		if next == current {
			next = nil // rejected: nothing to save
		}
		return next, emitted, nil
	})
	if err != nil {
		return fmt.Errorf("handle %s %s for user %s: %w", cmd.Name(), msg.UUID, cmd.Key(), err)
	}
	return nil
}
