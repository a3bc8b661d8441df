package users_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/handlers/users"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/commandstore"
	"github.com/millrace/millrace/platform/sqlite"
)

// The handler applies commands through the real command store; what it
// emitted is read back through the real relay and a gochannel subscriber.
func TestHandlerAppliesEachCommandOnce(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := commandstore.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	agg, err := commandstore.NewAggregate[users.User, events.Message](store, commandstore.AggregateConfig{
		Name: "user", Handler: "users", Topic: events.TopicUserEvents, Source: events.SourceUsers,
	})
	if err != nil {
		t.Fatal(err)
	}
	handlers := users.New(agg, func() time.Time { return now }).GroupHandlers()
	if len(handlers) != 1 {
		t.Fatalf("%d group handlers, want 1 (RegisterUser)", len(handlers))
	}
	send := func(id string, c events.RegisterUser) {
		t.Helper()
		msgCtx := cqrs.CtxWithOriginalMessage(ctx, message.NewMessage(id, nil))
		if err := handlers[0].Handle(msgCtx, &c); err != nil {
			t.Fatalf("handle %s: %v", id, err)
		}
	}

	send("cmd-1", register())
	send("cmd-1", register()) // redelivered: no second effect
	send("cmd-2", register()) // a second registration of the same id: rejected

	pubsub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	t.Cleanup(func() { pubsub.Close() })
	if err := store.NewRelay(pubsub, nil).Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	subCtx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	msgs, err := pubsub.Subscribe(subCtx, events.TopicUserEvents)
	if err != nil {
		t.Fatal(err)
	}
	// Persisted messages are replayed in no particular order: compare by causation.
	want := map[string]string{"cmd-1": events.UserRegistered{}.Name(), "cmd-2": events.CommandRejected{}.Name()}
	got := map[string]string{}
	for range want {
		select {
		case m := <-msgs:
			m.Ack()
			got[m.Metadata.Get(cloudevents.CausationID)] = m.Metadata.Get(cloudevents.Type)
		case <-time.After(20 * time.Second):
			t.Fatalf("received %v, want %v", got, want)
		}
	}
	for cmd, typ := range want {
		if got[cmd] != typ {
			t.Errorf("command %s caused %q, want %q", cmd, got[cmd], typ)
		}
	}
	if _, version, err := agg.Load(ctx, "u-1"); err != nil || version != 1 {
		t.Errorf("user version %d (err %v), want 1: a rejected command must not save", version, err)
	}
}
