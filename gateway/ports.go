package gateway

import (
	"context"

	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/sales"
)

// The gateway's view of the parts it uses. Each implementation must be safe
// for concurrent use: the gateway calls it from every request's goroutine.
// Contexts passed in live as long as the request that needs the answer.

// Validator checks a decoded JSON document (numbers as json.Number) against
// the schema of a wire name. A document that breaks the schema yields a
// *schema.ValidationError; *schema.Validator implements it.
type Validator interface {
	Validate(name string, doc any) error
}

// CommandLog reports the outcomes of commands; *commands.Projection and
// the remote query edge's client (gateway/upstream) implement it. The log
// learns of a command from the command topic, a moment after the broker
// acknowledged it: the gateway writes nothing to it.
type CommandLog interface {
	// Get returns what is known about a command, or an error wrapping
	// commands.ErrNotFound.
	Get(ctx context.Context, id string) (commands.Outcome, error)
	// Wait returns the command's outcome once it is no longer pending, or
	// the latest known one (with a nil error) when ctx's deadline passes.
	Wait(ctx context.Context, id string) (commands.Outcome, error)
}

// OrderQueries reads the orders projection.
type OrderQueries interface {
	// Order returns one order, or an error wrapping orders.ErrNotFound.
	Order(ctx context.Context, id string) (orders.Order, error)
	// UserOrders lists a user's orders, or an error wrapping
	// orders.ErrUserNotFound for a user the projection has not seen.
	UserOrders(ctx context.Context, userID string) ([]orders.Summary, error)
}

// SalesQueries reads the sales projection.
type SalesQueries interface {
	// SalesOn returns the totals of one day (YYYY-MM-DD), or an error
	// wrapping sales.ErrBadDate.
	SalesOn(ctx context.Context, date string) (sales.Day, error)
}

// Notifications lists what users were told.
type Notifications interface {
	ForUser(ctx context.Context, userID string) ([]notifications.Notification, error)
}
