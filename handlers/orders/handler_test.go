package orders_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/handlers/orders"
	"github.com/millrace/millrace/handlers/users"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/commandstore"
	"github.com/millrace/millrace/platform/sqlite"
)

// The command store's typed aggregates are what cmd/millrace passes in.
var (
	_ orders.Store = (*commandstore.Aggregate[orders.Order, events.Message])(nil)
	_ orders.Users = (*commandstore.Aggregate[users.User, events.Message])(nil)
	_ users.Store  = (*commandstore.Aggregate[users.User, events.Message])(nil)
)

// Commands travel through a real Watermill router and gochannel pub/sub to
// the handler groups, which apply them with the real command store on a
// SQLite file; the relay publishes the events.
func TestCommandsBecomeEventsOnce(t *testing.T) {
	app := startApp(t)

	app.send(t, events.TopicUserCommands, events.RegisterUser{UserID: userID, Email: "ada@example.com", FullName: "Ada"})
	if got := app.next(t, app.userEvents); got.Metadata.Get(cloudevents.Type) != (events.UserRegistered{}).Name() {
		t.Fatalf("users.events got %s, want UserRegistered", got.Metadata.Get(cloudevents.Type))
	}

	place := app.send(t, events.TopicOrderCommands, placeOrder())
	pay := app.send(t, events.TopicOrderCommands, events.PayOrder{OrderID: orderID, AmountCents: 2699, PaymentRef: "pay-1"})

	var placedEvent events.OrderPlacedV2
	app.expect(t, place, &placedEvent)
	if placedEvent.TotalCents != 2699 || placedEvent.UserID != userID || len(placedEvent.Lines) != 2 || placedEvent.ItemCount != 3 {
		t.Errorf("OrderPlacedV2 %+v, want total 2699 for %s with 2 lines of 3 items", placedEvent, userID)
	}
	var paidEvent events.OrderPaid
	app.expect(t, pay, &paidEvent)
	if paidEvent.AmountCents != 2699 || paidEvent.PaymentRef != "pay-1" {
		t.Errorf("OrderPaid %+v, want 2699 with ref pay-1", paidEvent)
	}

	// The same PayOrder message again (a redelivery), then a ShipOrder: the
	// relay publishes in outbox order, so if the redelivery had emitted
	// anything it would come before OrderShipped.
	if err := app.pubsub.Publish(events.TopicOrderCommands, pay.Copy()); err != nil {
		t.Fatalf("redeliver PayOrder: %v", err)
	}
	ship := app.send(t, events.TopicOrderCommands, events.ShipOrder{OrderID: orderID, Carrier: "DHL"})
	var shippedEvent events.OrderShipped
	app.expect(t, ship, &shippedEvent)

	// A new PayOrder (a new command id) is rejected, as an event.
	payAgain := app.send(t, events.TopicOrderCommands, events.PayOrder{OrderID: orderID, AmountCents: 2699})
	var rejected events.CommandRejected
	app.expect(t, payAgain, &rejected)
	if rejected.Code != events.CodeOrderAlreadyPaid || rejected.CommandID != payAgain.UUID {
		t.Errorf("rejection %+v, want order_already_paid for command %s", rejected, payAgain.UUID)
	}

	order, version, err := app.orders.Load(context.Background(), orderID)
	if err != nil {
		t.Fatalf("load order: %v", err)
	}
	if order.Status != orders.StatusShipped || version != 3 {
		t.Errorf("order status %s version %d, want shipped at version 3 (placed, paid, shipped)", order.Status, version)
	}
}

type app struct {
	pubsub      *gochannel.GoChannel
	marshaler   cloudevents.Marshaler
	orders      *commandstore.Aggregate[orders.Order, events.Message]
	userEvents  <-chan *message.Message
	orderEvents <-chan *message.Message
}

var clock = func() time.Time { return now }

func startApp(t *testing.T) *app {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := commandstore.New(ctx, db)
	if err != nil {
		t.Fatalf("create command store: %v", err)
	}
	userAgg, err := commandstore.NewAggregate[users.User, events.Message](store, commandstore.AggregateConfig{
		Name: "user", Handler: "users", Topic: events.TopicUserEvents, Source: events.SourceUsers, Now: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	orderAgg, err := commandstore.NewAggregate[orders.Order, events.Message](store, commandstore.AggregateConfig{
		Name: "order", Handler: "orders", Topic: events.TopicOrderEvents, Source: events.SourceOrders, Now: clock,
	})
	if err != nil {
		t.Fatal(err)
	}

	// Publish blocks until the subscriber acknowledged: a sent command has
	// been handled when send returns, and events arrive in publish order.
	pubsub := gochannel.NewGoChannel(gochannel.Config{Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	t.Cleanup(func() { pubsub.Close() })
	a := &app{
		pubsub:      pubsub,
		marshaler:   cloudevents.Marshaler{Source: events.SourceGateway},
		orders:      orderAgg,
		userEvents:  collect(t, pubsub, events.TopicUserEvents),
		orderEvents: collect(t, pubsub, events.TopicOrderEvents),
	}

	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- store.NewRelay(pubsub, nil).Run(relayCtx) }()
	t.Cleanup(func() {
		stopRelay()
		if err := <-relayDone; err != nil {
			t.Errorf("relay: %v", err)
		}
	})

	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	topics := map[string]string{"users": events.TopicUserCommands, "orders": events.TopicOrderCommands}
	processor, err := cqrs.NewEventGroupProcessorWithConfig(router, cqrs.EventGroupProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.EventGroupProcessorGenerateSubscribeTopicParams) (string, error) {
			return topics[p.EventGroupName], nil
		},
		SubscriberConstructor: func(cqrs.EventGroupProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return pubsub, nil
		},
		Marshaler: a.marshaler,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := processor.AddHandlersGroup("users", users.New(userAgg, clock).GroupHandlers()...); err != nil {
		t.Fatal(err)
	}
	if err := processor.AddHandlersGroup("orders", orders.New(orderAgg, userAgg, clock).GroupHandlers()...); err != nil {
		t.Fatal(err)
	}
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(ctx) }()
	t.Cleanup(func() {
		if err := router.Close(); err != nil {
			t.Errorf("close router: %v", err)
		}
		if err := <-routerDone; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	select {
	case <-router.Running():
	case <-time.After(20 * time.Second):
		t.Fatal("router did not start")
	}
	return a
}

// send publishes cmd as a command message and returns it once handled.
func (a *app) send(t *testing.T, topic string, cmd events.Message) *message.Message {
	t.Helper()
	msg, err := a.marshaler.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.pubsub.Publish(topic, msg); err != nil {
		t.Fatalf("send %s: %v", cmd.Name(), err)
	}
	return msg
}

// expect reads the next orders event, checks that cmd caused it and that it
// has the type of into, and decodes it.
func (a *app) expect(t *testing.T, cmd *message.Message, into events.Message) {
	t.Helper()
	got := a.next(t, a.orderEvents)
	if typ := got.Metadata.Get(cloudevents.Type); typ != into.Name() {
		t.Fatalf("next orders event is %s (%s), want %s", typ, got.Payload, into.Name())
	}
	if c := got.Metadata.Get(cloudevents.CausationID); c != cmd.UUID {
		t.Errorf("%s caused by %s, want command %s", into.Name(), c, cmd.UUID)
	}
	if err := json.Unmarshal(got.Payload, into); err != nil {
		t.Fatalf("decode %s: %v", into.Name(), err)
	}
}

func (a *app) next(t *testing.T, msgs <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no event arrived")
		return nil
	}
}

// collect subscribes to topic and passes on its messages, acknowledged.
func collect(t *testing.T, pubsub *gochannel.GoChannel, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	in, err := pubsub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe to %s: %v", topic, err)
	}
	out := make(chan *message.Message, 100)
	go func() {
		for m := range in {
			m.Ack()
			out <- m
		}
	}()
	return out
}

// When the users lookup fails the command is not applied: the handler returns
// the error so that the message is redelivered, and nothing is stored.
func TestPlaceOrderFailsWhenUsersCannotBeAsked(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	openStore := func(name string) (*commandstore.Store, func() error) {
		db, err := sqlite.Open(ctx, filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		s, err := commandstore.New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		return s, db.Close
	}
	orderStore, _ := openStore("orders.db")
	userStore, closeUsers := openStore("users.db")
	orderAgg, err := commandstore.NewAggregate[orders.Order, events.Message](orderStore, commandstore.AggregateConfig{
		Name: "order", Handler: "orders", Topic: events.TopicOrderEvents, Source: events.SourceOrders,
	})
	if err != nil {
		t.Fatal(err)
	}
	userAgg, err := commandstore.NewAggregate[users.User, events.Message](userStore, commandstore.AggregateConfig{
		Name: "user", Handler: "users", Topic: events.TopicUserEvents, Source: events.SourceUsers,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := closeUsers(); err != nil { // the users database is gone
		t.Fatal(err)
	}

	place := placeOrder()
	msgCtx := cqrs.CtxWithOriginalMessage(ctx, message.NewMessage("cmd-1", nil))
	var handled bool
	for _, h := range orders.New(orderAgg, userAgg, clock).GroupHandlers() {
		if _, ok := h.NewEvent().(*events.PlaceOrder); !ok {
			continue
		}
		handled = true
		if err := h.Handle(msgCtx, &place); err == nil {
			t.Fatal("PlaceOrder succeeded although users could not be asked")
		}
	}
	if !handled {
		t.Fatal("no handler for PlaceOrder")
	}
	if n, err := orderStore.Pending(ctx); err != nil || n != 0 {
		t.Errorf("pending events %d (err %v), want 0", n, err)
	}
	if exists, err := orderAgg.Exists(ctx, orderID); err != nil || exists {
		t.Errorf("order exists = %v (err %v), want false", exists, err)
	}
}
