package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/millrace/millrace/platform/cloudevents"
)

// HistoryTopic is the Kafka topic of the history of configuration changes.
// Declare it with one partition and no retention limit (every record is
// kept: the history is what Consul KV lacks), and without compaction.
const HistoryTopic = "millrace.config"

// ChangeType is the ce_type of a history record.
const ChangeType = "millrace.config.changed.v1"

// changeSource is the ce_source of history records.
const changeSource = "/millrace/config"

// Change is one accepted change of a document: a record of the history.
// Documents in it are redacted: a secret shows as Redacted, and
// SecretsChanged names the secrets whose value changed.
type Change struct {
	// ID identifies the change: every process recording the same change of
	// a shared document (a Consul key) gives it the same ID, so that the
	// history holds it once.
	ID string `json:"id"`
	// Version numbers the changes of one document: 1, 2, 3 … in the order
	// of the history topic. History assigns it; the recorder writes the
	// number it expects.
	Version uint64 `json:"version"`
	// Document is the ID of the document (Writable.ID).
	Document string `json:"document"`
	// Source is the name of the source, as the recording process calls it.
	Source string `json:"source"`
	// Format of Old and New.
	Format Format `json:"format"`
	// Revision is the source's revision of New.
	Revision string `json:"revision,omitempty"`
	// At is when the change was put in force by the recording process.
	At time.Time `json:"at"`
	// Who made the change, when it was made through millrace; empty for a
	// change made directly (a file edited, a key written with consul kv).
	Who string `json:"who,omitempty"`
	// Via says how: "config set gateway.max_in_flight", "rollback to
	// version 3", "found at start" (the document changed while no process
	// recorded), or empty for a direct change.
	Via string `json:"via,omitempty"`
	// Reason is the reason given with the change, if any.
	Reason string `json:"reason,omitempty"`
	// Old and New are the document before and after; OldAbsent and
	// NewAbsent say it did not exist.
	Old       string `json:"old"`
	New       string `json:"new"`
	OldAbsent bool   `json:"old_absent,omitempty"`
	NewAbsent bool   `json:"new_absent,omitempty"`
	// SecretsChanged lists the secrets (by path) whose value changed.
	SecretsChanged []string `json:"secrets_changed,omitempty"`
	// Instance names the process that recorded the change.
	Instance string `json:"instance,omitempty"`
}

// changeNamespace derives change IDs.
var changeNamespace = uuid.MustParse("6f0f3f83-7c1a-4f2b-9d7e-5b1f3d1c9a42")

// changeID is the ID of a change: the same for every process that records
// the same revision of a document after the same one.
func changeID(doc, revision, old, new string, secretsChanged []string) string {
	key := doc + "\x00" + revision + "\x00" + digest([]byte(old)) + "\x00" + digest([]byte(new))
	for _, s := range secretsChanged {
		key += "\x00" + s
	}
	return uuid.NewSHA1(changeNamespace, []byte(key)).String()
}

// ChangeMessage returns c as a CloudEvent message for HistoryTopic, keyed
// by its document.
func ChangeMessage(c Change) (*message.Message, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode configuration change %s: %w", c.ID, err)
	}
	msg := message.NewMessage(c.ID, payload)
	msg.Metadata.Set(cloudevents.Type, ChangeType)
	msg.Metadata.Set(cloudevents.Source, changeSource)
	msg.Metadata.Set(cloudevents.SpecVersion, cloudevents.Version)
	msg.Metadata.Set(cloudevents.Time, c.At.UTC().Format(time.RFC3339Nano))
	msg.Metadata.Set(cloudevents.Subject, c.Document)
	msg.Metadata.Set(cloudevents.PartitionKey, c.Document)
	msg.Metadata.Set(cloudevents.ContentType, cloudevents.JSON)
	return msg, nil
}

// ErrNotAChange is wrapped by the error of ChangeFromMessage for a message
// of another type.
var ErrNotAChange = errors.New("not a configuration change")

// ChangeFromMessage reads a message of HistoryTopic.
func ChangeFromMessage(msg *message.Message) (Change, error) {
	if t := msg.Metadata.Get(cloudevents.Type); t != ChangeType {
		return Change{}, fmt.Errorf("message %s of type %q: %w", msg.UUID, t, ErrNotAChange)
	}
	var c Change
	if err := json.Unmarshal(msg.Payload, &c); err != nil {
		return Change{}, fmt.Errorf("decode configuration change %s: %w", msg.UUID, err)
	}
	if c.ID == "" {
		c.ID = msg.UUID
	}
	if c.Document == "" {
		return Change{}, fmt.Errorf("decode configuration change %s: no document named", msg.UUID)
	}
	return c, nil
}

// History is the history of configuration changes, kept in memory: a
// projection of HistoryTopic, read from its beginning. It numbers the
// changes of each document in the order it is given them, skipping a
// change it holds already (same ID) and one that changes nothing. Every
// process that reads the topic from the beginning holds the same history,
// with the same versions.
//
// History is safe for concurrent use.
type History struct {
	mu       sync.Mutex
	byDoc    map[string][]Change
	ids      map[string]bool
	changed  chan struct{}
	caughtUp chan struct{}
	marked   bool
}

// NewHistory returns an empty history.
func NewHistory() *History {
	return &History{byDoc: map[string][]Change{}, ids: map[string]bool{}, changed: make(chan struct{}), caughtUp: make(chan struct{})}
}

// Add puts c in the history and returns it numbered, with true; or, for a
// change held already or one that changes nothing, the change held, with
// false.
func (h *History) Add(c Change) (Change, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.byDoc[c.Document]
	if h.ids[c.ID] {
		for _, held := range list {
			if held.ID == c.ID {
				return held, false
			}
		}
		return c, false
	}
	h.ids[c.ID] = true
	if n := len(list); n > 0 {
		last := list[n-1]
		if last.New == c.New && last.NewAbsent == c.NewAbsent && len(c.SecretsChanged) == 0 {
			return last, false
		}
	}
	c.Version = uint64(len(list)) + 1
	h.byDoc[c.Document] = append(list, c)
	close(h.changed)
	h.changed = make(chan struct{})
	return c, true
}

// List returns the changes of document, oldest first.
func (h *History) List(document string) []Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.byDoc[document])
}

// Documents lists the documents with a history.
func (h *History) Documents() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return sortedKeys(h.byDoc)
}

// Get returns version v of document.
func (h *History) Get(document string, v uint64) (Change, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.byDoc[document]
	if v < 1 || v > uint64(len(list)) {
		return Change{}, false
	}
	return list[v-1], true
}

// Latest returns the latest change of document.
func (h *History) Latest(document string) (Change, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.byDoc[document]
	if len(list) == 0 {
		return Change{}, false
	}
	return list[len(list)-1], true
}

// MarkCaughtUp says the history holds every change recorded before this
// process started: the reader of the topic reached its end. The recorder
// waits for it before comparing the documents in force with the history.
func (h *History) MarkCaughtUp() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.marked {
		h.marked = true
		close(h.caughtUp)
	}
}

// CaughtUp is closed once MarkCaughtUp was called.
func (h *History) CaughtUp() <-chan struct{} { return h.caughtUp }

// Wait waits until cond holds for the history, checking after each
// change added, until ctx ends.
func (h *History) Wait(ctx context.Context, cond func(h *History) bool) error {
	for {
		h.mu.Lock()
		ch := h.changed
		h.mu.Unlock()
		if cond(h) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
