package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/orders"
)

// userOrders is the body of GET /v1/users/{id}/orders.
type userOrders struct {
	UserID string           `json:"user_id"`
	Orders []orders.Summary `json:"orders"`
}

// userNotifications is the body of GET /v1/users/{id}/notifications.
type userNotifications struct {
	UserID        string                       `json:"user_id"`
	Notifications []notifications.Notification `json:"notifications"`
}

// getCommand answers a command's outcome. With Prefer: wait=N it waits, up
// to N seconds, while the command is pending, as the POST that sent it
// would have; and a command this gateway does not know yet is waited for
// too when its id is fresh (mintedRecently): another gateway accepted it a
// moment ago, and the command log has not consumed it yet.
func (g *Gateway) getCommand(w http.ResponseWriter, r *http.Request) error {
	id := mux.Vars(r)["id"]
	o, err := g.lookup(r.Context(), id) // the log, else this gateway's record (command.go)
	wait, waiting := preferredWait(r.Header.Values("Prefer"), g.cfg.MaxWait)
	unknown := errors.Is(err, commands.ErrNotFound)
	switch {
	case err != nil && !(unknown && waiting && mintedRecently(id, time.Now())):
		return &lookupError{resource: "command", id: id, err: err}
	case !waiting:
		return writeJSON(w, http.StatusOK, o)
	}
	w.Header().Set("Preference-Applied", fmt.Sprintf("wait=%d", int64(wait/time.Second)))
	if unknown || o.Status == commands.StatusPending {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		latest, err := g.deps.Commands.Wait(ctx, id)
		cancel()
		switch {
		case err == nil:
			o = latest
		case errors.Is(err, commands.ErrNotFound) && unknown:
			// Never became known within the wait.
			w.Header().Del("Preference-Applied")
			return &lookupError{resource: "command", id: id, err: err}
		case errors.Is(err, commands.ErrNotFound):
			// Known here, not yet consumed by the log: still pending.
		default:
			return fmt.Errorf("wait for command %s: %w", id, err)
		}
	}
	return writeJSON(w, http.StatusOK, o)
}

func (g *Gateway) getOrder(w http.ResponseWriter, r *http.Request) error {
	if err := g.readAfter(r, "orders"); err != nil {
		return err
	}
	id := mux.Vars(r)["id"]
	o, err := g.deps.Orders.Order(r.Context(), id)
	if err != nil {
		return &lookupError{resource: "order", id: id, err: err}
	}
	return writeJSON(w, http.StatusOK, o)
}

func (g *Gateway) getUserOrders(w http.ResponseWriter, r *http.Request) error {
	if err := g.readAfter(r, "orders"); err != nil {
		return err
	}
	id := mux.Vars(r)["id"]
	list, err := g.deps.Orders.UserOrders(r.Context(), id)
	if err != nil {
		return &lookupError{resource: "user", id: id, err: err}
	}
	if list == nil {
		list = []orders.Summary{}
	}
	return writeJSON(w, http.StatusOK, userOrders{UserID: id, Orders: list})
}

func (g *Gateway) getNotifications(w http.ResponseWriter, r *http.Request) error {
	id := mux.Vars(r)["id"]
	list, err := g.deps.Notifications.ForUser(r.Context(), id)
	if err != nil {
		return fmt.Errorf("list notifications of user %s: %w", id, err)
	}
	if list == nil {
		list = []notifications.Notification{}
	}
	return writeJSON(w, http.StatusOK, userNotifications{UserID: id, Notifications: list})
}

// getSales answers GET /v1/reports/sales?date=YYYY-MM-DD.
func (g *Gateway) getSales(w http.ResponseWriter, r *http.Request) error {
	if err := g.readAfter(r, "sales"); err != nil {
		return err
	}
	query := r.URL.Query()
	dates, ok := query["date"]
	if !ok || len(dates) != 1 || dates[0] == "" {
		return &paramError{name: "date",
			detail: "The query parameter date is missing or given more than once. Give one day as YYYY-MM-DD, e.g. ?date=2025-01-31."}
	}
	date := dates[0]
	if _, err := time.Parse(time.DateOnly, date); err != nil {
		return &paramError{name: "date",
			detail: fmt.Sprintf("The query parameter date is %q, which is not a day. Give one day as YYYY-MM-DD, e.g. ?date=2025-01-31.", date)}
	}
	day, err := g.deps.Sales.SalesOn(r.Context(), date)
	if err != nil {
		return fmt.Errorf("report sales on %s: %w", date, err)
	}
	return writeJSON(w, http.StatusOK, day)
}

func (g *Gateway) health(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
