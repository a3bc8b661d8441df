package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
)

// startBroker starts an embedded broker on a free loopback port with its data
// in a temporary directory, closed when the test ends.
func startBroker(t *testing.T) (*kafka.EmbeddedBroker, kafka.Config) {
	t.Helper()
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, kafka.Config{Brokers: b.Addrs(), ClientID: "kafka-test"}
}

// testContext returns a context that ends with the test or after d.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func ensureTopic(t *testing.T, ctx context.Context, cfg kafka.Config, name string, partitions int32) {
	t.Helper()
	if err := kafka.EnsureTopics(ctx, cfg, kafka.Topic{Name: name, Partitions: partitions}); err != nil {
		t.Fatalf("ensure topic %s: %v", name, err)
	}
}

func newPublisher(t *testing.T, cfg kafka.Config) *wmkafka.Publisher {
	t.Helper()
	pub, err := kafka.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatalf("new publisher: %v", err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// subscribe starts a subscriber of topic in group. The subscriber is closed
// when the test ends; close it earlier with the returned function.
func subscribe(t *testing.T, ctx context.Context, cfg kafka.Config, group, topic string) (<-chan *message.Message, func()) {
	t.Helper()
	sub, err := kafka.NewSubscriber(cfg, group, watermill.NopLogger{})
	if err != nil {
		t.Fatalf("new subscriber: %v", err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe to %s: %v", topic, err)
	}
	return ch, func() {
		if err := sub.Close(); err != nil {
			t.Errorf("close subscriber: %v", err)
		}
	}
}

// event returns a message with the CloudEvents metadata millrace sets.
func event(key string, payload string) *message.Message {
	msg := message.NewMessage(uuid.NewString(), []byte(payload))
	msg.Metadata.Set(cloudevents.Type, "test.thing-happened.v1")
	msg.Metadata.Set(cloudevents.Source, "/millrace/test")
	msg.Metadata.Set(cloudevents.SpecVersion, cloudevents.Version)
	msg.Metadata.Set(cloudevents.Time, "2026-01-02T03:04:05.000000006Z")
	msg.Metadata.Set(cloudevents.ContentType, cloudevents.JSON)
	if key != "" {
		msg.Metadata.Set(cloudevents.Subject, key)
		msg.Metadata.Set(cloudevents.PartitionKey, key)
	}
	return msg
}

// receive takes n messages from ch, acking each, or fails the test when ctx
// ends first.
func receive(t *testing.T, ctx context.Context, ch <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	got := make([]*message.Message, 0, n)
	for len(got) < n {
		select {
		case msg, ok := <-ch:
			if !ok {
				t.Fatalf("subscription closed after %d of %d messages", len(got), n)
			}
			msg.Ack()
			got = append(got, msg)
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages before %v", len(got), n, ctx.Err())
		}
	}
	return got
}

// eventually polls cond until it holds, failing the test with what and the
// last error when ctx ends first.
func eventually(t *testing.T, ctx context.Context, what string, cond func() error) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: still not so when the deadline passed: %v", what, err)
		case <-tick.C:
		}
	}
}

// groupCommitted waits until group has committed want offsets in total on
// topic (the sum over partitions of the committed offsets).
func groupCommitted(t *testing.T, ctx context.Context, cfg kafka.Config, group, topic string, want int64) kafka.GroupInfo {
	t.Helper()
	var got kafka.GroupInfo
	eventually(t, ctx, fmt.Sprintf("group %s committed %d on %s", group, want, topic), func() error {
		o, err := kafka.Inspect(ctx, cfg)
		if err != nil {
			return err
		}
		g, ok := o.Group(group)
		if !ok {
			return fmt.Errorf("group not listed")
		}
		gt, ok := g.Topic(topic)
		if !ok {
			return fmt.Errorf("group has no offsets on the topic")
		}
		if gt.Committed != want {
			return fmt.Errorf("committed %d", gt.Committed)
		}
		got = g
		return nil
	})
	return got
}
