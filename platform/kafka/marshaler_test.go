package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strconv"
	"testing"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
)

// headersOf returns the headers of rec as a map, failing on duplicates.
func headersOf(t *testing.T, rec *sarama.ProducerMessage) map[string]string {
	t.Helper()
	out := make(map[string]string, len(rec.Headers))
	for _, h := range rec.Headers {
		if _, dup := out[string(h.Key)]; dup {
			t.Errorf("header %s written twice", h.Key)
		}
		out[string(h.Key)] = string(h.Value)
	}
	return out
}

func encoded(t *testing.T, e sarama.Encoder) []byte {
	t.Helper()
	if e == nil {
		return nil
	}
	b, err := e.Encode()
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

func TestMarshal(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	spanCtx, span := tp.Tracer("kafka-test").Start(context.Background(), "publish")
	span.End()
	sc := span.SpanContext()
	wantTraceparent := fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())

	const upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

	cases := []struct {
		name        string
		msg         func() *message.Message
		wantHeaders map[string]string
		wantKey     string // "" means no key
	}{
		{
			name: "metadata become headers, transport keys stay home",
			msg: func() *message.Message {
				m := message.NewMessage("id-1", []byte(`{}`))
				m.Metadata = message.Metadata{
					cloudevents.Type: "t.v1", cloudevents.PartitionKey: "agg-1", "x-custom": "yes",
					cloudevents.KafkaTopic: "in", cloudevents.KafkaPartition: "3", cloudevents.KafkaOffset: "99",
				}
				return m
			},
			wantHeaders: map[string]string{
				cloudevents.ID: "id-1", cloudevents.SpecVersion: "1.0",
				cloudevents.Type: "t.v1", cloudevents.PartitionKey: "agg-1", "x-custom": "yes",
			},
			wantKey: "agg-1",
		},
		{
			name: "the UUID is ce_id whatever the metadata says",
			msg: func() *message.Message {
				m := message.NewMessage("id-2", nil)
				m.Metadata.Set(cloudevents.ID, "stale")
				m.Metadata.Set(cloudevents.SpecVersion, "1.0")
				return m
			},
			wantHeaders: map[string]string{cloudevents.ID: "id-2", cloudevents.SpecVersion: "1.0"},
		},
		{
			name: "an active span is injected as traceparent",
			msg: func() *message.Message {
				m := message.NewMessage("id-3", []byte("x"))
				m.SetContext(spanCtx)
				return m
			},
			wantHeaders: map[string]string{cloudevents.ID: "id-3", cloudevents.SpecVersion: "1.0", cloudevents.Traceparent: wantTraceparent},
		},
		{
			name: "a traceparent in metadata wins over the span",
			msg: func() *message.Message {
				m := message.NewMessage("id-4", []byte("x"))
				m.Metadata.Set(cloudevents.Traceparent, upstream)
				m.Metadata.Set(cloudevents.Tracestate, "vendor=1")
				m.SetContext(spanCtx)
				return m
			},
			wantHeaders: map[string]string{
				cloudevents.ID: "id-4", cloudevents.SpecVersion: "1.0",
				cloudevents.Traceparent: upstream, cloudevents.Tracestate: "vendor=1",
			},
		},
		{
			name: "no span, no traceparent",
			msg: func() *message.Message {
				m := message.NewMessage("id-5", []byte("x"))
				m.SetContext(trace.ContextWithSpanContext(context.Background(), trace.SpanContext{}))
				return m
			},
			wantHeaders: map[string]string{cloudevents.ID: "id-5", cloudevents.SpecVersion: "1.0"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.msg()
			rec, err := kafka.Marshaler{}.Marshal("out", msg)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if rec.Topic != "out" {
				t.Errorf("topic = %q, want out", rec.Topic)
			}
			if got := headersOf(t, rec); !maps.Equal(got, tc.wantHeaders) {
				t.Errorf("headers:\n got %v\nwant %v", got, tc.wantHeaders)
			}
			if got := string(encoded(t, rec.Key)); got != tc.wantKey || (tc.wantKey == "" && rec.Key != nil) {
				t.Errorf("key = %q (%v), want %q", got, rec.Key, tc.wantKey)
			}
			if got := encoded(t, rec.Value); !bytes.Equal(got, msg.Payload) || (msg.Payload == nil) != (rec.Value == nil) {
				t.Errorf("value = %q, want %q", got, msg.Payload)
			}
		})
	}
}

func TestMarshalRefusesMessageWithoutUUID(t *testing.T) {
	if _, err := (kafka.Marshaler{}).Marshal("t", message.NewMessage("", nil)); err == nil {
		t.Fatal("Marshal of a message without UUID: want an error")
	}
	if _, err := (kafka.Marshaler{}).Marshal("t", nil); err == nil {
		t.Fatal("Marshal of nil: want an error")
	}
}

func TestUnmarshal(t *testing.T) {
	rec := func(offset int64, key string, headers ...string) *sarama.ConsumerMessage {
		r := &sarama.ConsumerMessage{Topic: "in", Partition: 2, Offset: offset, Value: []byte("v")}
		if key != "" {
			r.Key = []byte(key)
		}
		for i := 0; i+1 < len(headers); i += 2 {
			r.Headers = append(r.Headers, &sarama.RecordHeader{Key: []byte(headers[i]), Value: []byte(headers[i+1])})
		}
		return r
	}
	derived := func(offset int64) string {
		return uuid.NewSHA1(uuid.NameSpaceURL, []byte("kafka://in/2/"+strconv.FormatInt(offset, 10))).String()
	}
	position := message.Metadata{cloudevents.KafkaTopic: "in", cloudevents.KafkaPartition: "2"}

	cases := []struct {
		name     string
		rec      *sarama.ConsumerMessage
		wantUUID string
		wantMeta message.Metadata // besides the position
	}{
		{
			name:     "ce_id is the UUID, headers are metadata",
			rec:      rec(7, "agg", cloudevents.ID, "abc", cloudevents.Type, "t.v1", cloudevents.PartitionKey, "agg-header"),
			wantUUID: "abc",
			wantMeta: message.Metadata{cloudevents.ID: "abc", cloudevents.Type: "t.v1", cloudevents.PartitionKey: "agg-header"},
		},
		{
			name:     "missing ce_id: a UUID derived from the position",
			rec:      rec(7, "", cloudevents.Type, "t.v1"),
			wantUUID: derived(7),
			wantMeta: message.Metadata{cloudevents.ID: derived(7), cloudevents.Type: "t.v1"},
		},
		{
			name:     "the record key becomes ce_partitionkey",
			rec:      rec(8, "agg", cloudevents.ID, "abc"),
			wantUUID: "abc",
			wantMeta: message.Metadata{cloudevents.ID: "abc", cloudevents.PartitionKey: "agg"},
		},
		{
			name:     "a forged position header is replaced by the real one",
			rec:      rec(9, "", cloudevents.ID, "abc", cloudevents.KafkaOffset, "12345", cloudevents.KafkaTopic, "elsewhere"),
			wantUUID: "abc",
			wantMeta: message.Metadata{cloudevents.ID: "abc"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := kafka.Marshaler{}.Unmarshal(tc.rec)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if msg.UUID != tc.wantUUID {
				t.Errorf("UUID = %q, want %q", msg.UUID, tc.wantUUID)
			}
			want := maps.Clone(tc.wantMeta)
			maps.Copy(want, position)
			want[cloudevents.KafkaOffset] = strconv.FormatInt(tc.rec.Offset, 10)
			if !maps.Equal(msg.Metadata, want) {
				t.Errorf("metadata:\n got %v\nwant %v", msg.Metadata, want)
			}
			topic, partition, offset, ok := kafka.Position(msg)
			if !ok || topic != "in" || partition != 2 || offset != tc.rec.Offset {
				t.Errorf("Position = %s %d %d %v, want in 2 %d true", topic, partition, offset, ok, tc.rec.Offset)
			}
		})
	}

	t.Run("derived UUIDs differ by position", func(t *testing.T) {
		a, _ := kafka.Marshaler{}.Unmarshal(rec(1, ""))
		b, _ := kafka.Marshaler{}.Unmarshal(rec(2, ""))
		if a.UUID == b.UUID {
			t.Errorf("records at offsets 1 and 2 share UUID %s", a.UUID)
		}
	})
}

func TestPositionWithoutKafkaMetadata(t *testing.T) {
	cases := map[string]message.Metadata{
		"none":            {},
		"bad partition":   {cloudevents.KafkaTopic: "t", cloudevents.KafkaPartition: "x", cloudevents.KafkaOffset: "1"},
		"negative offset": {cloudevents.KafkaTopic: "t", cloudevents.KafkaPartition: "0", cloudevents.KafkaOffset: "-1"},
		"no topic":        {cloudevents.KafkaPartition: "0", cloudevents.KafkaOffset: "1"},
	}
	for name, md := range cases {
		t.Run(name, func(t *testing.T) {
			msg := message.NewMessage("id", nil)
			msg.Metadata = md
			if _, _, _, ok := kafka.Position(msg); ok {
				t.Errorf("Position(%v) ok, want not ok", md)
			}
		})
	}
	if _, _, _, ok := kafka.Position(nil); ok {
		t.Error("Position(nil) ok, want not ok")
	}
}

// FuzzUnmarshal feeds arbitrary records to Unmarshal: it must never panic,
// always produce an id and the record's position, and what it produces must
// marshal again without transport headers.
func FuzzUnmarshal(f *testing.F) {
	f.Add("orders.events", int32(0), int64(0), []byte("k"), []byte(`{"a":1}`), []byte("ce_id\x00abc\x00ce_type\x00t.v1"))
	f.Add("", int32(-1), int64(-5), []byte(nil), []byte(nil), []byte("\x00\x00\x00"))
	f.Add("t", int32(2147483647), int64(9223372036854775807), []byte{0xff}, []byte{0xfe}, []byte("x-kafka-offset\x00zz"))
	f.Fuzz(func(t *testing.T, topic string, partition int32, offset int64, key, value, headerBlob []byte) {
		rec := &sarama.ConsumerMessage{Topic: topic, Partition: partition, Offset: offset, Key: key, Value: value}
		parts := bytes.Split(headerBlob, []byte{0})
		for i := 0; i < len(parts); i += 2 {
			h := &sarama.RecordHeader{Key: parts[i]}
			if i+1 < len(parts) {
				h.Value = parts[i+1]
			}
			rec.Headers = append(rec.Headers, h)
		}
		rec.Headers = append(rec.Headers, nil) // a nil header must not break it

		msg, err := kafka.Marshaler{}.Unmarshal(rec)
		if err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		if msg.UUID == "" || msg.Metadata.Get(cloudevents.ID) != msg.UUID {
			t.Fatalf("UUID %q, ce_id %q: want the same, non-empty", msg.UUID, msg.Metadata.Get(cloudevents.ID))
		}
		if !bytes.Equal(msg.Payload, value) {
			t.Fatalf("payload %q, want %q", msg.Payload, value)
		}
		if msg.Metadata.Get(cloudevents.KafkaTopic) != topic ||
			msg.Metadata.Get(cloudevents.KafkaPartition) != strconv.FormatInt(int64(partition), 10) ||
			msg.Metadata.Get(cloudevents.KafkaOffset) != strconv.FormatInt(offset, 10) {
			t.Fatalf("position metadata %v does not match %s/%d@%d", msg.Metadata, topic, partition, offset)
		}
		if _, _, _, ok := kafka.Position(msg); ok != (topic != "" && partition >= 0 && offset >= 0) {
			t.Fatalf("Position ok = %v for %q/%d@%d", ok, topic, partition, offset)
		}

		out, err := kafka.Marshaler{}.Marshal("out", msg)
		if err != nil {
			t.Fatalf("Marshal after Unmarshal: %v", err)
		}
		for _, h := range out.Headers {
			switch string(h.Key) {
			case cloudevents.KafkaTopic, cloudevents.KafkaPartition, cloudevents.KafkaOffset:
				t.Fatalf("transport key %s written as a header", h.Key)
			}
		}
	})
}
