package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/kafka"
)

// collector records the batches a BatchConsumer hands over.
type collector struct {
	mu      sync.Mutex
	batches [][]*message.Message
	failAt  int64 // fail a batch holding this offset of partition 0; -1 never
}

var errFailOnPurpose = errors.New("failed on purpose")

func (c *collector) handle(_ context.Context, batch []*message.Message) error {
	for _, m := range batch {
		if _, p, o, _ := kafka.Position(m); p == 0 && o == c.failAt {
			return errFailOnPurpose
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches = append(c.batches, append([]*message.Message(nil), batch...))
	return nil
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, b := range c.batches {
		n += len(b)
	}
	return n
}

func newBatchConsumer(t *testing.T, cfg kafka.Config, maxBatch int) *kafka.BatchConsumer {
	t.Helper()
	c, err := kafka.NewBatchConsumer(cfg, kafka.BatchOptions{MaxBatch: maxBatch}, nil)
	if err != nil {
		t.Fatalf("new batch consumer: %v", err)
	}
	return c
}

func TestBatchConsumerHandsOverConsecutiveBatches(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	_, cfg := startBroker(t)
	const topic, group = "batches", "batch-group"
	ensureTopic(t, ctx, cfg, topic, 3)
	produceRecords(t, ctx, cfg, topic, 600, time.Now())
	adm := newAdmin(t, cfg)

	// Partition 0 resumes at offset 5, as if 0..4 had been applied.
	resume := func(_ context.Context, topic string, partitions []int32) (map[int32]int64, error) {
		return map[int32]int64{0: 5}, nil
	}
	col := &collector{failAt: -1}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- newBatchConsumer(t, cfg, 64).Consume(cctx, group, topic, resume, col.handle) }()
	eventually(t, ctx, "every record after the resume point delivered", func() error {
		if n := col.count(); n != 595 {
			return fmt.Errorf("%d delivered", n)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Consume after cancel = %v, want nil", err)
	}

	next := map[int32]int64{0: 5, 1: 0, 2: 0}
	for _, b := range col.batches {
		if len(b) == 0 || len(b) > 64 {
			t.Fatalf("batch of %d messages, want 1..64", len(b))
		}
		_, p, _, _ := kafka.Position(b[0])
		for _, m := range b {
			_, mp, o, ok := kafka.Position(m)
			if !ok || mp != p || o != next[p] {
				t.Fatalf("partition %d: got %d/%d, want offset %d of one partition per batch", p, mp, o, next[p])
			}
			next[p]++
		}
	}
	ends, err := adm.EndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := adm.CommittedOffsets(ctx, group, topic)
	if err != nil {
		t.Fatal(err)
	}
	for p, end := range ends[topic] {
		if next[p] != end || committed[topic][p] != end {
			t.Errorf("partition %d: read to %d, committed %d, want the end %d", p, next[p], committed[topic][p], end)
		}
	}
}

func TestBatchConsumerStopsOnFailureAndRedelivers(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	_, cfg := startBroker(t)
	const topic, group = "failing", "failing-group"
	ensureTopic(t, ctx, cfg, topic, 1)
	produceRecords(t, ctx, cfg, topic, 100, time.Now())

	col := &collector{failAt: 50}
	err := newBatchConsumer(t, cfg, 10).Consume(ctx, group, topic, nil, col.handle)
	if !errors.Is(err, errFailOnPurpose) {
		t.Fatalf("Consume = %v, want the handler's error", err)
	}
	acked := col.count()
	if acked > 50 || acked < 40 {
		t.Fatalf("%d messages acknowledged before the failure, want the batches before offset 50", acked)
	}

	// The next member starts after what was acknowledged, nothing earlier.
	col2 := &collector{failAt: -1}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- newBatchConsumer(t, cfg, 10).Consume(cctx, group, topic, nil, col2.handle) }()
	eventually(t, ctx, "the rest delivered", func() error {
		if n := col2.count(); n != 100-acked {
			return fmt.Errorf("%d of %d delivered", n, 100-acked)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Consume = %v", err)
	}
	if _, _, first, _ := kafka.Position(col2.batches[0][0]); first != int64(acked) {
		t.Errorf("second member started at %d, want %d", first, acked)
	}
}
