package commands_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/projectiontest"
)

var (
	t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	t1 = t0.Add(time.Second)
	t2 = t0.Add(2 * time.Second)
)

type fixture struct {
	t      *testing.T
	p      *commands.Projection
	runner *projections.Runner
	log    projectiontest.Log
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db := projectiontest.OpenDB(t)
	p := commands.New(db)
	r, err := projections.NewRunner(context.Background(), db, p, nil)
	if err != nil {
		t.Fatalf("new runner: %v", err)
	}
	return &fixture{t: t, p: p, runner: r}
}

// command delivers a command with id, created at time at, on its command topic.
func (f *fixture) command(id string, c events.Message, at time.Time) {
	f.t.Helper()
	typ, _ := events.Lookup(c.Name())
	f.deliver(projectiontest.Message(f.t, c, projectiontest.ID(id), projectiontest.At(at)), typ.Topic)
}

// commandFromGateway delivers a command as the gateway publishes it: with
// the digest of its request in ce_requesthash.
func (f *fixture) commandFromGateway(id string, c events.Message, at time.Time, requestHash string) {
	f.t.Helper()
	typ, _ := events.Lookup(c.Name())
	msg := projectiontest.Message(f.t, c, projectiontest.ID(id), projectiontest.At(at))
	msg.Metadata.Set(cloudevents.RequestHash, requestHash)
	f.deliver(msg, typ.Topic)
}

// event delivers an event with id, caused by command causedBy, at time at.
func (f *fixture) event(id, causedBy string, e events.Message, at time.Time) {
	f.t.Helper()
	opts := []projectiontest.Option{projectiontest.ID(id), projectiontest.At(at)}
	if causedBy != "" {
		opts = append(opts, projectiontest.CausedBy(causedBy))
	}
	f.deliver(projectiontest.Message(f.t, e, opts...), events.TopicOrderEvents)
}

func (f *fixture) deliver(msg *message.Message, topic string) {
	f.t.Helper()
	if err := f.runner.Handle(f.log.Append(msg, topic, 0)); err != nil {
		f.t.Fatalf("handle %s: %v", msg.UUID, err)
	}
}

func (f *fixture) get(id string) commands.Outcome {
	f.t.Helper()
	o, err := f.p.Get(context.Background(), id)
	if err != nil {
		f.t.Fatalf("Get(%s): %v", id, err)
	}
	return o
}

func ptr(t time.Time) *time.Time { return &t }

// at lists positions on partition 0 of orders.events, where the fixture
// delivers events.
func at(offsets ...int64) []projections.Position {
	ps := make([]projections.Position, len(offsets))
	for i, o := range offsets {
		ps[i] = projections.Position{Topic: events.TopicOrderEvents, Partition: 0, Offset: o}
	}
	return ps
}

var (
	placeOrder  = events.PlaceOrder{OrderID: "o-1", UserID: "u-1", Currency: "EUR", Lines: []events.OrderLine{{SKU: "tea", Quantity: 1, UnitPriceCents: 500}}}
	orderPlaced = events.OrderPlaced{OrderID: "o-1", UserID: "u-1", Currency: "EUR", TotalCents: 500, PlacedAt: t1}
	rejected    = events.CommandRejected{
		CommandID: "c-1", CommandType: "orders.place-order.v1", AggregateID: "o-1",
		Code: events.CodeUnknownUser, Reason: "user u-1 is not registered", RejectedAt: t2,
	}
)

func TestOutcomes(t *testing.T) {
	tests := []struct {
		name string
		feed func(f *fixture)
		want commands.Outcome
	}{
		{
			name: "a command alone is pending",
			feed: func(f *fixture) { f.command("c-1", placeOrder, t0) },
			want: commands.Outcome{
				CommandID: "c-1", Type: "orders.place-order.v1", AggregateID: "o-1", Status: commands.StatusPending, AcceptedAt: t0,
			},
		},
		{
			name: "its event makes it succeeded",
			feed: func(f *fixture) {
				f.command("c-1", placeOrder, t0)
				f.event("e-1", "c-1", orderPlaced, t1)
			},
			want: commands.Outcome{
				CommandID: "c-1", Type: "orders.place-order.v1", AggregateID: "o-1", Status: commands.StatusSucceeded,
				EventIDs: []string{"e-1"}, EventTypes: []string{"orders.order-placed.v1"}, Positions: at(0), AcceptedAt: t0, CompletedAt: ptr(t1),
			},
		},
		{
			name: "every event it caused is listed, once",
			feed: func(f *fixture) {
				f.command("c-1", events.CancelOrder{OrderID: "o-1"}, t0)
				f.event("e-1", "c-1", events.OrderCancelled{OrderID: "o-1"}, t1)
				f.event("e-2", "c-1", events.OrderShipped{OrderID: "o-1"}, t2)
				// An outbox re-publish at a new offset.
				f.event("e-1", "c-1", events.OrderCancelled{OrderID: "o-1"}, t1)
			},
			want: commands.Outcome{
				CommandID: "c-1", Type: "orders.cancel-order.v1", AggregateID: "o-1", Status: commands.StatusSucceeded,
				EventIDs: []string{"e-1", "e-2"}, EventTypes: []string{"orders.order-cancelled.v1", "orders.order-shipped.v1"},
				Positions: at(0, 1), AcceptedAt: t0, CompletedAt: ptr(t1),
			},
		},
		{
			name: "a rejection makes it rejected",
			feed: func(f *fixture) {
				f.command("c-1", placeOrder, t0)
				f.event("e-r", "c-1", rejected, t2)
			},
			want: commands.Outcome{
				CommandID: "c-1", Type: "orders.place-order.v1", AggregateID: "o-1", Status: commands.StatusRejected,
				Code: events.CodeUnknownUser, Reason: "user u-1 is not registered", Positions: at(0), AcceptedAt: t0, CompletedAt: ptr(t2),
			},
		},
		{
			name: "an event before its command: succeeded, then filled in",
			feed: func(f *fixture) {
				f.event("e-1", "c-1", orderPlaced, t1)
				f.command("c-1", placeOrder, t0)
			},
			want: commands.Outcome{
				CommandID: "c-1", Type: "orders.place-order.v1", AggregateID: "o-1", Status: commands.StatusSucceeded,
				EventIDs: []string{"e-1"}, EventTypes: []string{"orders.order-placed.v1"}, Positions: at(0), AcceptedAt: t0, CompletedAt: ptr(t1),
			},
		},
		{
			name: "an event before its command, command not yet seen",
			feed: func(f *fixture) { f.event("e-1", "c-1", orderPlaced, t1) },
			want: commands.Outcome{
				CommandID: "c-1", AggregateID: "o-1", Status: commands.StatusSucceeded,
				EventIDs: []string{"e-1"}, EventTypes: []string{"orders.order-placed.v1"}, Positions: at(0), CompletedAt: ptr(t1),
			},
		},
		{
			name: "a rejection before its command stays rejected",
			feed: func(f *fixture) {
				f.event("e-r", "c-1", rejected, t2)
				f.command("c-1", placeOrder, t0)
			},
			want: commands.Outcome{
				CommandID: "c-1", Type: "orders.place-order.v1", AggregateID: "o-1", Status: commands.StatusRejected,
				Code: events.CodeUnknownUser, Reason: "user u-1 is not registered", Positions: at(0), AcceptedAt: t0, CompletedAt: ptr(t2),
			},
		},
		{
			name: "the gateway's request digest and acceptance time come with the command",
			feed: func(f *fixture) { f.commandFromGateway("c-1", placeOrder, t0, "h-1") },
			want: commands.Outcome{
				CommandID: "c-1", Type: "orders.place-order.v1", AggregateID: "o-1", Status: commands.StatusPending,
				AcceptedAt: t0, RequestHash: "h-1",
			},
		},
		{
			name: "a command sent again with another digest keeps the first",
			feed: func(f *fixture) {
				f.commandFromGateway("c-1", placeOrder, t0, "h-1")
				f.commandFromGateway("c-1", placeOrder, t1, "h-2")
			},
			want: commands.Outcome{
				CommandID: "c-1", Type: "orders.place-order.v1", AggregateID: "o-1", Status: commands.StatusPending,
				AcceptedAt: t0, RequestHash: "h-1",
			},
		},
		{
			name: "an event before its command: the command's digest filled in",
			feed: func(f *fixture) {
				f.event("e-1", "c-1", orderPlaced, t1)
				f.commandFromGateway("c-1", placeOrder, t0, "h-1")
			},
			want: commands.Outcome{
				CommandID: "c-1", Type: "orders.place-order.v1", AggregateID: "o-1", Status: commands.StatusSucceeded,
				EventIDs: []string{"e-1"}, EventTypes: []string{"orders.order-placed.v1"}, Positions: at(0), AcceptedAt: t0,
				CompletedAt: ptr(t1), RequestHash: "h-1",
			},
		},
		{
			name: "commands of users are logged too",
			feed: func(f *fixture) {
				f.command("c-1", events.RegisterUser{UserID: "u-1", Email: "a@example.com"}, t0)
				f.event("e-1", "c-1", events.UserRegistered{UserID: "u-1", RegisteredAt: t1}, t1)
			},
			want: commands.Outcome{
				CommandID: "c-1", Type: "users.register-user.v1", AggregateID: "u-1", Status: commands.StatusSucceeded,
				EventIDs: []string{"e-1"}, EventTypes: []string{"users.user-registered.v1"}, Positions: at(0), AcceptedAt: t0, CompletedAt: ptr(t1),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tt.feed(f)
			if got := f.get("c-1"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("outcome = %+v\nwant      %+v", got, tt.want)
			}
		})
	}
}

func TestEventsWithoutCausationAreNotCommands(t *testing.T) {
	f := newFixture(t)
	f.event("e-1", "", orderPlaced, t1)
	if _, err := f.p.Get(context.Background(), "e-1"); !errors.Is(err, commands.ErrNotFound) {
		t.Errorf("Get(e-1) error = %v, want ErrNotFound", err)
	}
}

func TestGetUnknown(t *testing.T) {
	f := newFixture(t)
	f.command("c-1", placeOrder, t0)
	if _, err := f.p.Get(context.Background(), "c-404"); !errors.Is(err, commands.ErrNotFound) {
		t.Errorf("Get(c-404) error = %v, want ErrNotFound", err)
	}
}

func TestAccept(t *testing.T) {
	ctx := context.Background()
	accepted := commands.Accepted{CommandID: "c-1", Type: "orders.place-order.v1", AggregateID: "o-1", RequestHash: "h-1", AcceptedAt: t0}
	pending := commands.Outcome{
		CommandID: "c-1", Type: "orders.place-order.v1", AggregateID: "o-1", Status: commands.StatusPending,
		AcceptedAt: t0, RequestHash: "h-1",
	}

	t.Run("new, then again with the same id", func(t *testing.T) {
		f := newFixture(t)
		got, created, err := f.p.Accept(ctx, accepted)
		if err != nil || !created || !reflect.DeepEqual(got, pending) {
			t.Fatalf("Accept = %+v, %v, %v; want %+v, true, nil", got, created, err, pending)
		}
		again := accepted
		again.RequestHash, again.AcceptedAt = "h-2", t2
		got, created, err = f.p.Accept(ctx, again)
		if err != nil || created || !reflect.DeepEqual(got, pending) {
			t.Fatalf("second Accept = %+v, %v, %v; want %+v, false, nil", got, created, err, pending)
		}
		if got := f.get("c-1"); !reflect.DeepEqual(got, pending) {
			t.Errorf("Get = %+v, want %+v", got, pending)
		}
	})

	t.Run("then the command and its event", func(t *testing.T) {
		f := newFixture(t)
		if _, _, err := f.p.Accept(ctx, accepted); err != nil {
			t.Fatalf("Accept: %v", err)
		}
		f.command("c-1", placeOrder, t1)
		f.event("e-1", "c-1", orderPlaced, t2)
		want := pending
		want.Status, want.EventIDs, want.EventTypes, want.Positions, want.CompletedAt = commands.StatusSucceeded, []string{"e-1"}, []string{"orders.order-placed.v1"}, at(0), ptr(t2)
		if got := f.get("c-1"); !reflect.DeepEqual(got, want) {
			t.Errorf("Get = %+v\nwant  %+v", got, want)
		}
		got, created, err := f.p.Accept(ctx, accepted)
		if err != nil || created || !reflect.DeepEqual(got, want) {
			t.Errorf("Accept after completion = %+v, %v, %v; want %+v, false, nil", got, created, err, want)
		}
	})

	t.Run("after its event was seen", func(t *testing.T) {
		f := newFixture(t)
		f.event("e-1", "c-1", orderPlaced, t2)
		got, created, err := f.p.Accept(ctx, accepted)
		want := pending
		want.Status, want.EventIDs, want.EventTypes, want.Positions, want.CompletedAt = commands.StatusSucceeded, []string{"e-1"}, []string{"orders.order-placed.v1"}, at(0), ptr(t2)
		if err != nil || created || !reflect.DeepEqual(got, want) {
			t.Errorf("Accept = %+v, %v, %v\nwant     %+v, false, nil", got, created, err, want)
		}
	})

	t.Run("without an id", func(t *testing.T) {
		f := newFixture(t)
		if _, _, err := f.p.Accept(ctx, commands.Accepted{Type: "orders.place-order.v1"}); err == nil {
			t.Error("Accept without a command id succeeded")
		}
	})
}

func TestWaitReturnsWhenTheCommandCompletes(t *testing.T) {
	f := newFixture(t)
	if _, _, err := f.p.Accept(context.Background(), commands.Accepted{CommandID: "c-1", Type: placeOrder.Name(), AggregateID: "o-1", AcceptedAt: t0}); err != nil {
		t.Fatalf("Accept: %v", err)
	}
	// The deadline only bounds a failing test; Wait must return long before it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	type result struct {
		o   commands.Outcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		o, err := f.p.Wait(ctx, "c-1")
		done <- result{o, err}
	}()
	f.event("e-1", "c-1", orderPlaced, t1)

	r := <-done
	if r.err != nil {
		t.Fatalf("Wait: %v", r.err)
	}
	if r.o.Status != commands.StatusSucceeded || !reflect.DeepEqual(r.o.EventIDs, []string{"e-1"}) {
		t.Errorf("Wait = %+v, want succeeded with event e-1", r.o)
	}
	if ctx.Err() != nil {
		t.Error("Wait returned only at its deadline")
	}
}

func TestWaitAtTheDeadline(t *testing.T) {
	f := newFixture(t)
	f.command("c-1", placeOrder, t0)

	t.Run("a pending command is returned as pending", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		o, err := f.p.Wait(ctx, "c-1")
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if o.Status != commands.StatusPending || o.CommandID != "c-1" || o.Type != placeOrder.Name() {
			t.Errorf("Wait = %+v, want c-1 pending", o)
		}
	})
	t.Run("an unknown command is not found", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if _, err := f.p.Wait(ctx, "c-404"); !errors.Is(err, commands.ErrNotFound) {
			t.Errorf("Wait error = %v, want ErrNotFound", err)
		}
	})
	t.Run("a completed command is returned at once", func(t *testing.T) {
		f.event("e-r", "c-1", rejected, t2)
		o, err := f.p.Wait(context.Background(), "c-1")
		if err != nil || o.Status != commands.StatusRejected {
			t.Errorf("Wait = %+v, %v; want rejected", o, err)
		}
	})
}

func TestOutcomeJSON(t *testing.T) {
	tests := []struct {
		name string
		o    commands.Outcome
		want string
	}{
		{
			name: "pending",
			o:    commands.Outcome{CommandID: "c-1", Type: "orders.pay-order.v1", AggregateID: "o-1", Status: commands.StatusPending, AcceptedAt: t0, RequestHash: "secret"},
			want: `{"command_id":"c-1","type":"orders.pay-order.v1","aggregate_id":"o-1","status":"pending","accepted_at":"2025-03-01T10:00:00Z"}`,
		},
		{
			name: "rejected",
			o: commands.Outcome{
				CommandID: "c-1", Type: "orders.pay-order.v1", AggregateID: "o-1", Status: commands.StatusRejected,
				Code: "amount_mismatch", Reason: "pay 500", AcceptedAt: t0, CompletedAt: ptr(t1),
			},
			want: `{"command_id":"c-1","type":"orders.pay-order.v1","aggregate_id":"o-1","status":"rejected","code":"amount_mismatch","reason":"pay 500","accepted_at":"2025-03-01T10:00:00Z","completed_at":"2025-03-01T10:00:01Z"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.o)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			if string(b) != tt.want {
				t.Errorf("JSON = %s\nwant   %s", b, tt.want)
			}
		})
	}
}
