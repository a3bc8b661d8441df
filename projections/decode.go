package projections

import (
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	json "github.com/goccy/go-json"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
)

// decode builds the Event a projection sees from a message of a known type,
// upcast to the current version of its type when upcast is set (the type
// has an upcaster).
func decode(msg *message.Message, typ events.Type, at Position, upcast bool) (Event, error) {
	data := typ.New()
	if err := unmarshalPayload(msg.Payload, data); err != nil {
		return Event{}, fmt.Errorf("%w: decode %s payload: %v", ErrMalformedEvent, typ.Name, err)
	}
	var when time.Time
	if v := msg.Metadata.Get(cloudevents.Time); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v) // 55 ns and no allocation for the form millrace writes
		if err != nil {
			return Event{}, fmt.Errorf("%w: %s %q is not an RFC 3339 time", ErrMalformedEvent, cloudevents.Time, v)
		}
		when = t
	}
	key := msg.Metadata.Get(cloudevents.Subject)
	if key == "" {
		key = msg.Metadata.Get(cloudevents.PartitionKey)
	}
	if key == "" {
		key = data.Key()
	}
	current := data
	if upcast {
		current = events.Upcast(data)
	}
	return Event{
		ID:          msg.UUID,
		Type:        current.Name(),
		WireType:    typ.Name,
		Key:         key,
		Source:      msg.Metadata.Get(cloudevents.Source),
		CausationID: msg.Metadata.Get(cloudevents.CausationID),
		Time:        when,
		Topic:       at.Topic,
		Partition:   at.Partition,
		Offset:      at.Offset,
		Data:        current,
		Metadata:    msg.Metadata,
	}, nil
}

// unmarshalPayload decodes a JSON payload into v, a pointer from
// events.Type.New, accepting and rejecting exactly what encoding/json's
// Unmarshal does and giving the same value.
//
// It uses goccy/go-json rather than encoding/json because decoding is most
// of what a rebuild spends per event beyond SQLite: goccy takes a third to a
// quarter of the time, with half the allocations, on order events
// (BenchmarkDecode). FuzzDecodeAgreesWithEncodingJSON holds it to
// encoding/json for every message type. Decoded strings are copies (goccy's
// default; not DecodeNoCopyString), so an Event never keeps the consumer's
// fetch buffer alive.
func unmarshalPayload(payload []byte, v events.Message) error {
	return json.Unmarshal(payload, v)
}
