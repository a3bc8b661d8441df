package notifications_test

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/sqlite"
)

var start = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// clock returns times one second apart, starting at start.
func clock() func() time.Time {
	t := start.Add(-time.Second)
	return func() time.Time {
		t = t.Add(time.Second)
		return t
	}
}

func newReactor(t *testing.T) *notifications.Reactor {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "notifications.db"))
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	r, err := notifications.New(ctx, db, clock())
	if err != nil {
		t.Fatalf("create reactor: %v", err)
	}
	return r
}

// handle calls the reactor's handler for e as the event processor would,
// with the event's message (id eventID) in the context.
func handle(t *testing.T, r *notifications.Reactor, eventID string, e events.Message) {
	t.Helper()
	ctx := cqrs.CtxWithOriginalMessage(context.Background(), message.NewMessage(eventID, nil))
	for _, h := range r.GroupHandlers() {
		if (cloudevents.Marshaler{}).Name(h.NewEvent()) != e.Name() {
			continue
		}
		ptr := reflect.New(reflect.TypeOf(e))
		ptr.Elem().Set(reflect.ValueOf(e))
		if err := h.Handle(ctx, ptr.Interface()); err != nil {
			t.Fatalf("handle %s: %v", e.Name(), err)
		}
		return
	}
	t.Fatalf("no handler for %s", e.Name())
}

func forUser(t *testing.T, r *notifications.Reactor, userID string) []notifications.Notification {
	t.Helper()
	list, err := r.ForUser(context.Background(), userID)
	if err != nil {
		t.Fatalf("list notifications: %v", err)
	}
	return list
}

func TestOneNotificationPerEvent(t *testing.T) {
	cases := []struct {
		name  string
		event events.Message
		want  notifications.Notification
	}{
		{
			name:  "user registered",
			event: events.UserRegistered{UserID: "u-1", Email: "ada@example.com", FullName: "Ada Lovelace"},
			want: notifications.Notification{Kind: notifications.KindWelcome, Subject: "Welcome to millrace, Ada Lovelace",
				Body: "Hello Ada Lovelace, your account ada@example.com is ready."},
		},
		{
			name: "order placed",
			event: events.OrderPlaced{OrderID: "o-1", UserID: "u-1", TotalCents: 2699, Currency: "EUR",
				Lines: []events.PricedLine{{SKU: "book", Quantity: 2}, {SKU: "pen", Quantity: 1}}},
			want: notifications.Notification{Kind: notifications.KindOrderPlaced, Subject: "Order o-1 placed",
				Body: "We received your order o-1: 3 items for 26.99 EUR."},
		},
		{
			name:  "order of one item placed",
			event: events.OrderPlaced{OrderID: "o-1", UserID: "u-1", TotalCents: 5, Currency: "USD", Lines: []events.PricedLine{{SKU: "gum", Quantity: 1}}},
			want: notifications.Notification{Kind: notifications.KindOrderPlaced, Subject: "Order o-1 placed",
				Body: "We received your order o-1: 1 item for 0.05 USD."},
		},
		{
			name:  "order paid",
			event: events.OrderPaid{OrderID: "o-1", UserID: "u-1", AmountCents: 2699, Currency: "EUR", PaymentRef: "pay-7"},
			want: notifications.Notification{Kind: notifications.KindOrderPaid, Subject: "Payment received for order o-1",
				Body: "We received your payment of 26.99 EUR for order o-1 (reference pay-7)."},
		},
		{
			name:  "order paid without reference",
			event: events.OrderPaid{OrderID: "o-1", UserID: "u-1", AmountCents: 100000, Currency: "EUR"},
			want: notifications.Notification{Kind: notifications.KindOrderPaid, Subject: "Payment received for order o-1",
				Body: "We received your payment of 1000.00 EUR for order o-1."},
		},
		{
			name:  "unpaid order cancelled",
			event: events.OrderCancelled{OrderID: "o-1", UserID: "u-1", Reason: "changed my mind"},
			want: notifications.Notification{Kind: notifications.KindOrderCancelled, Subject: "Order o-1 cancelled",
				Body: "Your order o-1 was cancelled: changed my mind."},
		},
		{
			name:  "paid order cancelled without reason",
			event: events.OrderCancelled{OrderID: "o-1", UserID: "u-1", WasPaid: true, TotalCents: 2699},
			want: notifications.Notification{Kind: notifications.KindOrderCancelled, Subject: "Order o-1 cancelled",
				Body: "Your order o-1 was cancelled. Your payment will be refunded in full."},
		},
		{
			name:  "order shipped",
			event: events.OrderShipped{OrderID: "o-1", UserID: "u-1", Carrier: "DHL"},
			want: notifications.Notification{Kind: notifications.KindOrderShipped, Subject: "Order o-1 shipped",
				Body: "Your order o-1 is on its way with DHL."},
		},
		{
			name:  "order shipped without carrier",
			event: events.OrderShipped{OrderID: "o-1", UserID: "u-1"},
			want: notifications.Notification{Kind: notifications.KindOrderShipped, Subject: "Order o-1 shipped",
				Body: "Your order o-1 is on its way."},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newReactor(t)
			handle(t, r, "event-1", tc.event)
			want := tc.want
			want.EventID, want.UserID, want.CreatedAt = "event-1", "u-1", start
			got := forUser(t, r, "u-1")
			if len(got) != 1 || got[0] != want {
				t.Errorf("notifications\n got %+v\nwant [%+v]", got, want)
			}
			if other := forUser(t, r, "u-2"); len(other) != 0 {
				t.Errorf("another user has notifications %+v", other)
			}
		})
	}
}

func TestNewestFirst(t *testing.T) {
	r := newReactor(t)
	handle(t, r, "e1", events.OrderPlaced{OrderID: "o-1", UserID: "u-1"})
	handle(t, r, "e2", events.OrderPaid{OrderID: "o-1", UserID: "u-1"})
	handle(t, r, "e3", events.OrderShipped{OrderID: "o-1", UserID: "u-1"})
	var ids []string
	for _, n := range forUser(t, r, "u-1") {
		ids = append(ids, n.EventID)
	}
	if want := []string{"e3", "e2", "e1"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("order %v, want newest first %v", ids, want)
	}
}

// The same event delivered twice through a real event processor records one
// notification; another event with the same content but its own id records
// its own.
func TestRedeliveryRecordsNothingTwice(t *testing.T) {
	r := newReactor(t)
	pubsub := gochannel.NewGoChannel(gochannel.Config{Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	t.Cleanup(func() { pubsub.Close() })
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	marshaler := cloudevents.Marshaler{Source: events.SourceOrders}
	processor, err := cqrs.NewEventGroupProcessorWithConfig(router, cqrs.EventGroupProcessorConfig{
		GenerateSubscribeTopic: func(cqrs.EventGroupProcessorGenerateSubscribeTopicParams) (string, error) {
			return events.TopicOrderEvents, nil
		},
		SubscriberConstructor: func(cqrs.EventGroupProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return pubsub, nil
		},
		AckOnUnknownEvent: true,
		Marshaler:         marshaler,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := processor.AddHandlersGroup("notifications", r.GroupHandlers()...); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- router.Run(context.Background()) }()
	t.Cleanup(func() {
		router.Close()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	<-router.Running()

	shipped := events.OrderShipped{OrderID: "o-1", UserID: "u-1", Carrier: "DHL"}
	first, err := marshaler.Marshal(shipped)
	if err != nil {
		t.Fatal(err)
	}
	second, err := marshaler.Marshal(shipped)
	if err != nil {
		t.Fatal(err)
	}
	// A rejection on the same topic is not the reactor's business and is acked.
	rejected, err := marshaler.Marshal(events.CommandRejected{CommandID: "c", AggregateID: "o-1", Code: events.CodeOrderNotPaid})
	if err != nil {
		t.Fatal(err)
	}
	// Publish returns once the router acknowledged each message.
	for _, m := range []*message.Message{first, first.Copy(), rejected, second} {
		if err := pubsub.Publish(events.TopicOrderEvents, m); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}

	var ids []string
	for _, n := range forUser(t, r, "u-1") {
		ids = append(ids, n.EventID)
	}
	if want := []string{second.UUID, first.UUID}; !reflect.DeepEqual(ids, want) {
		t.Errorf("notifications for events %v, want one each for %v", ids, want)
	}
}
