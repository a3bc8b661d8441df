package kafka

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/platform/cloudevents"
)

// Marshaler maps Watermill messages to Kafka records in the CloudEvents
// binary content mode, and back. It implements watermill-kafka's
// MarshalerUnmarshaler and is safe for concurrent use.
//
// Marshal: the record value is the payload; every metadata entry becomes a
// header of the same name (metadata keys are the CloudEvents header names, see
// package cloudevents), except the transport keys of cloudevents.TransportKeys;
// ce_id is the message UUID and ce_specversion defaults to "1.0". The record
// key is the ce_partitionkey metadata (no key when it is empty), so Sarama's
// hash partitioner keeps one aggregate in one partition. When the message
// context holds a valid span and the metadata carries no traceparent, the
// span's W3C trace context is written as traceparent and tracestate.
//
// Unmarshal: every header becomes metadata and the UUID is ce_id. A record
// without ce_id (written by a producer that is not millrace) gets a UUID
// derived from its topic, partition and offset, so it keeps its id when it is
// redelivered. A record key with no ce_partitionkey header becomes
// ce_partitionkey. The record's position is set as x-kafka-topic,
// x-kafka-partition and x-kafka-offset (see Position).
type Marshaler struct{}

var _ wmkafka.MarshalerUnmarshaler = Marshaler{}

// Marshal turns msg into a record for topic.
func (Marshaler) Marshal(topic string, msg *message.Message) (*sarama.ProducerMessage, error) {
	hs, err := planHeaders(topic, msg)
	if err != nil {
		return nil, err
	}
	n, _ := hs.size()
	headers := make([]sarama.RecordHeader, 0, n)
	hs.each(func(k, v string) { headers = append(headers, header(k, v)) })

	rec := &sarama.ProducerMessage{Topic: topic, Headers: headers}
	if msg.Payload != nil {
		rec.Value = sarama.ByteEncoder(msg.Payload)
	}
	if key := msg.Metadata.Get(cloudevents.PartitionKey); key != "" {
		rec.Key = sarama.StringEncoder(key)
	}
	return rec, nil
}

// recordHeaders are the headers of a message's record, as both publishers
// write them (Marshal, and the batch publisher's recordOf): ce_id, then the
// message's metadata sorted by key without the transport keys (with
// ce_specversion added when missing), then the trace context of the
// message's span unless the message already carries one (a message
// forwarded with its original trace).
type recordHeaders struct {
	msg   *message.Message
	keys  []string // the metadata keys written, sorted
	spec  bool     // the metadata has a ce_specversion
	trace propagation.MapCarrier
}

// planHeaders works out the record headers of msg for topic.
func planHeaders(topic string, msg *message.Message) (recordHeaders, error) {
	if msg == nil {
		return recordHeaders{}, fmt.Errorf("marshal message for %s: message is nil", topic)
	}
	if msg.UUID == "" {
		return recordHeaders{}, fmt.Errorf("marshal message for %s: message has no UUID to use as ce_id", topic)
	}
	hs := recordHeaders{msg: msg, keys: make([]string, 0, len(msg.Metadata))}
	if msg.Metadata.Get(cloudevents.Traceparent) == "" {
		if ctx := msg.Context(); trace.SpanContextFromContext(ctx).IsValid() {
			hs.trace = propagation.MapCarrier{}
			propagation.TraceContext{}.Inject(ctx, hs.trace)
		}
	}
	transport := cloudevents.TransportKeys()
	for k, v := range msg.Metadata {
		switch {
		case k == "", k == cloudevents.ID, slices.Contains(transport, k):
			continue
		case k == cloudevents.SpecVersion:
			if v == "" {
				continue
			}
			hs.spec = true
		case k == cloudevents.Tracestate && hs.trace != nil:
			continue // replaced by the injected trace context
		}
		hs.keys = append(hs.keys, k)
	}
	slices.Sort(hs.keys)
	return hs, nil
}

// size is how many headers each gives, and the length of their values.
func (hs recordHeaders) size() (n, bytes int) {
	hs.each(func(_, v string) { n++; bytes += len(v) })
	return n, bytes
}

// each calls add with every header, in order.
func (hs recordHeaders) each(add func(k, v string)) {
	add(cloudevents.ID, hs.msg.UUID)
	for _, k := range hs.keys {
		add(k, hs.msg.Metadata[k])
	}
	if !hs.spec {
		add(cloudevents.SpecVersion, cloudevents.Version)
	}
	for _, k := range []string{cloudevents.Traceparent, cloudevents.Tracestate} {
		if v := hs.trace.Get(k); v != "" {
			add(k, v)
		}
	}
}

// Unmarshal turns a consumed record into a message. It fails only for a nil
// record: any record a broker delivers becomes a message, because a record
// that cannot be unmarshalled would stop its partition for good.
//
// It runs once per consumed record, so it allocates little: the header
// names millrace writes are interned (the constants of package
// cloudevents), and the header values, the record key when it becomes
// ce_partitionkey and the offset share one string, sliced. A value kept
// from the metadata keeps that string alive: a few hundred bytes a record.
func (Marshaler) Unmarshal(rec *sarama.ConsumerMessage) (*message.Message, error) {
	if rec == nil {
		return nil, errors.New("unmarshal kafka record: record is nil")
	}
	// First pass: how long the shared string is, and whether the record key
	// is needed (the last ce_partitionkey header wins, as in the map).
	size := 0
	keyed := false
	for _, h := range rec.Headers {
		if h == nil || len(h.Key) == 0 {
			continue
		}
		size += len(h.Value)
		if string(h.Key) == cloudevents.PartitionKey {
			keyed = len(h.Value) > 0
		}
	}
	useKey := !keyed && len(rec.Key) > 0
	if useKey {
		size += len(rec.Key)
	}
	var digits [40]byte // the partition and the offset, in decimal
	pos := strconv.AppendInt(digits[:0], int64(rec.Partition), 10)
	partLen := len(pos)
	pos = strconv.AppendInt(pos, rec.Offset, 10)
	size += len(pos)

	var b strings.Builder
	b.Grow(size)
	for _, h := range rec.Headers {
		if h != nil && len(h.Key) > 0 {
			b.Write(h.Value)
		}
	}
	if useKey {
		b.Write(rec.Key)
	}
	b.Write(pos)
	all := b.String()

	md := make(message.Metadata, len(rec.Headers)+4)
	at := 0
	for _, h := range rec.Headers {
		if h == nil || len(h.Key) == 0 {
			continue
		}
		md[cloudevents.Key(h.Key)] = all[at : at+len(h.Value)]
		at += len(h.Value)
	}
	if useKey {
		md[cloudevents.PartitionKey] = all[at : at+len(rec.Key)]
		at += len(rec.Key)
	}

	id := md[cloudevents.ID]
	if id == "" {
		id = recordID(rec.Topic, rec.Partition, rec.Offset)
		md[cloudevents.ID] = id
	}
	md[cloudevents.KafkaTopic] = rec.Topic
	md[cloudevents.KafkaPartition] = all[at : at+partLen]
	md[cloudevents.KafkaOffset] = all[at+partLen:]

	msg := message.NewMessage(id, rec.Value)
	msg.Metadata = md
	return msg, nil
}

// Position returns where a consumed message was read from, as set by
// Marshaler.Unmarshal. ok is false when msg carries no valid position (it
// was not read from Kafka).
func Position(msg *message.Message) (topic string, partition int32, offset int64, ok bool) {
	if msg == nil {
		return "", 0, 0, false
	}
	topic = msg.Metadata.Get(cloudevents.KafkaTopic)
	p, perr := strconv.ParseInt(msg.Metadata.Get(cloudevents.KafkaPartition), 10, 32)
	o, oerr := strconv.ParseInt(msg.Metadata.Get(cloudevents.KafkaOffset), 10, 64)
	if topic == "" || perr != nil || oerr != nil || p < 0 || o < 0 {
		return "", 0, 0, false
	}
	return topic, int32(p), o, true
}

// recordID is the id of a record that has no ce_id: a name-based (SHA-1)
// UUID of its position, the same every time the record is read.
func recordID(topic string, partition int32, offset int64) string {
	name := "kafka://" + topic + "/" + strconv.FormatInt(int64(partition), 10) + "/" + strconv.FormatInt(offset, 10)
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte(name)).String()
}

func header(k, v string) sarama.RecordHeader {
	return sarama.RecordHeader{Key: []byte(k), Value: []byte(v)}
}
