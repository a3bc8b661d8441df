package kafka_test

import (
	"bytes"
	"slices"
	"testing"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
)

// FuzzCloudEventRoundTrip writes arbitrary messages as Kafka records and
// reads them back, as a broker would deliver them: the CloudEvents decoder
// must give back the id, the payload, the partition key and every
// attribute the encoder wrote, and nothing the transport keys name.
func FuzzCloudEventRoundTrip(f *testing.F) {
	f.Add("0198d6a4-6f6e-7c3a-9c1e-2f1b8c9d0a11", []byte(`{"order_id":"o-1"}`), []byte("ce_type\x00orders.order-placed.v1\x00ce_partitionkey\x00o-1\x00ce_authid\x00alice"))
	f.Add("id", []byte(nil), []byte("ce_specversion\x00\x00x-kafka-offset\x007"))
	f.Add("\x00", []byte{0xff}, []byte("\x00\x00ce_id\x00other\x00traceparent\x0000-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
	f.Fuzz(func(t *testing.T, id string, payload, blob []byte) {
		if id == "" {
			return // Marshal refuses a message without an id; tested elsewhere
		}
		msg := message.NewMessage(id, payload)
		parts := bytes.Split(blob, []byte{0})
		for i := 0; i+1 < len(parts); i += 2 {
			msg.Metadata.Set(string(parts[i]), string(parts[i+1]))
		}
		rec, err := kafka.Marshaler{}.Marshal("topic", msg)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		consumed := &sarama.ConsumerMessage{Topic: "topic", Partition: 1, Offset: 42}
		for i := range rec.Headers {
			consumed.Headers = append(consumed.Headers, &rec.Headers[i])
		}
		if rec.Key != nil {
			consumed.Key, _ = rec.Key.Encode()
		}
		if rec.Value != nil {
			consumed.Value, _ = rec.Value.Encode()
		}
		got, err := kafka.Marshaler{}.Unmarshal(consumed)
		if err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		if got.UUID != id || !bytes.Equal(got.Payload, payload) {
			t.Fatalf("read back id %q payload %q, want %q %q", got.UUID, got.Payload, id, payload)
		}
		if key := msg.Metadata.Get(cloudevents.PartitionKey); key != "" && string(consumed.Key) != key {
			t.Fatalf("record key %q, want the partition key %q", consumed.Key, key)
		}
		transport := cloudevents.TransportKeys()
		for k, v := range msg.Metadata {
			switch {
			case k == "" || k == cloudevents.ID || slices.Contains(transport, k):
			case k == cloudevents.SpecVersion && v == "":
				if got.Metadata.Get(k) != cloudevents.Version {
					t.Fatalf("ce_specversion %q, want the default %s", got.Metadata.Get(k), cloudevents.Version)
				}
			default:
				if got.Metadata.Get(k) != v {
					t.Fatalf("attribute %q read back as %q, want %q", k, got.Metadata.Get(k), v)
				}
			}
		}
		if got.Metadata.Get(cloudevents.KafkaOffset) != "42" {
			t.Fatalf("position %v: the transport keys must describe where the record was read", got.Metadata)
		}
	})
}
