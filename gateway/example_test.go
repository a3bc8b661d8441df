package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/schema"
	"github.com/millrace/millrace/platform/sqlite"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/sales"
	"github.com/millrace/millrace/schemas"
)

// A gateway request: POST /v1/orders becomes an orders.place-order.v1
// command on the orders.commands topic, and the client gets 202 Accepted
// with the command's URL. Here the publisher is an in-process gochannel; in
// millrace it is Kafka, with the same code.
func Example() {
	dir, err := os.MkdirTemp("", "gateway-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(dir, "millrace.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()

	// The read side: the command log and the projections (their runners
	// create the tables), and the notifications reactor.
	commandLog, orderView, salesView := commands.New(db), orders.New(db), sales.New(db)
	for _, p := range []projections.Projection{commandLog, orderView, salesView} {
		if _, err := projections.NewRunner(ctx, db, p, nil); err != nil {
			fmt.Println(err)
			return
		}
	}
	notes, err := notifications.New(ctx, db, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	validator, err := schema.New(schemas.FS())
	if err != nil {
		fmt.Println(err)
		return
	}
	pubSub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, nil)
	defer pubSub.Close()

	gw, err := gateway.New(gateway.Config{}, gateway.Deps{
		Publisher:     pubSub,
		Validator:     validator,
		Commands:      commandLog,
		Orders:        orderView,
		Sales:         salesView,
		Notifications: notes,
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	body := `{"user_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
	          "lines": [{"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1250}]}`
	req := httptest.NewRequest(http.MethodPost, "/v1/orders", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "checkout-8731")
	rec := httptest.NewRecorder()
	gw.Handler().ServeHTTP(rec, req)
	fmt.Println(rec.Code, http.StatusText(rec.Code))
	fmt.Println(strings.HasPrefix(rec.Header().Get("Location"), "/v1/commands/"))

	msgs, err := pubSub.Subscribe(ctx, events.TopicOrderCommands)
	if err != nil {
		fmt.Println(err)
		return
	}
	select {
	case msg := <-msgs:
		fmt.Println(msg.Metadata.Get(cloudevents.Type))
		msg.Ack()
	case <-time.After(10 * time.Second):
		fmt.Println("nothing was published")
	}
	// Output:
	// 202 Accepted
	// true
	// orders.place-order.v1
}
