package poison

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
)

// Status is where an entry stands.
type Status string

const (
	// StatusPoisoned: the message failed for good; it heads its sequence.
	StatusPoisoned Status = "poisoned"
	// StatusParked: the message waits behind an earlier open entry of its
	// key and was never handled.
	StatusParked Status = "parked"
	// StatusRequeued: the message was republished and is on its way back to
	// its handler.
	StatusRequeued Status = "requeued"
	// StatusHandled: the message was requeued and handled.
	StatusHandled Status = "handled"
	// StatusDropped: someone decided it is not to be handled, with a reason.
	StatusDropped Status = "dropped"
)

// Statuses lists every status, open ones first.
func Statuses() []Status {
	return []Status{StatusPoisoned, StatusParked, StatusRequeued, StatusHandled, StatusDropped}
}

// Open reports whether an entry in this status still blocks its key.
func (s Status) Open() bool {
	return s == StatusPoisoned || s == StatusParked || s == StatusRequeued
}

func (s Status) valid() bool {
	for _, v := range Statuses() {
		if s == v {
			return true
		}
	}
	return false
}

// Requeue modes of an entry.
const (
	// ModeOne: the entry alone was requeued.
	ModeOne = "one"
	// ModeSequence: once handled, the entry requeues the next of its sequence.
	ModeSequence = "sequence"
)

// Entry is one message a handler could not process, or parked behind one.
type Entry struct {
	ID        int64  `json:"id"`
	MessageID string `json:"message_id"`
	Handler   string `json:"handler"`
	// Topic, Partition and Offset say where the message was consumed from
	// when it first failed or was parked (Partition and Offset are -1 when
	// unknown).
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// Key is the partition key (ce_partitionkey); empty for keyless messages.
	Key string `json:"key"`
	// Type is the message's ce_type.
	Type   string `json:"type"`
	Status Status `json:"status"`
	// Cause is permanent, retries-exhausted or panic; empty for a parked entry.
	Cause string `json:"cause,omitempty"`
	// Reason is the last failure, or why the entry was parked.
	Reason string `json:"reason"`
	// Attempts counts every call of the handler with the message, over
	// every delivery.
	Attempts     int       `json:"attempts"`
	FirstErrorAt time.Time `json:"first_error_at,omitzero"`
	LastErrorAt  time.Time `json:"last_error_at,omitzero"`
	// BlockedBy is, for an entry parked on arrival, the head it was parked behind.
	BlockedBy int64 `json:"blocked_by,omitempty"`
	// Requeues counts the requeues; the last one's generation.
	Requeues    int       `json:"requeues"`
	RequeueMode string    `json:"requeue_mode,omitempty"`
	RequeuedAt  time.Time `json:"requeued_at,omitzero"`
	ResolvedAt  time.Time `json:"resolved_at,omitzero"`
	DropReason  string    `json:"drop_reason,omitempty"`
	// Published reports whether the poisoning was published to the poison topic.
	Published bool      `json:"published"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`

	// Metadata, Payload and History are filled by Store.Get only.
	Metadata map[string]string `json:"metadata,omitempty"`
	Payload  []byte            `json:"-"`
	History  []Event           `json:"history,omitempty"`
}

// Event is one step in an entry's history.
type Event struct {
	At     time.Time `json:"at"`
	Event  string    `json:"event"`
	Detail string    `json:"detail,omitempty"`
}

// entryJSON adds the payload to Entry's JSON form: as JSON when it is JSON,
// else base64.
type entryJSON struct {
	entryAlias
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 string          `json:"payload_base64,omitempty"`
}

type entryAlias Entry

// MarshalJSON writes the entry with its payload inline when it is JSON, and
// as payload_base64 otherwise.
func (e Entry) MarshalJSON() ([]byte, error) {
	v := entryJSON{entryAlias: entryAlias(e)}
	switch {
	case len(e.Payload) == 0:
	case json.Valid(e.Payload):
		v.Payload = e.Payload
	default:
		v.PayloadBase64 = base64.StdEncoding.EncodeToString(e.Payload)
	}
	return json.Marshal(v)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var v entryJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*e = Entry(v.entryAlias)
	switch {
	case len(v.Payload) > 0:
		e.Payload = []byte(v.Payload)
	case v.PayloadBase64 != "":
		p, err := base64.StdEncoding.DecodeString(v.PayloadBase64)
		if err != nil {
			return fmt.Errorf("decode payload_base64 of entry %d: %w", e.ID, err)
		}
		e.Payload = p
	}
	return nil
}
