package kafka_test

import (
	"bytes"
	"maps"
	"strconv"
	"testing"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
)

// plainUnmarshal is Marshaler.Unmarshal written the obvious way, one string
// per header name and value: the oracle its cheaper form is held to.
func plainUnmarshal(rec *sarama.ConsumerMessage) (id string, md message.Metadata) {
	md = message.Metadata{}
	for _, h := range rec.Headers {
		if h == nil || len(h.Key) == 0 {
			continue
		}
		md[string(h.Key)] = string(h.Value)
	}
	id = md[cloudevents.ID]
	if id == "" {
		name := "kafka://" + rec.Topic + "/" + strconv.FormatInt(int64(rec.Partition), 10) + "/" + strconv.FormatInt(rec.Offset, 10)
		id = uuid.NewSHA1(uuid.NameSpaceURL, []byte(name)).String()
		md[cloudevents.ID] = id
	}
	if md[cloudevents.PartitionKey] == "" && len(rec.Key) > 0 {
		md[cloudevents.PartitionKey] = string(rec.Key)
	}
	md[cloudevents.KafkaTopic] = rec.Topic
	md[cloudevents.KafkaPartition] = strconv.FormatInt(int64(rec.Partition), 10)
	md[cloudevents.KafkaOffset] = strconv.FormatInt(rec.Offset, 10)
	return id, md
}

// millraceRecord is a record as millrace's publishers write an order event:
// ten CloudEvents headers.
func millraceRecord(offset int64) *sarama.ConsumerMessage {
	rec := &sarama.ConsumerMessage{
		Topic: "orders.events", Partition: 2, Offset: offset,
		Key:   []byte("00000001-0000-4000-8000-000000000001"),
		Value: []byte(`{"order_id":"00000001-0000-4000-8000-000000000001","user_id":"u-1","amount_cents":2500,"currency":"EUR","payment_ref":"pay","paid_at":"2025-03-01T10:00:00.001Z"}`),
	}
	for _, h := range [][2]string{
		{cloudevents.ID, "0198d6a4-6f6e-7c3a-9c1e-2f1b8c9d0a11"},
		{cloudevents.CausationID, "0198d6a4-6f6e-7c3a-9c1e-2f1b8c9d0a10"},
		{cloudevents.PartitionKey, "00000001-0000-4000-8000-000000000001"},
		{cloudevents.Source, "/millrace/orders"},
		{cloudevents.SpecVersion, "1.0"},
		{cloudevents.Subject, "00000001-0000-4000-8000-000000000001"},
		{cloudevents.Time, "2025-03-01T10:00:00.001Z"},
		{cloudevents.Type, "orders.order-paid.v1"},
		{cloudevents.ContentType, "application/json"},
		{cloudevents.Traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	} {
		rec.Headers = append(rec.Headers, &sarama.RecordHeader{Key: []byte(h[0]), Value: []byte(h[1])})
	}
	return rec
}

// FuzzUnmarshalAgreesWithPlain holds Marshaler.Unmarshal to plainUnmarshal:
// the same id, payload and metadata for any record, and metadata that does
// not share memory with the record (the consumer may reuse it).
func FuzzUnmarshalAgreesWithPlain(f *testing.F) {
	f.Add("orders.events", int32(2), int64(7), []byte("k"), []byte("ce_id\x00abc\x00ce_type\x00t.v1\x00ce_partitionkey\x00agg"))
	f.Add("in", int32(0), int64(0), []byte("k"), []byte("ce_partitionkey\x00\x00ce_id\x00"))
	f.Add("in", int32(0), int64(1), []byte("k"), []byte("ce_partitionkey\x00p\x00ce_partitionkey\x00"))
	f.Add("in", int32(0), int64(1), []byte(nil), []byte("ce_partitionkey\x00\x00ce_partitionkey\x00p"))
	f.Add("", int32(-1), int64(-5), []byte(nil), []byte("\x00\x00\x00"))
	f.Add("t", int32(2147483647), int64(9223372036854775807), []byte{0xff}, []byte("x-kafka-offset\x00zz\x00x-kafka-partition\x00\x00ce_ID\x00upper\x00ce_id\x00a\x00ce_id\x00b"))
	f.Add("t", int32(-2147483648), int64(-9223372036854775808), []byte("key"), []byte("traceparent\x00\xff\xfe\x00other\x00\x00content-type\x00application/json"))
	rec := millraceRecord(123456789)
	var blob []byte
	for _, h := range rec.Headers {
		blob = append(append(append(append(blob, h.Key...), 0), h.Value...), 0)
	}
	f.Add(rec.Topic, rec.Partition, rec.Offset, rec.Key, blob)
	f.Fuzz(func(t *testing.T, topic string, partition int32, offset int64, key, headerBlob []byte) {
		rec := &sarama.ConsumerMessage{Topic: topic, Partition: partition, Offset: offset, Key: key, Value: []byte("payload")}
		parts := bytes.Split(headerBlob, []byte{0})
		for i := 0; i < len(parts); i += 2 {
			h := &sarama.RecordHeader{Key: parts[i]}
			if i+1 < len(parts) {
				h.Value = parts[i+1]
			}
			rec.Headers = append(rec.Headers, h)
			if i == 2 {
				rec.Headers = append(rec.Headers, nil)
			}
		}
		wantID, want := plainUnmarshal(rec)
		msg, err := kafka.Marshaler{}.Unmarshal(rec)
		if err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		if msg.UUID != wantID || !bytes.Equal(msg.Payload, rec.Value) {
			t.Fatalf("UUID %q payload %q, want %q %q", msg.UUID, msg.Payload, wantID, rec.Value)
		}
		if !maps.Equal(msg.Metadata, want) {
			t.Fatalf("metadata\n got %q\nwant %q", msg.Metadata, want)
		}
		for _, h := range rec.Headers { // overwrite the record's bytes: the metadata must not change
			if h != nil {
				for i := range h.Key {
					h.Key[i] = '#'
				}
				for i := range h.Value {
					h.Value[i] = '#'
				}
			}
		}
		for i := range rec.Key {
			rec.Key[i] = '#'
		}
		if !maps.Equal(msg.Metadata, want) {
			t.Fatalf("metadata changed with the record's bytes\n got %q\nwant %q", msg.Metadata, want)
		}
	})
}

// BenchmarkUnmarshal turns a record with millrace's headers into a message,
// as the consumer does for every record it reads.
func BenchmarkUnmarshal(b *testing.B) {
	rec := millraceRecord(123456789)
	b.ReportAllocs()
	for b.Loop() {
		msg, err := kafka.Marshaler{}.Unmarshal(rec)
		if err != nil || msg.UUID == "" {
			b.Fatalf("Unmarshal: %v, UUID %q", err, msg.UUID)
		}
	}
}
