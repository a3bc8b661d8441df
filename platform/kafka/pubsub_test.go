package kafka_test

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
)

func TestPublishSubscribeRoundTrip(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	_, cfg := startBroker(t)
	const topic = "roundtrip"
	ensureTopic(t, ctx, cfg, topic, 3)

	full := event("order-1", `{"orderId":"order-1","total":42}`)
	full.Metadata.Set(cloudevents.CausationID, uuid.NewString())
	full.Metadata.Set(cloudevents.CorrelationID, uuid.NewString())
	full.Metadata.Set(cloudevents.Traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	full.Metadata.Set("x-custom", "kept")

	minimal := message.NewMessage(uuid.NewString(), []byte("plain text"))
	minimal.Metadata.Set(cloudevents.Type, "test.minimal.v1")

	cases := []struct {
		name string
		msg  *message.Message
		// want is the metadata the consumer must see, besides the
		// x-kafka-* position.
		want    message.Metadata
		wantKey string
	}{
		{
			name:    "every CloudEvents attribute",
			msg:     full,
			want:    withID(full.Metadata, full.UUID),
			wantKey: "order-1",
		},
		{
			name: "defaults for a bare message",
			msg:  minimal,
			want: message.Metadata{
				cloudevents.ID:          minimal.UUID,
				cloudevents.Type:        "test.minimal.v1",
				cloudevents.SpecVersion: "1.0",
			},
			wantKey: "",
		},
	}

	pub := newPublisher(t, cfg)
	for _, tc := range cases {
		if err := pub.Publish(topic, tc.msg); err != nil {
			t.Fatalf("publish %s: %v", tc.name, err)
		}
	}
	ch, _ := subscribe(t, ctx, cfg, "roundtrip-group", topic)
	got := make(map[string]*message.Message)
	for _, msg := range receive(t, ctx, ch, len(cases)) {
		got[msg.UUID] = msg
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg, ok := got[tc.msg.UUID]
			if !ok {
				t.Fatalf("message %s not received; got %v", tc.msg.UUID, slices.Collect(maps.Keys(got)))
			}
			if string(msg.Payload) != string(tc.msg.Payload) {
				t.Errorf("payload = %q, want %q", msg.Payload, tc.msg.Payload)
			}
			topicGot, partition, offset, ok := kafka.Position(msg)
			if !ok || topicGot != topic || partition < 0 || partition > 2 || offset < 0 {
				t.Errorf("Position = %q %d %d %v, want topic %s, partition in [0,2]", topicGot, partition, offset, ok, topic)
			}
			meta := maps.Clone(msg.Metadata)
			for _, k := range cloudevents.TransportKeys() {
				if meta[k] == "" {
					t.Errorf("metadata %s missing", k)
				}
				delete(meta, k)
			}
			if !maps.Equal(meta, tc.want) {
				t.Errorf("metadata:\n got %v\nwant %v", meta, tc.want)
			}
			key, _ := wmkafka.MessageKeyFromCtx(msg.Context())
			if string(key) != tc.wantKey {
				t.Errorf("record key = %q, want %q", key, tc.wantKey)
			}
		})
	}
}

func withID(md message.Metadata, id string) message.Metadata {
	out := maps.Clone(md)
	out[cloudevents.ID] = id
	return out
}

func TestOrderPerKey(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	_, cfg := startBroker(t)
	const (
		topic      = "ordered"
		partitions = 4
		keys       = 24
		perKey     = 8
	)
	ensureTopic(t, ctx, cfg, topic, partitions)

	// Interleave the keys: seq 0 of every key, then seq 1, …
	pub := newPublisher(t, cfg)
	for seq := range perKey {
		msgs := make([]*message.Message, 0, keys)
		for k := range keys {
			msgs = append(msgs, event(fmt.Sprintf("key-%02d", k), strconv.Itoa(seq)))
		}
		if err := pub.Publish(topic, msgs...); err != nil {
			t.Fatalf("publish seq %d: %v", seq, err)
		}
	}

	ch, _ := subscribe(t, ctx, cfg, "ordered-group", topic)
	seqs := make(map[string][]int)
	partitionOf := make(map[string]int32)
	usedPartitions := make(map[int32]bool)
	for _, msg := range receive(t, ctx, ch, keys*perKey) {
		key := msg.Metadata.Get(cloudevents.PartitionKey)
		seq, err := strconv.Atoi(string(msg.Payload))
		if err != nil {
			t.Fatalf("payload %q: %v", msg.Payload, err)
		}
		seqs[key] = append(seqs[key], seq)
		_, p, _, _ := kafka.Position(msg)
		if prev, ok := partitionOf[key]; ok && prev != p {
			t.Errorf("key %s in partitions %d and %d, want one", key, prev, p)
		}
		partitionOf[key] = p
		usedPartitions[p] = true
	}

	if len(seqs) != keys {
		t.Fatalf("received %d keys, want %d", len(seqs), keys)
	}
	want := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for key, got := range seqs {
		if !slices.Equal(got, want) {
			t.Errorf("key %s arrived in order %v, want %v", key, got, want)
		}
	}
	if len(usedPartitions) < 2 {
		t.Errorf("%d keys landed in %d partition(s), want them spread over several", keys, len(usedPartitions))
	}
}

func TestGroupSharesPartitions(t *testing.T) {
	ctx := testContext(t, 45*time.Second)
	_, cfg := startBroker(t)
	const (
		topic = "shared"
		group = "shared-group"
		n     = 40
	)
	ensureTopic(t, ctx, cfg, topic, 4)

	chA, _ := subscribe(t, ctx, cfg, group, topic)
	chB, _ := subscribe(t, ctx, cfg, group, topic)
	eventually(t, ctx, "both subscribers joined the group", func() error {
		o, err := kafka.Inspect(ctx, cfg)
		if err != nil {
			return err
		}
		g, ok := o.Group(group)
		if !ok || g.Members != 2 || g.State != "Stable" {
			return fmt.Errorf("group is %+v", g)
		}
		return nil
	})

	pub := newPublisher(t, cfg)
	published := make(map[string]bool)
	for i := range n {
		msg := event(fmt.Sprintf("key-%d", i), "{}")
		published[msg.UUID] = true
		if err := pub.Publish(topic, msg); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}

	received := make(map[string]string) // UUID → subscriber
	partitions := map[string]map[int32]bool{"A": {}, "B": {}}
	for len(received) < n {
		var msg *message.Message
		var who string
		select {
		case msg = <-chA:
			who = "A"
		case msg = <-chB:
			who = "B"
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages before %v", len(received), n, ctx.Err())
		}
		if msg == nil {
			t.Fatalf("subscription %s closed", who)
		}
		msg.Ack()
		if prev, dup := received[msg.UUID]; dup {
			t.Errorf("message %s delivered to %s and again to %s", msg.UUID, prev, who)
		}
		received[msg.UUID] = who
		_, p, _, _ := kafka.Position(msg)
		partitions[who][p] = true
	}

	for id := range published {
		if _, ok := received[id]; !ok {
			t.Errorf("message %s never received", id)
		}
	}
	if len(partitions["A"]) == 0 || len(partitions["B"]) == 0 {
		t.Errorf("partitions A=%v B=%v, want both subscribers to get some", partitions["A"], partitions["B"])
	}
	for p := range partitions["A"] {
		if partitions["B"][p] {
			t.Errorf("partition %d consumed by both subscribers", p)
		}
	}
	// Every message acked once: the group committed exactly all of them.
	g := groupCommitted(t, ctx, cfg, group, topic, n)
	if g.Lag != 0 {
		t.Errorf("group lag = %d after acking everything, want 0", g.Lag)
	}
}

func TestNewSubscriberRequiresGroup(t *testing.T) {
	_, err := kafka.NewSubscriber(kafka.Config{}, "", nil)
	if err == nil {
		t.Fatal("NewSubscriber without brokers and group: want an error")
	}
	for _, want := range []string{"brokers", "consumer group"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
