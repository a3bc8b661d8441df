package projections_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/commandstore"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/sqlite"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/projectiontest"
)

// lostAck publishes every message through next, then reports failure for
// the first call: the broker took the events, but the relay did not learn
// it (it crashed, or the acknowledgement timed out), so it publishes them
// again.
type lostAck struct {
	next  message.Publisher
	calls int
}

var errAckLost = errors.New("acknowledgement lost")

func (p *lostAck) Publish(topic string, msgs ...*message.Message) error {
	if err := p.next.Publish(topic, msgs...); err != nil {
		return err
	}
	if p.calls++; p.calls == 1 {
		return errAckLost
	}
	return nil
}

func (p *lostAck) Close() error { return nil }

// TestRelayRepublishIsAppliedOnce: millrace's own outbox relay publishes
// through millrace's Kafka publisher to the broker, loses an
// acknowledgement and publishes a run of events again (ADR 0007). The live
// version of a projection, and a rebuild of it from the log, apply every
// event once, recognising the copies by their outbox sequence, with no
// event id stored.
func TestRelayRepublishIsAppliedOnce(t *testing.T) {
	ctx := context.Background()
	b := startBroker(t, 3)
	stateDB, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stateDB.Close() })
	store, err := commandstore.New(ctx, stateDB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	orders, err := commandstore.NewAggregate[events.OrderPlacedV2, events.OrderPlacedV2](store, commandstore.AggregateConfig{
		Name: "order", Handler: "orders", Topic: events.TopicOrderEvents, Source: events.SourceOrders,
	})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kafka.NewBatchPublisher(b.cfg, kafka.BatchPublisherOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	relay := store.NewRelay(&lostAck{next: pub}, nil)

	var want []string // order ids, each to be applied once
	place := func(prefix string, n int) {
		for _, e := range ordersPlaced(prefix, n) {
			placed := e.(events.OrderPlacedV2)
			cmd := cqrs.CtxWithOriginalMessage(ctx, message.NewMessage("cmd-"+placed.OrderID, []byte("{}")))
			if err := orders.Apply(cmd, placed.OrderID, func(*events.OrderPlacedV2) (*events.OrderPlacedV2, []events.OrderPlacedV2, error) {
				return &placed, []events.OrderPlacedV2{placed}, nil
			}); err != nil {
				t.Fatalf("place %s: %v", placed.OrderID, err)
			}
			want = append(want, placed.OrderID)
		}
	}
	place("first", 30)
	if err := relay.Flush(ctx); !errors.Is(err, errAckLost) {
		t.Fatalf("first flush: %v, want the lost acknowledgement", err)
	}
	if err := relay.Flush(ctx); err != nil { // the same 30 events again
		t.Fatalf("second flush: %v", err)
	}
	place("later", 20)
	if err := relay.Flush(ctx); err != nil {
		t.Fatalf("third flush: %v", err)
	}

	db := projectiontest.OpenDB(t)
	m := newManager(t, b, db, newLedger("ledger"))
	run(t, m)
	caughtUp(t, m, "ledger", 1)
	var records int64
	for _, p := range status(t, m, "ledger").Positions {
		records += p.End
	}
	if records != 80 {
		t.Fatalf("the log holds %d records, want 80 (50 events, 30 of them twice)", records)
	}
	appliedOnce(t, db, 1, want)

	if _, err := m.Rebuild(ctx, "ledger", projections.From{}); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	caughtUp(t, m, "ledger", 2)
	appliedOnce(t, db, 2, want)

	var ids int
	if err := db.QueryRow(`SELECT COUNT(*) FROM projection_event_ids`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if ids != 0 {
		t.Errorf("%d event ids stored, want none: every event carries its outbox sequence", ids)
	}
	if got := sequences(t, db, "ledger", 2); len(got) == 0 {
		t.Error("version 2 stored no outbox sequence")
	}
}

// appliedOnce checks that version of the ledger applied len(want) events,
// each once.
func appliedOnce(t *testing.T, db *sql.DB, version int, want []string) {
	t.Helper()
	rows := ledgerRows(t, db, "ledger", version)
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.id] {
			t.Errorf("v%d applied event %s twice", version, r.id)
		}
		seen[r.id] = true
	}
	if len(rows) != len(want) {
		t.Errorf("v%d applied %d events, want %d", version, len(rows), len(want))
	}
}
