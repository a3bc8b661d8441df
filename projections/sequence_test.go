package projections_test

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/projections/projectiontest"
)

// TestRunnerSkipsRepublishedNumberedEvents: events from millrace's outbox
// relay carry their outbox's id and number (ADR 0007). An event published
// again carries the same pair at a new offset, and the runner must skip it
// however the copies fall into batches and transactions, per outbox and per
// partition, and without recording an id per event; events without a
// usable number are still told apart by id.
func TestRunnerSkipsRepublishedNumberedEvents(t *testing.T) {
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	const a, b = "0195d1c0-aaaa-7000-8000-000000000001", "0195d1c0-bbbb-7000-8000-000000000002"
	numbered := func(outbox string, seq int64) *message.Message {
		id := fmt.Sprintf("%s-%d", outbox[10:14], seq)
		return projectiontest.Message(t, placed("o-"+id), projectiontest.ID(id),
			projectiontest.At(start.Add(time.Duration(seq)*time.Millisecond)), projectiontest.Sequence(outbox, seq))
	}
	unnumbered := func(i int) *message.Message {
		return projectiontest.Message(t, placed(fmt.Sprintf("o-u%d", i)), projectiontest.ID(fmt.Sprintf("u-%d", i)),
			projectiontest.At(start.Add(time.Duration(i)*time.Second)))
	}
	badNumber := projectiontest.Message(t, placed("o-bad"), projectiontest.ID("bad-1"), projectiontest.At(start))
	badNumber.Metadata.Set(cloudevents.OutboxID, a)
	badNumber.Metadata.Set(cloudevents.Sequence, "twelve")

	var (
		logs = map[int32]*projectiontest.Log{0: {}, 1: {}}
		want []string // ids in the order they must be applied
	)
	deliver := func(p int32, msgs ...*message.Message) []*message.Message {
		out := make([]*message.Message, len(msgs))
		for i, m := range msgs {
			out[i] = logs[p].Append(m, events.TopicOrderEvents, p)
		}
		return out
	}
	fresh := func(p int32, msgs ...*message.Message) []*message.Message {
		for _, m := range msgs {
			want = append(want, m.UUID)
		}
		return deliver(p, msgs...)
	}
	run := func(outbox string, from, to int64) []*message.Message {
		var out []*message.Message
		for seq := from; seq <= to; seq++ {
			out = append(out, numbered(outbox, seq))
		}
		return out
	}
	interleave := func(x, y []*message.Message) []*message.Message {
		var out []*message.Message
		for len(x) > 0 || len(y) > 0 {
			if len(x) > 0 {
				out, x = append(out, x[0]), x[1:]
			}
			if len(y) > 0 {
				out, y = append(out, y[0]), y[1:]
			}
		}
		return out
	}

	db := projectiontest.OpenDB(t)
	r := newRunner(t, db, &recorder{})
	ctx := context.Background()
	type step struct {
		name  string
		batch []*message.Message // handled in one transaction
		one   []*message.Message // handled one per transaction
		total int                // len(want) once handled
	}
	var steps []step
	add := func(st step) { st.total = len(want); steps = append(steps, st) }
	add(step{name: "two outboxes interleaved, and unnumbered events", batch: slices.Concat(
		fresh(0, interleave(run(a, 1, 100), run(b, 1, 50))...),
		fresh(0, unnumbered(1), unnumbered(2), unnumbered(3)))})
	add(step{name: "a relay publishes its last run again, then goes on", batch: slices.Concat(
		deliver(0, run(a, 90, 100)...), fresh(0, run(a, 101, 150)...), fresh(0, numbered(b, 51)))})
	add(step{name: "one re-published long after, alone", batch: deliver(0, numbered(a, 5))})
	add(step{name: "the same event twice in one batch", batch: slices.Concat(fresh(0, numbered(a, 151)), deliver(0, numbered(a, 151)))})
	add(step{name: "unnumbered re-published among numbered", batch: slices.Concat(deliver(0, unnumbered(2)), fresh(0, numbered(a, 152)))})
	add(step{name: "one per transaction", one: slices.Concat(fresh(0, numbered(b, 52)), deliver(0, numbered(b, 52), numbered(a, 1)))})
	// Numbers are per partition: outbox a's 200 in partition 1 says nothing
	// of partition 0, where 160 is new.
	add(step{name: "another partition", batch: fresh(1, numbered(a, 200))})
	add(step{name: "back in the first partition", batch: fresh(0, numbered(a, 160))})
	add(step{name: "a number that does not read falls back to the id", batch: slices.Concat(fresh(0, badNumber), deliver(0, badNumber))})

	for _, st := range steps {
		for _, m := range st.one {
			if err := r.Handle(m); err != nil {
				t.Fatalf("%s: Handle: %v", st.name, err)
			}
		}
		if st.batch != nil {
			if err := r.HandleBatch(ctx, st.batch); err != nil {
				t.Fatalf("%s: HandleBatch: %v", st.name, err)
			}
		}
		if got := applied(t, db); !reflect.DeepEqual(got, want[:st.total]) {
			t.Fatalf("%s: applied %d events, want %d, each once, in log order; first difference: %s",
				st.name, len(got), st.total, projectiontest.FirstDiff(got, want[:st.total]))
		}
	}

	// Only the unnumbered events left an id behind; the numbered ones one
	// row per outbox and partition.
	var ids int
	if err := db.QueryRow(`SELECT COUNT(*) FROM projection_event_ids WHERE projection = 'recorder' AND version = 1`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if ids != 4 {
		t.Errorf("%d event ids recorded, want 4 (u-1, u-2, u-3, bad-1)", ids)
	}
	wantSeqs := []string{"orders.events/0 " + a + " 160", "orders.events/0 " + b + " 52", "orders.events/1 " + a + " 200"}
	if got := sequences(t, db, "recorder", 1); !reflect.DeepEqual(got, wantSeqs) {
		t.Errorf("stored sequences %v, want %v", got, wantSeqs)
	}
}

// sequences lists the stored highest sequences of one version.
func sequences(t *testing.T, db *sql.DB, name string, version int) []string {
	t.Helper()
	rows, err := db.Query(`SELECT topic, "partition", outbox, seq FROM projection_sequences
WHERE projection = ? AND version = ? ORDER BY topic, "partition", outbox`, name, version)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var (
			topic, outbox string
			partition     int32
			seq           int64
		)
		if err := rows.Scan(&topic, &partition, &outbox, &seq); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s/%d %s %d", topic, partition, outbox, seq))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
