// Package cloudevents maps typed commands and events to Watermill messages
// that are CloudEvents 1.0, ready for the Kafka binary content mode.
//
// Watermill message metadata keys are the Kafka header names of the binary
// mode (ce_type, ce_source, …), so a message's metadata is exactly the set of
// headers on the wire; the message UUID is ce_id. The record key comes from
// the partitionkey extension (ce_partitionkey), which millrace sets to the
// aggregate id.
package cloudevents

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
)

// Kafka header names (and Watermill metadata keys) of CloudEvents attributes.
const (
	ID          = "ce_id"
	Type        = "ce_type"
	Source      = "ce_source"
	SpecVersion = "ce_specversion"
	Time        = "ce_time"
	Subject     = "ce_subject"
	ContentType = "content-type"
	// PartitionKey is the CloudEvents partitioning extension; the Kafka
	// adapter uses it as the record key.
	PartitionKey = "ce_partitionkey"
	// CausationID is an extension naming the message (usually the command)
	// that caused this one.
	CausationID = "ce_causationid"
	// CorrelationID is an extension shared by every message of one request.
	CorrelationID = "ce_correlationid"
	// RequestHash is an extension the gateway sets on the commands it
	// publishes: a digest (SHA-256, hex) of the HTTP request that carried
	// the command, from which the command log tells a retry with the same
	// Idempotency-Key from another request reusing the key.
	RequestHash = "ce_requesthash"
	// OutboxID and Sequence are extensions the outbox relay sets on the
	// events it publishes (platform/commandstore): the id of the outbox the
	// event left through, and the event's place in that outbox, a decimal
	// number that grows with every event the outbox takes. An event the
	// relay publishes again after a crash carries the same pair, and within
	// a partition an outbox's events first appear in sequence order, so a
	// consumer that remembers the highest sequence it applied per outbox and
	// partition recognises every re-publish without keeping event ids
	// (projections do; ADR 0007). Sequence is the CloudEvents sequence
	// extension, scoped by OutboxID rather than by source.
	OutboxID = "ce_outboxid"
	Sequence = "ce_sequence"
	// Traceparent and Tracestate carry W3C trace context.
	Traceparent = "traceparent"
	Tracestate  = "tracestate"

	// Version is the CloudEvents specification version millrace emits.
	Version = "1.0"
	// JSON is the content type of every payload millrace emits.
	JSON = "application/json"
)

// Transport metadata set by the Kafka adapter on consumed messages. They
// describe where a message was read from and are never written as headers.
const (
	KafkaTopic     = "x-kafka-topic"
	KafkaPartition = "x-kafka-partition"
	KafkaOffset    = "x-kafka-offset"
)

// Key is the metadata key of a Kafka header name: the constant of this
// package for the names millrace writes and reads, so that a consumer turns
// a record's headers into metadata without allocating a string per name,
// and a copy for any other name.
func Key(k []byte) string {
	switch string(k) {
	case ID:
		return ID
	case Type:
		return Type
	case Source:
		return Source
	case SpecVersion:
		return SpecVersion
	case Time:
		return Time
	case Subject:
		return Subject
	case ContentType:
		return ContentType
	case PartitionKey:
		return PartitionKey
	case CausationID:
		return CausationID
	case CorrelationID:
		return CorrelationID
	case RequestHash:
		return RequestHash
	case OutboxID:
		return OutboxID
	case Sequence:
		return Sequence
	case Traceparent:
		return Traceparent
	case Tracestate:
		return Tracestate
	case KafkaTopic:
		return KafkaTopic
	case KafkaPartition:
		return KafkaPartition
	case KafkaOffset:
		return KafkaOffset
	}
	return string(k)
}

// TransportKeys lists the metadata keys that are local to one process and
// must not travel as headers.
func TransportKeys() []string { return []string{KafkaTopic, KafkaPartition, KafkaOffset} }

// Named is implemented by every millrace command and event (see package events).
type Named interface {
	Name() string
	Key() string
}

// ErrMissingType is returned when a message carries no ce_type.
var ErrMissingType = errors.New("message has no ce_type header")

// ErrMalformedPayload is wrapped by Unmarshal when a payload does not decode
// into its type. Retrying cannot fix it: such a message is poisoned at once.
var ErrMalformedPayload = errors.New("malformed payload")

// Marshaler turns typed commands and events into CloudEvents messages and
// back. It implements watermill's cqrs.CommandEventMarshaler. It is safe for
// concurrent use.
type Marshaler struct {
	// Source is the ce_source of marshalled messages, e.g. "/millrace/orders".
	Source string
	// NewUUID makes message ids; uuid.NewString (v4) when nil.
	NewUUID func() string
	// Now stamps ce_time; time.Now when nil.
	Now func() time.Time
}

// Marshal encodes v (which must implement Named) as JSON with its CloudEvents attributes.
func (m Marshaler) Marshal(v any) (*message.Message, error) {
	n, ok := v.(Named)
	if !ok {
		return nil, fmt.Errorf("marshal %T: type has no Name and Key methods", v)
	}
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", n.Name(), err)
	}
	id := uuid.NewString()
	if m.NewUUID != nil {
		id = m.NewUUID()
	}
	now := time.Now()
	if m.Now != nil {
		now = m.Now()
	}
	msg := message.NewMessage(id, payload)
	msg.Metadata.Set(Type, n.Name())
	msg.Metadata.Set(Source, m.Source)
	msg.Metadata.Set(SpecVersion, Version)
	msg.Metadata.Set(Time, now.UTC().Format(time.RFC3339Nano))
	msg.Metadata.Set(Subject, n.Key())
	msg.Metadata.Set(PartitionKey, n.Key())
	msg.Metadata.Set(ContentType, JSON)
	return msg, nil
}

// Unmarshal decodes the JSON payload of msg into v.
func (Marshaler) Unmarshal(msg *message.Message, v any) error {
	if err := json.Unmarshal(msg.Payload, v); err != nil {
		return fmt.Errorf("decode %s %s: %w: %w", msg.Metadata.Get(Type), msg.UUID, ErrMalformedPayload, err)
	}
	return nil
}

// Name returns the wire name of v.
func (Marshaler) Name(v any) string {
	if n, ok := v.(Named); ok {
		return n.Name()
	}
	return fmt.Sprintf("%T", v)
}

// NameFromMessage returns the ce_type of msg.
func (Marshaler) NameFromMessage(msg *message.Message) string {
	return msg.Metadata.Get(Type)
}
