package projections_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/projectiontest"
)

// ids returns the event ids of rows, and fails the test on a duplicate.
func ids(t *testing.T, rows []ledgerRow) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.id] {
			t.Errorf("event %s applied twice", r.id)
		}
		seen[r.id] = true
	}
	return seen
}

func groupExists(t *testing.T, b *broker, group string) bool {
	t.Helper()
	ov, err := kafka.Inspect(context.Background(), b.cfg)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	_, ok := ov.Group(group)
	return ok
}

// TestRebuildWhileWritesContinue rebuilds while events keep coming, for a
// projection applied event by event and for one applied in batches
// (projections.BatchApplier): every event once in the new version, replays
// marked up to where the log ended when the rebuild began.
func TestRebuildWhileWritesContinue(t *testing.T) {
	tests := []struct {
		name string
		p    projections.Projection
	}{
		{name: "Apply", p: newLedger("ledger")},
		{name: "ApplyBatch", p: batchLedger{newLedger("ledger")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testRebuildWhileWritesContinue(t, tt.p) })
	}
}

func testRebuildWhileWritesContinue(t *testing.T, p projections.Projection) {
	b := startBroker(t, 3)
	db := projectiontest.OpenDB(t)
	m := newManager(t, b, db, p)
	stop := run(t, m)

	before := ordersPlaced("before", 600)
	b.produce(t, recordsOf(t, before)...)
	caughtUp(t, m, "ledger", 1)

	// Writes go on, in small bursts, through the whole rebuild and swap: a
	// burst every 5 ms (1,000 events/s), a pace the rebuild overtakes on a
	// slow machine too (under -race it applies some 3,000/s); unpaced, the
	// writes could outrun it there and the rebuild would never catch up.
	var (
		mu      sync.Mutex
		written = slices.Clone(before)
	)
	wctx, stopWrites := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		pace := time.NewTicker(5 * time.Millisecond)
		defer pace.Stop()
		for i := 0; wctx.Err() == nil; i++ {
			select {
			case <-pace.C:
			case <-wctx.Done():
				return
			}
			burst := ordersPlaced(fmt.Sprintf("during%d", i), 5)
			b.produce(t, recordsOf(t, burst)...)
			mu.Lock()
			written = append(written, burst...)
			mu.Unlock()
		}
	})

	s, err := m.Rebuild(context.Background(), "ledger", projections.From{})
	if err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	if s.Rebuild == nil || s.Rebuild.Version != 2 || s.Rebuild.Replaces != 1 || s.Version != 1 {
		t.Fatalf("status after Rebuild = %+v, want version 2 building to replace 1", s)
	}
	// The old version serves while the new one builds.
	waitFor(t, 60*time.Second, "the rebuild swapped in and retired the old version", func() error {
		s := status(t, m, "ledger")
		if s.Rebuild == nil || s.Rebuild.State != projections.RebuildDone {
			return fmt.Errorf("rebuild %+v", s.Rebuild)
		}
		return nil
	})
	stopWrites()
	wg.Wait()
	mu.Lock()
	during := len(written) - len(before)
	mu.Unlock()
	if during == 0 {
		t.Fatal("no event was written while the rebuild ran: the test proves nothing")
	}
	after := ordersPlaced("after", 50)
	b.produce(t, recordsOf(t, after)...)
	mu.Lock()
	written = append(written, after...)
	mu.Unlock()
	caughtUp(t, m, "ledger", 2)
	stop()

	rows := ledgerRows(t, db, "ledger", 2)
	got := ids(t, rows)
	for _, e := range written {
		if id := "e-" + e.Key(); !got[id] {
			t.Errorf("event %s missing from version 2", id)
		}
	}
	if len(got) != len(written) {
		t.Errorf("version 2 applied %d events, %d were written", len(got), len(written))
	}
	// Replays are the events that were in the log when the rebuild began.
	if !rows[0].replay {
		t.Errorf("the first event rebuilt was not marked as a replay")
	}
	if last := rows[len(rows)-1]; last.replay {
		t.Errorf("event %s, written after the swap, was marked as a replay", last.id)
	}
	for _, r := range rows {
		switch {
		case strings.HasPrefix(r.id, "e-before-") && !r.replay:
			t.Errorf("event %s, in the log before the rebuild, was not marked as a replay", r.id)
		case strings.HasPrefix(r.id, "e-after-") && r.replay:
			t.Errorf("event %s, written after the swap, was marked as a replay", r.id)
		}
	}

	// The old version is gone: tables, positions, consumer groups.
	var tables int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'ledger\_v1\_%' ESCAPE '\'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("%d tables of version 1 left", tables)
	}
	var positions int
	if err := db.QueryRow(`SELECT COUNT(*) FROM projection_positions WHERE projection = 'ledger' AND version = 1`).Scan(&positions); err != nil {
		t.Fatal(err)
	}
	if positions != 0 {
		t.Errorf("%d positions of version 1 left", positions)
	}
	if groupExists(t, b, projections.GroupFor("ledger", 1, events.TopicOrderEvents)) {
		t.Errorf("consumer group of version 1 not deleted")
	}
	if !groupExists(t, b, projections.GroupFor("ledger", 2, events.TopicOrderEvents)) {
		t.Errorf("consumer group of version 2 missing")
	}
}

func TestRebuildResumesAfterCrash(t *testing.T) {
	b := startBroker(t, 2)
	db := projectiontest.OpenDB(t)
	written := ordersPlaced("o", 1000)
	b.produce(t, recordsOf(t, written)...)

	// Version 2 stops making progress after 300 events; the process dies.
	src, reached, release := hold(batchSource(t, b), "ledger", 2, 300)
	defer release()
	m1 := newManagerWith(t, b, src, db, newLedger("ledger"))
	stop1 := run(t, m1)
	caughtUp(t, m1, "ledger", 1)
	if _, err := m1.Rebuild(context.Background(), "ledger", projections.From{}); err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	await(t, reached, 30*time.Second, "version 2 held")
	stop1()

	// The old version still serves; the rebuild is recorded as building,
	// with its checkpoint.
	var active int
	if err := db.QueryRow(`SELECT active FROM projection_versions WHERE projection = 'ledger'`).Scan(&active); err != nil {
		t.Fatal(err)
	}
	if active != 1 {
		t.Fatalf("active version after the crash = %d, want 1", active)
	}
	checkpoint := len(ledgerRows(t, db, "ledger", 2))
	if checkpoint == 0 || checkpoint >= len(written) {
		t.Fatalf("version 2 holds %d events after the crash, want some but not all %d", checkpoint, len(written))
	}
	if got := len(ledgerRows(t, db, "ledger", 1)); got != len(written) {
		t.Fatalf("version 1 holds %d events, want all %d", got, len(written))
	}

	// A new process resumes from the checkpoint, not from the start.
	release()
	l2 := newLedger("ledger")
	m2 := newManager(t, b, db, l2)
	run(t, m2)
	waitFor(t, 60*time.Second, "the resumed rebuild finished", func() error {
		s := status(t, m2, "ledger")
		if s.Version != 2 || s.Rebuild == nil || s.Rebuild.State != projections.RebuildDone {
			return fmt.Errorf("version %d, rebuild %+v", s.Version, s.Rebuild)
		}
		return nil
	})
	got := ids(t, ledgerRows(t, db, "ledger", 2))
	if len(got) != len(written) {
		t.Errorf("version 2 holds %d events, want %d", len(got), len(written))
	}
	if calls := l2.calls(2); calls != len(written)-checkpoint {
		t.Errorf("the resumed rebuild applied %d events, want the %d after the checkpoint", calls, len(written)-checkpoint)
	}
}

func TestConcurrentRebuildIsRefused(t *testing.T) {
	b := startBroker(t, 1)
	db := projectiontest.OpenDB(t)
	b.produce(t, recordsOf(t, ordersPlaced("o", 100))...)
	src, reached, release := hold(batchSource(t, b), "ledger", 2, 10)
	defer release()
	m := newManagerWith(t, b, src, db, newLedger("ledger"))
	run(t, m)
	caughtUp(t, m, "ledger", 1)

	if _, err := m.Rebuild(context.Background(), "ledger", projections.From{}); err != nil {
		t.Fatalf("first Rebuild: %v", err)
	}
	await(t, reached, 30*time.Second, "version 2 held")

	// A second rebuild, from this process or from another one on the same
	// database, is refused while the first has not finished.
	other := newManager(t, b, db, newLedger("ledger"))
	run(t, other)
	for name, mgr := range map[string]*projections.Manager{"same process": m, "another process": other} {
		t.Run(name, func(t *testing.T) {
			_, err := mgr.Rebuild(context.Background(), "ledger", projections.From{})
			var busy *projections.RebuildInProgressError
			if !errors.As(err, &busy) {
				t.Fatalf("second Rebuild = %v, want a RebuildInProgressError", err)
			}
			if busy.Version != 2 || busy.State != projections.RebuildBuilding {
				t.Errorf("refusal names version %d %s, want 2 building", busy.Version, busy.State)
			}
			for _, want := range []string{"already being rebuilt", "version 2", "--cancel"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refusal %q does not say %q", err, want)
				}
			}
		})
	}

	// Cancelling releases the lock and leaves version 1 serving.
	release()
	s, err := m.CancelRebuild(context.Background(), "ledger")
	if err != nil {
		t.Fatalf("CancelRebuild: %v", err)
	}
	if s.Version != 1 || s.Rebuild == nil || s.Rebuild.State != projections.RebuildCancelled {
		t.Errorf("status after cancel = %+v, want version 1 and a cancelled rebuild", s)
	}
	var tables int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'ledger\_v2\_%' ESCAPE '\'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("%d tables of the cancelled version 2 left", tables)
	}
	if _, err := m.CancelRebuild(context.Background(), "ledger"); !errors.Is(err, projections.ErrNoRebuild) {
		t.Errorf("second cancel = %v, want ErrNoRebuild", err)
	}
	s, err = m.Rebuild(context.Background(), "ledger", projections.From{})
	if err != nil {
		t.Fatalf("Rebuild after cancel: %v", err)
	}
	if s.Rebuild.Version != 3 {
		t.Errorf("rebuild after cancel builds version %d, want 3 (numbers are never reused)", s.Rebuild.Version)
	}
}

func TestRebuildReplaysOldEventVersionsUpcast(t *testing.T) {
	b := startBroker(t, 2)
	db := projectiontest.OpenDB(t)
	at := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	line := func(q int) []events.PricedLine {
		return []events.PricedLine{{SKU: "tea", Quantity: q, UnitPriceCents: 100, LineTotalCents: int64(q) * 100}}
	}
	// The log holds v1 events written before v2 existed, then v2 events.
	var recs []*kgo.Record
	for i := range 20 {
		id := fmt.Sprintf("old-%d", i)
		recs = append(recs, record(t, events.OrderPlaced{OrderID: id, UserID: "u-1", Lines: line(i + 1), TotalCents: int64(i+1) * 100,
			Currency: "EUR", PlacedAt: at}, projectiontest.ID("e-"+id)))
	}
	for i := range 20 {
		id := fmt.Sprintf("new-%d", i)
		recs = append(recs, record(t, events.OrderPlacedV2{OrderID: id, UserID: "u-1", Lines: line(i + 1), ItemCount: i + 1,
			TotalCents: int64(i+1) * 100, Currency: "EUR", PlacedAt: at}, projectiontest.ID("e-"+id)))
	}
	b.produce(t, recs...)

	l := newLedger("ledger")
	ov := orders.New(db)
	m := newManager(t, b, db, l, ov)
	run(t, m)
	caughtUp(t, m, "ledger", 1)
	caughtUp(t, m, "orders", 1)
	for _, name := range []string{"ledger", "orders"} {
		if _, err := m.Rebuild(context.Background(), name, projections.From{}); err != nil {
			t.Fatalf("Rebuild %s: %v", name, err)
		}
	}
	for _, name := range []string{"ledger", "orders"} {
		waitFor(t, 60*time.Second, name+" rebuilt", func() error {
			if s := status(t, m, name); s.Version != 2 || s.Rebuild.State != projections.RebuildDone {
				return fmt.Errorf("version %d, rebuild %+v", s.Version, s.Rebuild)
			}
			return nil
		})
	}

	rows := ledgerRows(t, db, "ledger", 2)
	if len(rows) != 40 {
		t.Fatalf("version 2 applied %d events, want 40", len(rows))
	}
	for _, r := range rows {
		var n int
		if _, err := fmt.Sscanf(r.id[len("e-old-"):], "%d", &n); err != nil {
			if _, err := fmt.Sscanf(r.id[len("e-new-"):], "%d", &n); err != nil {
				t.Fatalf("event id %s", r.id)
			}
		}
		if r.typ != "orders.order-placed.v2" || r.itemCount != n+1 {
			t.Errorf("event %s reached the projection as %s with %d items, want orders.order-placed.v2 with %d", r.id, r.typ, r.itemCount, n+1)
		}
	}
	for _, id := range []string{"old-3", "new-3"} {
		o, err := ov.Order(context.Background(), id)
		if err != nil {
			t.Fatalf("Order(%s) after the rebuild: %v", id, err)
		}
		if o.TotalCents != 400 || len(o.Lines) != 1 || o.Lines[0].Quantity != 4 {
			t.Errorf("order %s = %+v", id, o)
		}
	}
}

func TestRebuildFrom(t *testing.T) {
	b := startBroker(t, 1)
	db := projectiontest.OpenDB(t)
	early := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i, m := range ordersPlaced("o", 30) {
		r := record(t, m, projectiontest.ID(fmt.Sprintf("e-%d", i)))
		r.Timestamp = early.Add(time.Duration(i) * time.Hour)
		recs = append(recs, r)
	}
	b.produce(t, recs...)

	tests := []struct {
		name string
		from projections.From
		want int // events in the new version: the last want of the 30
	}{
		{"the start of the log", projections.From{}, 30},
		{"a time", projections.From{Time: early.Add(20 * time.Hour)}, 10},
		{"offsets", projections.From{Offsets: []projections.Position{{Topic: events.TopicOrderEvents, Partition: 0, Offset: 25}}}, 5},
	}
	l := newLedger("ledger")
	m := newManager(t, b, db, l)
	run(t, m)
	caughtUp(t, m, "ledger", 1)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version := i + 2
			s, err := m.Rebuild(context.Background(), "ledger", tt.from)
			if err != nil {
				t.Fatalf("Rebuild: %v", err)
			}
			if s.Rebuild.Total != int64(tt.want) {
				t.Errorf("rebuild total = %d, want %d", s.Rebuild.Total, tt.want)
			}
			waitFor(t, 60*time.Second, "rebuilt", func() error {
				if s := status(t, m, "ledger"); s.Version != version || s.Rebuild.State != projections.RebuildDone {
					return fmt.Errorf("version %d, rebuild %+v", s.Version, s.Rebuild)
				}
				return nil
			})
			rows := ledgerRows(t, db, "ledger", version)
			if len(rows) != tt.want || rows[0].id != fmt.Sprintf("e-%d", 30-tt.want) {
				t.Errorf("version %d holds %d events from %v, want the last %d", version, len(rows), rows[0], tt.want)
			}
		})
	}

	for name, from := range map[string]projections.From{
		"a topic it does not consume":     {Offsets: []projections.Position{{Topic: events.TopicUserEvents, Offset: 1}}},
		"a partition that does not exist": {Offsets: []projections.Position{{Topic: events.TopicOrderEvents, Partition: 9}}},
		"a time and offsets":              {Time: early, Offsets: []projections.Position{{Topic: events.TopicOrderEvents}}},
	} {
		t.Run("refuses "+name, func(t *testing.T) {
			if _, err := m.Rebuild(context.Background(), "ledger", from); !errors.Is(err, projections.ErrBadFrom) {
				t.Errorf("Rebuild(%+v) = %v, want ErrBadFrom", from, err)
			}
			if s := status(t, m, "ledger"); s.Rebuild.InProgress() {
				t.Errorf("a refused rebuild left the lock taken: %+v", s.Rebuild)
			}
		})
	}
}

func TestStatusAndReached(t *testing.T) {
	b := startBroker(t, 2)
	db := projectiontest.OpenDB(t)
	l := newLedger("ledger")
	m := newManager(t, b, db, l)
	run(t, m)
	recs := recordsOf(t, ordersPlaced("o", 40))
	b.produce(t, recs...)
	caughtUp(t, m, "ledger", 1)

	s := status(t, m, "ledger")
	if s.Name != "ledger" || s.State != projections.StateLive || s.Rebuild != nil || len(s.Positions) != 2 {
		t.Fatalf("status = %+v", s)
	}
	var handled int64
	for _, p := range s.Positions {
		handled += p.Offset + 1
		if p.Lag != 0 || p.End != p.Offset+1 {
			t.Errorf("partition %+v: want lag 0 at the end", p)
		}
	}
	if handled != 40 {
		t.Errorf("positions cover %d messages, want 40", handled)
	}

	last := recs[len(recs)-1]
	tests := []struct {
		name string
		at   []projections.Position
		want bool
	}{
		{"a position handled", []projections.Position{{Topic: events.TopicOrderEvents, Partition: last.Partition, Offset: last.Offset}}, true},
		{"a position not yet written", []projections.Position{{Topic: events.TopicOrderEvents, Partition: last.Partition, Offset: last.Offset + 1}}, false},
		{"a topic it does not consume", []projections.Position{{Topic: events.TopicUserEvents, Partition: 0, Offset: 99}}, true},
		{"nothing to wait for", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.Reached(context.Background(), "ledger", tt.at)
			if err != nil || got != tt.want {
				t.Errorf("Reached(%v) = %v, %v; want %v", tt.at, got, err, tt.want)
			}
		})
	}
	var unknown *projections.UnknownProjectionError
	if _, err := m.Status(context.Background(), "nope"); !errors.As(err, &unknown) {
		t.Errorf("Status(nope) = %v, want an UnknownProjectionError", err)
	}

	// Advanced wakes a waiter at the next commit, which reaches the
	// position the waiter asked for.
	woken := m.Advanced("ledger")
	select {
	case <-woken:
		t.Fatal("Advanced fired before anything was committed")
	default:
	}
	more := recordsOf(t, ordersPlaced("p", 1))
	b.produce(t, more...)
	await(t, woken, 30*time.Second, "Advanced to fire at the next commit")
	waitFor(t, 30*time.Second, "the new record reached", func() error {
		at := []projections.Position{{Topic: events.TopicOrderEvents, Partition: more[0].Partition, Offset: more[0].Offset}}
		if ok, err := m.Reached(context.Background(), "ledger", at); err != nil || !ok {
			return fmt.Errorf("Reached = %v, %v", ok, err)
		}
		return nil
	})
	if m.Advanced("nope") != nil {
		t.Error("Advanced of an unknown projection is not nil")
	}
}

// TestRebuildKeepsTheCommandLogsRequestHashes: the request hashes the
// gateway records are in no topic; a rebuild of the command log carries them
// over, and records the commands accepted while it builds in both versions.
func TestRebuildKeepsTheCommandLogsRequestHashes(t *testing.T) {
	b := startBroker(t, 1)
	db := projectiontest.OpenDB(t)
	log := commands.New(db)
	src, reached, release := hold(batchSource(t, b), "commands", 2, 0)
	defer release()
	m := newManagerWith(t, b, src, db, log)
	run(t, m)
	ctx := context.Background()
	accept := func(id, hash string) {
		t.Helper()
		if _, _, err := log.Accept(ctx, commands.Accepted{CommandID: id, Type: "orders.place-order.v1", AggregateID: "o-" + id,
			RequestHash: hash, AcceptedAt: time.Now()}); err != nil {
			t.Fatalf("accept %s: %v", id, err)
		}
	}
	accept("c-1", "h-1")
	b.produce(t, record(t, events.OrderPlacedV2{OrderID: "o-c-1", UserID: "u-1"}, projectiontest.ID("e-1"), projectiontest.CausedBy("c-1")))
	waitFor(t, 30*time.Second, "c-1 succeeded", func() error {
		o, err := log.Get(ctx, "c-1")
		if err != nil || o.Status != commands.StatusSucceeded {
			return fmt.Errorf("%+v, %v", o, err)
		}
		return nil
	})

	if _, err := m.Rebuild(ctx, "commands", projections.From{}); err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	await(t, reached, 30*time.Second, "version 2 held")
	accept("c-2", "h-2") // while version 2 builds
	release()
	waitFor(t, 60*time.Second, "the command log rebuilt", func() error {
		if s := status(t, m, "commands"); s.Version != 2 || s.Rebuild.State != projections.RebuildDone {
			return fmt.Errorf("version %d, rebuild %+v", s.Version, s.Rebuild)
		}
		return nil
	})
	for id, want := range map[string]commands.Status{"c-1": commands.StatusSucceeded, "c-2": commands.StatusPending} {
		o, err := log.Get(ctx, id)
		if err != nil {
			t.Fatalf("Get(%s) from version 2: %v", id, err)
		}
		if o.RequestHash != "h"+id[1:] || o.Status != want {
			t.Errorf("%s in version 2 = %+v, want request hash h%s and %s", id, o, id[1:], want)
		}
	}
}
