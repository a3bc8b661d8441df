package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/cloudevents"
)

// Clock tells the time and waits for it. The scheduler reads the schedule,
// lateness, timeouts and backoffs from it; tests pass one they move by
// hand. Implementations are safe for concurrent use.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed, and a
	// function that stops the wait.
	After(d time.Duration) (<-chan time.Time, func())
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() time.Time { return time.Now() }

// After implements Clock.
func (SystemClock) After(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

// Command is what one attempt of a run publishes.
type Command struct {
	// ID is the command's id (ce_id): CommandID for scheduled runs.
	ID string
	// Type is the command's wire type (ce_type); Payload its JSON.
	Type    string
	Payload json.RawMessage
	// Job and RunID name the run; RunID is the correlation id of every
	// attempt.
	Job, RunID string
	// Time is when the attempt was first published (ce_time): the same
	// when a new leader publishes it again.
	Time time.Time
}

// Sender publishes a run's command. Implementations are safe for
// concurrent use.
type Sender interface {
	Send(ctx context.Context, c Command) error
}

// OutcomeStatus is what became of a command.
type OutcomeStatus string

// Outcome statuses.
const (
	OutcomePending   OutcomeStatus = "pending"
	OutcomeSucceeded OutcomeStatus = "succeeded"
	OutcomeRejected  OutcomeStatus = "rejected"
)

// Outcome is what the command log knows of a command.
type Outcome struct {
	Status OutcomeStatus
	// Code and Reason explain a rejection.
	Code, Reason string
}

// Outcomes reads commands' outcomes from the command log. A command the
// log does not know yet is pending (nil error). Implementations are safe
// for concurrent use.
type Outcomes interface {
	Outcome(ctx context.Context, commandID string) (Outcome, error)
}

// Record kinds.
const (
	RecordFired    = "fired"
	RecordFinished = "finished"
	RecordSkipped  = "skipped"
)

// Triggers: what started a run.
const (
	TriggerSchedule = "schedule" // a scheduled time, on time
	TriggerMisfire  = "misfire"  // a scheduled time found late (misfire policy)
	TriggerQueue    = "queue"    // a scheduled time that waited for the previous run
	TriggerManual   = "manual"   // by hand: millrace jobs trigger, POST /admin/jobs/{name}/trigger
)

// Run outcomes, as Record.Outcome and the history say them.
const (
	RunRunning   = "running"
	RunSucceeded = "succeeded"
	RunRejected  = "rejected"  // the last attempt's command was rejected
	RunTimedOut  = "timed_out" // the last attempt had no outcome within the timeout
	RunFailed    = "failed"    // the command could not be rendered or published
	RunSkipped   = "skipped"
)

// Record is one thing that happened to a run: it fired (an attempt was
// published), finished, or was skipped. Records of one run carry its
// RunID; a record may be handed over twice (a new leader repeats what the
// old one may have recorded), with the same content.
type Record struct {
	Kind        string
	Job, RunID  string
	Trigger     string
	ScheduledAt time.Time
	// At is when it happened: the attempt was published, the run
	// finished, the times were skipped.
	At time.Time
	// FiredAt is when the run's first attempt was published.
	FiredAt time.Time
	// Attempt, CommandID and CommandType are the attempt (fired) or the
	// last attempt (finished).
	Attempt     int
	CommandID   string
	CommandType string
	// Outcome, Code and Reason say how a run finished, or why times
	// were skipped (Outcome is RunSkipped).
	Outcome, Code, Reason string
	// LastScheduledAt and Missed describe skipped times: from
	// ScheduledAt to LastScheduledAt, Missed of them.
	LastScheduledAt time.Time
	Missed          int
	// Instance names the scheduler instance that recorded it.
	Instance string
}

// Journal receives the records of runs (millrace publishes them for the
// run history). A failure is logged and counted; the run goes on.
// Implementations are safe for concurrent use.
type Journal interface {
	Record(ctx context.Context, r Record) error
}

// Router names the topic a command type is published to, and the
// partition key (the aggregate id) of a payload of it.
type Router interface {
	Route(commandType string, payload []byte) (topic, key string, err error)
}

// CloudEventsSender publishes commands as CloudEvents in binary mode
// through a Watermill publisher.
type CloudEventsSender struct {
	pub    message.Publisher
	router Router
	source string
}

// NewCloudEventsSender returns a Sender publishing through pub to the
// topics router names, with ce_source source (default
// "/millrace/scheduler"). It does not own pub.
func NewCloudEventsSender(pub message.Publisher, router Router, source string) *CloudEventsSender {
	if source == "" {
		source = "/millrace/scheduler"
	}
	return &CloudEventsSender{pub: pub, router: router, source: source}
}

// Send implements Sender: ce_id is the command's id, ce_subject and the
// record key the key the router names, ce_correlationid the run's id.
func (s *CloudEventsSender) Send(ctx context.Context, c Command) error {
	topic, key, err := s.router.Route(c.Type, c.Payload)
	if err != nil {
		return fmt.Errorf("route %s of job %s: %w", c.Type, c.Job, err)
	}
	msg := message.NewMessage(c.ID, message.Payload(c.Payload))
	msg.Metadata.Set(cloudevents.Type, c.Type)
	msg.Metadata.Set(cloudevents.Source, s.source)
	msg.Metadata.Set(cloudevents.SpecVersion, cloudevents.Version)
	msg.Metadata.Set(cloudevents.Time, c.Time.UTC().Format(time.RFC3339Nano))
	msg.Metadata.Set(cloudevents.ContentType, cloudevents.JSON)
	msg.Metadata.Set(cloudevents.CorrelationID, c.RunID)
	if key != "" {
		msg.Metadata.Set(cloudevents.Subject, key)
		msg.Metadata.Set(cloudevents.PartitionKey, key)
	}
	msg.SetContext(ctx)
	if err := s.pub.Publish(topic, msg); err != nil {
		return fmt.Errorf("publish %s %s of job %s to %s: %w", c.Type, c.ID, c.Job, topic, err)
	}
	return nil
}
