package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
)

func newBatchPublisher(t *testing.T, cfg kafka.Config, opts kafka.BatchPublisherOptions) *kafka.BatchPublisher {
	t.Helper()
	pub, err := kafka.NewBatchPublisher(cfg, opts, nil)
	if err != nil {
		t.Fatalf("new batch publisher: %v", err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// readTopic reads the first n records of topic, all partitions.
func readTopic(t *testing.T, ctx context.Context, cfg kafka.Config, topic string, n int) []kafka.Record {
	t.Helper()
	var recs []kafka.Record
	err := kafka.Tail(ctx, cfg, topic, kafka.TailOptions{FromBeginning: true, Limit: n}, func(r kafka.Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	if len(recs) != n {
		t.Fatalf("read %d of %d records of %s before %v", len(recs), n, topic, ctx.Err())
	}
	return recs
}

// endOffsets returns the sum of the end offsets of topic's partitions: the
// number of records the broker has acknowledged.
func endOffsets(ctx context.Context, adm *kadm.Client, topic string) (int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	var sum int64
	var errs []error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			errs = append(errs, o.Err)
		}
		sum += o.Offset
	})
	return sum, errors.Join(errs...)
}

// TestBatchPublisherWritesWhatThePublisherWrites checks that both
// publishers write the same records: headers, key, value, and the same
// partition for the same key, so that one aggregate stays in one partition
// whichever of them wrote its messages.
func TestBatchPublisherWritesWhatThePublisherWrites(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	_, cfg := startBroker(t)
	ensureTopic(t, ctx, cfg, "by-sync", 7)
	ensureTopic(t, ctx, cfg, "by-batch", 7)
	syncPub := newPublisher(t, cfg)
	batchPub := newBatchPublisher(t, cfg, kafka.BatchPublisherOptions{})

	// Every few messages, one of the cases the marshaling has a rule for.
	spanCtx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	}))
	variants := []func(m *message.Message){
		func(*message.Message) {},
		func(m *message.Message) { // a span to propagate; its tracestate replaces the metadata's
			m.SetContext(spanCtx)
			m.Metadata.Set(cloudevents.Tracestate, "vendor=stale")
		},
		func(m *message.Message) { // a trace context already: kept, the span is not injected
			m.SetContext(spanCtx)
			m.Metadata.Set(cloudevents.Traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
			m.Metadata.Set(cloudevents.Tracestate, "vendor=kept")
		},
		func(m *message.Message) { // where it was read from, and no spec version: neither travels
			m.Metadata.Set(cloudevents.KafkaTopic, "elsewhere")
			m.Metadata.Set(cloudevents.KafkaPartition, "2")
			m.Metadata.Set(cloudevents.KafkaOffset, "41")
			m.Metadata.Set(cloudevents.SpecVersion, "")
			m.Metadata.Set("", "no name")
		},
		func(m *message.Message) { // no partition key: no record key
			m.Metadata.Set(cloudevents.PartitionKey, "")
		},
	}

	const keys = 60
	for i := range keys {
		key := "order-" + strconv.Itoa(i)
		a, b := event(key, `{"n":`+strconv.Itoa(i)+`}`), event(key, `{"n":`+strconv.Itoa(i)+`}`)
		variants[i%len(variants)](a)
		b.UUID = a.UUID
		b.Metadata = maps.Clone(a.Metadata)
		b.SetContext(a.Context())
		if err := syncPub.Publish("by-sync", a); err != nil {
			t.Fatalf("sync publish: %v", err)
		}
		if err := batchPub.Publish("by-batch", b); err != nil {
			t.Fatalf("batch publish: %v", err)
		}
	}
	byID := func(recs []kafka.Record) map[string]kafka.Record {
		m := map[string]kafka.Record{}
		for _, r := range recs {
			m[r.Headers[cloudevents.ID]] = r
		}
		return m
	}
	want := byID(readTopic(t, ctx, cfg, "by-sync", keys))
	got := byID(readTopic(t, ctx, cfg, "by-batch", keys))
	if len(got) != keys {
		t.Fatalf("batch publisher wrote %d distinct ce_id, want %d", len(got), keys)
	}
	partitions := map[int32]bool{}
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			t.Errorf("message %s: not written by the batch publisher", id)
		case len(w.Key) > 0 && g.Partition != w.Partition:
			t.Errorf("message %s key %s: partition %d, the watermill publisher chose %d", id, w.Key, g.Partition, w.Partition)
		case string(g.Key) != string(w.Key) || string(g.Value) != string(w.Value):
			t.Errorf("message %s: key %q value %q, want %q %q", id, g.Key, g.Value, w.Key, w.Value)
		case fmt.Sprint(g.Headers) != fmt.Sprint(w.Headers):
			t.Errorf("message %s: headers %v, want %v", id, g.Headers, w.Headers)
		}
		partitions[g.Partition] = true
	}
	if len(partitions) < 2 {
		t.Errorf("%d keys all landed in partitions %v: the key is not hashed", keys, partitions)
	}
}

// TestBatchPublisherKeepsOrderPerKey publishes from many goroutines at once,
// each a sequence of messages per key (one at a time, and several in one
// call), and checks that every key's messages are in the topic in sequence.
func TestBatchPublisherKeepsOrderPerKey(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	_, cfg := startBroker(t)
	ensureTopic(t, ctx, cfg, "ordered", 3)
	pub := newBatchPublisher(t, cfg, kafka.BatchPublisherOptions{})

	const writers, perKey = 24, 60
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			key := "key-" + strconv.Itoa(w)
			for seq := 0; seq < perKey; {
				// Every third writer sends its messages three per call.
				n := 1
				if w%3 == 0 {
					n = 3
				}
				msgs := make([]*message.Message, n)
				for i := range msgs {
					msgs[i] = event(key, strconv.Itoa(seq))
					seq++
				}
				if err := pub.Publish("ordered", msgs...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("publish: %v", err)
	}

	next := map[string]int{}
	for _, r := range readTopic(t, ctx, cfg, "ordered", writers*perKey) {
		key := string(r.Key)
		seq, err := strconv.Atoi(string(r.Value))
		if err != nil {
			t.Fatalf("record %s/%d@%d: value %q is not a sequence number", r.Topic, r.Partition, r.Offset, r.Value)
		}
		if seq != next[key] {
			t.Fatalf("key %s: message %d at %d@%d, want message %d next", key, seq, r.Partition, r.Offset, next[key])
		}
		next[key]++
	}
	for w := range writers {
		if key := "key-" + strconv.Itoa(w); next[key] != perKey {
			t.Errorf("key %s: %d messages in the topic, want %d", key, next[key], perKey)
		}
	}
}

// TestBatchPublisherReturnsAfterAck checks, for concurrent callers, that
// when Publish returns the broker holds the message: the topic's end offsets
// never trail the number of Publish calls that returned.
func TestBatchPublisherReturnsAfterAck(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	_, cfg := startBroker(t)
	ensureTopic(t, ctx, cfg, "acked", 3)
	pub := newBatchPublisher(t, cfg, kafka.BatchPublisherOptions{})
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	const writers, each = 16, 25
	var returned atomic.Int64
	var wg sync.WaitGroup
	failures := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := pub.Publish("acked", event(fmt.Sprintf("k-%d-%d", w, i), "{}")); err != nil {
					failures <- err
					return
				}
				done := returned.Add(1)
				written, err := endOffsets(ctx, adm, "acked")
				if err != nil {
					failures <- err
					return
				}
				if written < done {
					failures <- fmt.Errorf("%d Publish calls returned, the broker holds %d records", done, written)
					return
				}
			}
		})
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	if got := returned.Load(); got != writers*each {
		t.Errorf("%d Publish calls returned nil, want %d", got, writers*each)
	}
}

// TestBatchPublisherReportsErrorsPerMessage checks that a failure names the
// messages it concerns and leaves the others of the same moment alone.
func TestBatchPublisherReportsErrorsPerMessage(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	_, cfg := startBroker(t)
	ensureTopic(t, ctx, cfg, "exists", 3)
	pub := newBatchPublisher(t, cfg, kafka.BatchPublisherOptions{DeliveryTimeout: 3 * time.Second})

	t.Run("a message without UUID fails its call before anything is sent", func(t *testing.T) {
		good, bad := event("k", `"first"`), event("k", `"second"`)
		bad.UUID = ""
		err := pub.Publish("exists", good, bad)
		if err == nil {
			t.Fatal("Publish with a message without UUID returned nil")
		}
		if want := "no UUID"; !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	})

	t.Run("a missing topic fails its messages, not the others", func(t *testing.T) {
		var wg sync.WaitGroup
		missing := event("k", "{}")
		var missingErr error
		okErrs := make([]error, 8)
		wg.Go(func() { missingErr = pub.Publish("does-not-exist", missing) })
		for i := range okErrs {
			wg.Go(func() { okErrs[i] = pub.Publish("exists", event("k-"+strconv.Itoa(i), "{}")) })
		}
		wg.Wait()
		if missingErr == nil {
			t.Fatal("Publish to a missing topic returned nil")
		}
		if !strings.Contains(missingErr.Error(), missing.UUID) || !strings.Contains(missingErr.Error(), "does-not-exist") {
			t.Errorf("error %q names neither message %s nor the topic", missingErr, missing.UUID)
		}
		for i, err := range okErrs {
			if err != nil {
				t.Errorf("publish %d to an existing topic: %v", i, err)
			}
		}
	})

	t.Run("the first call's messages were not written", func(t *testing.T) {
		recs := readTopic(t, ctx, cfg, "exists", 8)
		for _, r := range recs {
			if string(r.Value) == `"first"` {
				t.Errorf("a message of the failed call was written at %d@%d", r.Partition, r.Offset)
			}
		}
	})
}

// TestBatchPublisherCloseFlushes closes the publisher while callers are
// publishing: every call that returned nil is in the topic, the calls after
// Close fail with ErrPublisherClosed.
func TestBatchPublisherCloseFlushes(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	_, cfg := startBroker(t)
	ensureTopic(t, ctx, cfg, "flushed", 3)
	pub, err := kafka.NewBatchPublisher(cfg, kafka.BatchPublisherOptions{}, nil)
	if err != nil {
		t.Fatalf("new batch publisher: %v", err)
	}

	const writers = 32
	var started, wg sync.WaitGroup
	started.Add(writers)
	var ok, refused atomic.Int64
	others := make(chan error, writers*1000)
	for w := range writers {
		wg.Go(func() {
			started.Done()
			for i := 0; ; i++ {
				err := pub.Publish("flushed", event(fmt.Sprintf("w%d-%d", w, i), "{}"))
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, kafka.ErrPublisherClosed):
					refused.Add(1)
					return
				default:
					others <- err
					return
				}
			}
		})
	}
	started.Wait()
	// Let some messages through first, so Close meets calls in flight.
	eventually(t, ctx, "some messages published", func() error {
		if ok.Load() < writers {
			return fmt.Errorf("%d published", ok.Load())
		}
		return nil
	})
	if err := pub.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	wg.Wait()
	close(others)
	for err := range others {
		t.Errorf("publish during close: %v", err)
	}
	if refused.Load() != writers {
		t.Errorf("%d writers were refused after Close, want all %d", refused.Load(), writers)
	}
	// Exactly the messages whose Publish returned nil are in the topic.
	n := int(ok.Load())
	readTopic(t, ctx, cfg, "flushed", n)
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	defer cl.Close()
	if written, err := endOffsets(ctx, kadm.NewClient(cl), "flushed"); err != nil || written != int64(n) {
		t.Errorf("topic holds %d records (err %v), %d Publish calls returned nil", written, err, n)
	}
	if err := pub.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func TestNewBatchPublisherValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  kafka.Config
		opts kafka.BatchPublisherOptions
		want []string
	}{
		{"no brokers", kafka.Config{}, kafka.BatchPublisherOptions{}, []string{"kafka brokers"}},
		{"negative options", kafka.Config{Brokers: []string{"127.0.0.1:1"}},
			kafka.BatchPublisherOptions{DeliveryTimeout: -1, Linger: -1, MaxBufferedRecords: -1},
			[]string{"delivery timeout", "linger", "max buffered records"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := kafka.NewBatchPublisher(tc.cfg, tc.opts, nil)
			if err == nil {
				_ = pub.Close()
				t.Fatal("NewBatchPublisher returned no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
