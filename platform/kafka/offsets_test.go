package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/millrace/millrace/platform/kafka"
)

// produceRecords writes n records to topic with franz-go, spread over the
// partitions by key, with the given timestamp, and waits for the acks.
func produceRecords(t *testing.T, ctx context.Context, cfg kafka.Config, topic string, n int, at time.Time) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		t.Fatalf("new producer: %v", err)
	}
	defer cl.Close()
	records := make([]*kgo.Record, n)
	for i := range records {
		records[i] = &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "key-%d", i), Value: fmt.Appendf(nil, `{"n":%d}`, i), Timestamp: at}
	}
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("produce %d records to %s: %v", n, topic, err)
	}
}

func newAdmin(t *testing.T, cfg kafka.Config) *kafka.Admin {
	t.Helper()
	a, err := kafka.NewAdmin(cfg)
	if err != nil {
		t.Fatalf("new admin: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func sum(offsets map[int32]int64) int64 {
	var n int64
	for _, o := range offsets {
		n += o
	}
	return n
}

func TestAdminListsOffsets(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	_, cfg := startBroker(t)
	const topic = "offsets"
	ensureTopic(t, ctx, cfg, topic, 3)
	adm := newAdmin(t, cfg)

	early := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	late := early.Add(time.Hour)
	produceRecords(t, ctx, cfg, topic, 30, early)
	produceRecords(t, ctx, cfg, topic, 12, late)

	starts, err := adm.StartOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("StartOffsets: %v", err)
	}
	if want := map[int32]int64{0: 0, 1: 0, 2: 0}; !reflect.DeepEqual(starts[topic], want) {
		t.Errorf("start offsets = %v, want %v", starts[topic], want)
	}
	ends, err := adm.EndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("EndOffsets: %v", err)
	}
	if got := sum(ends[topic]); got != 42 || len(ends[topic]) != 3 {
		t.Errorf("end offsets = %v, want 3 partitions summing to 42", ends[topic])
	}

	tests := []struct {
		name string
		at   time.Time
		want int64 // records at or after the time: sum of end - offset
	}{
		{"before everything", early.Add(-time.Minute), 42},
		{"between the two batches", early.Add(time.Minute), 12},
		{"after everything", late.Add(time.Minute), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at, err := adm.OffsetsAt(ctx, tt.at, topic)
			if err != nil {
				t.Fatalf("OffsetsAt: %v", err)
			}
			if got := sum(ends[topic]) - sum(at[topic]); got != tt.want {
				t.Errorf("records at or after %s = %d (offsets %v), want %d", tt.at, got, at[topic], tt.want)
			}
		})
	}

	if _, err := adm.EndOffsets(ctx, "no-such-topic"); err == nil {
		t.Error("EndOffsets of a missing topic succeeded")
	}
}

func TestResetGroup(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	_, cfg := startBroker(t)
	const topic, group = "reset", "reset-group"
	ensureTopic(t, ctx, cfg, topic, 2)
	adm := newAdmin(t, cfg)

	early := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	produceRecords(t, ctx, cfg, topic, 20, early)
	produceRecords(t, ctx, cfg, topic, 10, early.Add(time.Hour))

	// A member consumes everything and commits.
	ch, closeSub := subscribe(t, ctx, cfg, group, topic)
	receive(t, ctx, ch, 30)
	groupCommitted(t, ctx, cfg, group, topic, 30)

	// While it is a member, the group cannot be moved.
	_, err := adm.ResetGroup(ctx, group, topic, kafka.ResetTarget{Earliest: true})
	if !errors.Is(err, kafka.ErrGroupActive) {
		t.Fatalf("reset of an active group = %v, want ErrGroupActive", err)
	}
	closeSub()
	eventually(t, ctx, "the member left", func() error {
		n, err := adm.GroupMembers(ctx, group)
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("%d members", n)
		}
		return nil
	})

	plan, err := adm.ResetGroup(ctx, group, topic, kafka.ResetTarget{Time: early.Add(time.Minute)})
	if err != nil {
		t.Fatalf("reset to a time: %v", err)
	}
	var redelivered, skipped int64
	for _, r := range plan {
		if r.From != r.End {
			t.Errorf("partition %d: from %d, want the end %d (everything was committed)", r.Partition, r.From, r.End)
		}
		redelivered += r.Redelivered()
		skipped += r.Skipped()
	}
	if redelivered != 10 || skipped != 0 || len(plan) != 2 {
		t.Errorf("plan %+v: %d redelivered, %d skipped; want 10 and 0 over 2 partitions", plan, redelivered, skipped)
	}
	committed, err := adm.CommittedOffsets(ctx, group, topic)
	if err != nil {
		t.Fatalf("CommittedOffsets: %v", err)
	}
	if got := sum(committed[topic]); got != 20 {
		t.Errorf("committed after reset = %v, want a sum of 20", committed[topic])
	}

	// The next member reads the 10 records again.
	ch2, _ := subscribe(t, ctx, cfg, group, topic)
	again := receive(t, ctx, ch2, 10)
	for _, m := range again {
		if _, _, offset, _ := kafka.Position(m); offset < 0 {
			t.Errorf("redelivered message without a position: %v", m.Metadata)
		}
	}
}

func TestPlanReset(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	_, cfg := startBroker(t)
	const topic = "plan"
	ensureTopic(t, ctx, cfg, topic, 2)
	adm := newAdmin(t, cfg)
	produceRecords(t, ctx, cfg, topic, 40, time.Now())
	ends, err := adm.EndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := adm.CommitGroupOffsets(ctx, "plan-group", map[string]map[int32]int64{topic: {0: 3, 1: 3}}); err != nil {
		t.Fatalf("commit: %v", err)
	}

	tests := []struct {
		name   string
		target kafka.ResetTarget
		wantTo map[int32]int64
	}{
		{"earliest", kafka.ResetTarget{Earliest: true}, map[int32]int64{0: 0, 1: 0}},
		{"latest", kafka.ResetTarget{Latest: true}, ends[topic]},
		{"one partition, the other unchanged", kafka.ResetTarget{Offsets: map[int32]int64{1: 2}}, map[int32]int64{0: 3, 1: 2}},
		{"beyond the end is clamped", kafka.ResetTarget{Offsets: map[int32]int64{0: 1 << 40}}, map[int32]int64{0: ends[topic][0], 1: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := adm.PlanReset(ctx, "plan-group", topic, tt.target)
			if err != nil {
				t.Fatalf("PlanReset: %v", err)
			}
			got := map[int32]int64{}
			for _, r := range plan {
				got[r.Partition] = r.To
				if r.From != 3 {
					t.Errorf("partition %d from %d, want 3", r.Partition, r.From)
				}
			}
			if !reflect.DeepEqual(got, tt.wantTo) {
				t.Errorf("to = %v, want %v", got, tt.wantTo)
			}
		})
	}

	for name, target := range map[string]kafka.ResetTarget{
		"nothing":           {},
		"two kinds":         {Earliest: true, Latest: true},
		"negative offset":   {Offsets: map[int32]int64{0: -1}},
		"missing partition": {Offsets: map[int32]int64{7: 1}},
	} {
		t.Run("refuses "+name, func(t *testing.T) {
			if _, err := adm.PlanReset(ctx, "plan-group", topic, target); err == nil {
				t.Errorf("PlanReset(%+v) succeeded", target)
			}
		})
	}
}
