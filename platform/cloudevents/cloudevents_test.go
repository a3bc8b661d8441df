package cloudevents_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/cloudevents"
)

type shipped struct {
	OrderID string `json:"order_id"`
	Carrier string `json:"carrier"`
}

func (shipped) Name() string  { return "orders.order-shipped.v1" }
func (s shipped) Key() string { return s.OrderID }

func TestMarshalSetsEveryAttribute(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 123, time.FixedZone("CET", 3600))
	m := cloudevents.Marshaler{
		Source:  "/millrace/orders",
		NewUUID: func() string { return "id-1" },
		Now:     func() time.Time { return at },
	}
	msg, err := m.Marshal(shipped{OrderID: "o-1", Carrier: "DHL"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		cloudevents.Type:         "orders.order-shipped.v1",
		cloudevents.Source:       "/millrace/orders",
		cloudevents.SpecVersion:  "1.0",
		cloudevents.Time:         "2026-11-25T09:00:00.000000123Z",
		cloudevents.Subject:      "o-1",
		cloudevents.PartitionKey: "o-1",
		cloudevents.ContentType:  "application/json",
	}
	for k, v := range want {
		if got := msg.Metadata.Get(k); got != v {
			t.Errorf("metadata %s = %q, want %q", k, got, v)
		}
	}
	if msg.UUID != "id-1" {
		t.Errorf("UUID = %q, want id-1", msg.UUID)
	}
	if got := string(msg.Payload); got != `{"order_id":"o-1","carrier":"DHL"}` {
		t.Errorf("payload = %s", got)
	}
	if got := m.NameFromMessage(msg); got != "orders.order-shipped.v1" {
		t.Errorf("NameFromMessage = %q", got)
	}
	if got := m.Name(&shipped{}); got != "orders.order-shipped.v1" {
		t.Errorf("Name(pointer) = %q", got)
	}
}

func TestMarshalRefusesUnnamedTypes(t *testing.T) {
	_, err := cloudevents.Marshaler{}.Marshal(struct{ A int }{1})
	if err == nil {
		t.Fatal("marshal of a type without Name and Key succeeded")
	}
}

func TestUnmarshal(t *testing.T) {
	tests := []struct {
		name      string
		payload   string
		malformed bool
	}{
		{"valid", `{"order_id":"o-1","carrier":"UPS"}`, false},
		{"truncated", `{"order_id":`, true},
		{"wrong type", `{"order_id":42}`, true},
		{"not an object", `[1,2]`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := message.NewMessage("id", []byte(tt.payload))
			msg.Metadata.Set(cloudevents.Type, "orders.order-shipped.v1")
			var s shipped
			err := cloudevents.Marshaler{}.Unmarshal(msg, &s)
			if got := errors.Is(err, cloudevents.ErrMalformedPayload); got != tt.malformed {
				t.Fatalf("Unmarshal error %v: malformed = %v, want %v", err, got, tt.malformed)
			}
			if !tt.malformed && s.Carrier != "UPS" {
				t.Errorf("decoded %+v", s)
			}
		})
	}
}

func TestKeyInternsKnownNames(t *testing.T) {
	names := []string{cloudevents.ID, cloudevents.Type, cloudevents.Source, cloudevents.SpecVersion, cloudevents.Time,
		cloudevents.Subject, cloudevents.ContentType, cloudevents.PartitionKey, cloudevents.CausationID,
		cloudevents.CorrelationID, cloudevents.RequestHash, cloudevents.OutboxID, cloudevents.Sequence,
		cloudevents.Traceparent, cloudevents.Tracestate, cloudevents.KafkaTopic, cloudevents.KafkaPartition,
		cloudevents.KafkaOffset, "ce_authid", "x-custom"}
	for _, name := range names {
		b := []byte(name)
		got := cloudevents.Key(b)
		if got != name {
			t.Errorf("Key(%q) = %q", name, got)
		}
		b[0] = '#' // the key must not share the header's bytes
		if got != name {
			t.Errorf("Key(%q) changed with the header's bytes: %q", name, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = cloudevents.Key([]byte(cloudevents.Traceparent)) }); n != 0 {
		t.Errorf("Key of a known name allocates %.0f times, want 0", n)
	}
}
