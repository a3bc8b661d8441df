package router_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/sqlite"
)

// handled records, per key, the payloads a handler handled, in order.
type handled struct {
	mu    sync.Mutex
	byKey map[string][]string
}

func (h *handled) add(key, payload string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byKey == nil {
		h.byKey = map[string][]string{}
	}
	h.byKey[key] = append(h.byKey[key], payload)
}

func (h *handled) of(key string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.byKey[key])
}

// TestPoisonSequences runs the poison queue on the embedded Kafka broker:
// a poisoned key's later messages are parked while another key's flow; a
// requeue of the key's sequence applies each message once and in order,
// even when a new message of the key arrives meanwhile; another handler on
// the same topic ignores the requeued copies; the poisoning is published to
// the poison topic with its headers.
func TestPoisonSequences(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = broker.Close() })
	kcfg := kafka.Config{Brokers: broker.Addrs(), ClientID: "router-test"}
	if err := kafka.EnsureTopics(ctx, kcfg,
		kafka.Topic{Name: "orders", Partitions: 3}, kafka.Topic{Name: router.DefaultPoisonTopic, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	pub, err := kafka.NewPublisher(kcfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "poison.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	store, err := poison.New(ctx, db, poison.Config{Publisher: pub})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	reg := prometheus.NewRegistry()
	r, _, err := router.New(router.Config{Rules: fastRules(nil), Poison: store, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu     sync.Mutex
		broken = map[string]bool{"a1": true}
		onA1   func()
		h      handled
		other  calls
	)
	subscriber := func(group string) message.Subscriber {
		sub, err := kafka.NewSubscriber(kcfg, group, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		return sub
	}
	r.AddNoPublisherHandler("h", "orders", subscriber("h"), func(msg *message.Message) error {
		p := string(msg.Payload)
		mu.Lock()
		bad, hook := broken[p], onA1
		mu.Unlock()
		if bad {
			return router.Permanent(fmt.Errorf("order %s refers to an unknown product", p))
		}
		if p == "a1" && hook != nil {
			hook()
		}
		h.add(msg.Metadata.Get("ce_partitionkey"), p)
		return nil
	})
	r.AddNoPublisherHandler("other", "orders", subscriber("other"), func(msg *message.Message) error {
		other.add(string(msg.Payload))
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	t.Cleanup(func() { _ = r.Close(); <-done })
	<-r.Running()

	send := func(key, payload string) {
		t.Helper()
		if err := pub.Publish("orders", newMsg(key, payload)); err != nil {
			t.Fatal(err)
		}
	}
	within := 30 * time.Second

	t.Run("a poisoned key parks its later messages while other keys flow", func(t *testing.T) {
		send("K1", "a1")
		send("K1", "a2")
		send("K2", "b1")
		send("K1", "a3")
		send("K2", "b2")
		waitFor(t, within, "K2 handled and K1's messages stored", func() bool {
			return len(h.of("K2")) == 2 && len(list(t, store, poison.Filter{Key: "K1"})) == 3
		})
		if got := h.of("K1"); len(got) != 0 {
			t.Errorf("K1 handled %v while its head is poisoned, want nothing", got)
		}
		if got := h.of("K2"); !slices.Equal(got, []string{"b1", "b2"}) {
			t.Errorf("K2 handled %v, want [b1 b2]", got)
		}
		entries := list(t, store, poison.Filter{Key: "K1"})
		head := entries[0]
		if head.Status != poison.StatusPoisoned || head.Cause != router.CausePermanent || head.Attempts != 1 {
			t.Errorf("head = %s %s after %d attempts, want poisoned permanent after 1", head.Status, head.Cause, head.Attempts)
		}
		for _, e := range entries[1:] {
			if e.Status != poison.StatusParked || e.BlockedBy != head.ID {
				t.Errorf("entry %d: %s behind %d, want parked behind %d", e.ID, e.Status, e.BlockedBy, head.ID)
			}
		}
	})

	t.Run("the poisoning is published with its headers", func(t *testing.T) {
		sub := subscriber("poison-reader")
		t.Cleanup(func() { _ = sub.Close() })
		ch, err := sub.Subscribe(ctx, router.DefaultPoisonTopic)
		if err != nil {
			t.Fatal(err)
		}
		var got *message.Message
		select {
		case got = <-ch:
			got.Ack()
		case <-ctx.Done():
			t.Fatal("nothing on the poison topic")
		}
		head := list(t, store, poison.Filter{Key: "K1"})[0]
		if got.UUID != head.MessageID {
			t.Errorf("poison record id %s, want the message's own id %s", got.UUID, head.MessageID)
		}
		want := map[string]string{
			poison.HeaderHandler: "h", poison.HeaderTopic: "orders", poison.HeaderKey: "K1",
			poison.HeaderCause: "permanent", poison.HeaderAttempts: "1", poison.HeaderEntry: strconv.FormatInt(head.ID, 10),
			poison.HeaderReason: "order a1 refers to an unknown product", "ce_type": "test.thing.v1",
		}
		for k, v := range want {
			if got.Metadata.Get(k) != v {
				t.Errorf("header %s = %q, want %q", k, got.Metadata.Get(k), v)
			}
		}
		for _, k := range []string{poison.HeaderPartition, poison.HeaderOffset} {
			if n, err := strconv.Atoi(got.Metadata.Get(k)); err != nil || n < 0 {
				t.Errorf("header %s = %q, want the original position", k, got.Metadata.Get(k))
			}
		}
		for _, k := range []string{poison.HeaderFirstErrorAt, poison.HeaderLastErrorAt} {
			if _, err := time.Parse(time.RFC3339Nano, got.Metadata.Get(k)); err != nil {
				t.Errorf("header %s = %q, want an RFC 3339 time", k, got.Metadata.Get(k))
			}
		}
	})

	t.Run("requeuing the sequence applies each message once, in order, newcomers last", func(t *testing.T) {
		mu.Lock()
		delete(broken, "a1")
		// While the requeued head is being handled, a new message of K1
		// arrives: it must wait behind a2 and a3.
		onA1 = func() { send("K1", "a4") }
		mu.Unlock()

		res, err := store.RequeueSequence(ctx, "h", "K1")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Requeued) != 1 || res.Waiting != 2 {
			t.Errorf("requeue result %+v, want the head requeued and 2 waiting", res)
		}
		waitFor(t, within, "K1's sequence handled", func() bool {
			if len(h.of("K1")) < 4 {
				return false
			}
			for _, e := range list(t, store, poison.Filter{Key: "K1"}) {
				if e.Status.Open() {
					return false
				}
			}
			return true
		})
		if got := h.of("K1"); !slices.Equal(got, []string{"a1", "a2", "a3", "a4"}) {
			t.Errorf("K1 handled %v, want [a1 a2 a3 a4]: each once, in order", got)
		}
		for _, e := range list(t, store, poison.Filter{Key: "K1"}) {
			if e.Status != poison.StatusHandled {
				t.Errorf("entry %d (%s) is %s, want handled", e.ID, e.MessageID, e.Status)
			}
		}

		send("K1", "a5") // the key flows again
		waitFor(t, within, "a5 handled", func() bool { return len(h.of("K1")) == 5 })
		if n := len(list(t, store, poison.Filter{})); n != 4 {
			t.Errorf("%d entries, want 4: a5 must not be parked", n)
		}

		// The other handler saw each message once; it skipped the requeued
		// copies. It consumes at its own pace: wait until it got to a5,
		// which follows the copies in K1's partition.
		waitFor(t, within, "the other handler to skip the 4 requeued copies and handle a5", func() bool {
			return metric(t, reg, "millrace_handler_messages_total", "handler=other", "outcome=skipped") == 4 && other.get("a5") >= 1
		})
		for _, p := range []string{"a1", "a2", "a3", "a4", "a5", "b1", "b2"} {
			if n := other.get(p); n != 1 {
				t.Errorf("other handler handled %s %d times, want 1", p, n)
			}
		}
	})

	t.Run("a requeue of an entry behind the head is refused", func(t *testing.T) {
		mu.Lock()
		broken["c1"] = true
		mu.Unlock()
		send("K3", "c1")
		send("K3", "c2")
		waitFor(t, within, "K3's two entries", func() bool { return len(list(t, store, poison.Filter{Key: "K3"})) == 2 })
		entries := list(t, store, poison.Filter{Key: "K3"})
		_, err := store.Requeue(ctx, entries[1].ID)
		if !errors.Is(err, poison.ErrConflict) {
			t.Fatalf("requeue of the second entry = %v, want ErrConflict", err)
		}
		want := fmt.Sprintf("entry %d waits behind entry %d of key K3 for handler h", entries[1].ID, entries[0].ID)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	})
}

// list returns the entries of store that match f.
func list(t *testing.T, store *poison.Store, f poison.Filter) []poison.Entry {
	t.Helper()
	got, err := store.List(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	return got
}
