package events

import "time"

// Message is implemented by every command and event.
type Message interface {
	// Name is the stable wire name, e.g. "orders.order-placed.v1".
	Name() string
	// Key is the aggregate id: the Kafka record key and CloudEvents subject.
	Key() string
}

// Kind tells commands (intent, may be rejected) from events (facts).
type Kind string

const (
	KindCommand Kind = "command"
	KindEvent   Kind = "event"
)

// Topics. Command topics carry intent keyed by aggregate id; event topics keep
// every event forever so projections can be rebuilt from them.
const (
	TopicUserCommands  = "users.commands"
	TopicUserEvents    = "users.events"
	TopicOrderCommands = "orders.commands"
	TopicOrderEvents   = "orders.events"
)

// Source is the CloudEvents source of messages emitted by a bounded context.
const (
	SourceGateway = "/millrace/gateway"
	SourceUsers   = "/millrace/users"
	SourceOrders  = "/millrace/orders"
)

// Type describes one message type: its wire name, kind, topic and a
// constructor for decoding.
type Type struct {
	Name  string
	Kind  Kind
	Topic string
	// New returns a pointer to a zero value of the type, ready for json.Unmarshal.
	New func() Message
}

// Types returns every command and event type millrace knows, commands first.
// The slice is new on each call; callers may keep or change it.
func Types() []Type {
	return []Type{
		{RegisterUser{}.Name(), KindCommand, TopicUserCommands, func() Message { return &RegisterUser{} }},
		{PlaceOrder{}.Name(), KindCommand, TopicOrderCommands, func() Message { return &PlaceOrder{} }},
		{PayOrder{}.Name(), KindCommand, TopicOrderCommands, func() Message { return &PayOrder{} }},
		{CancelOrder{}.Name(), KindCommand, TopicOrderCommands, func() Message { return &CancelOrder{} }},
		{ShipOrder{}.Name(), KindCommand, TopicOrderCommands, func() Message { return &ShipOrder{} }},
		// Sent by scheduled jobs (orders_jobs.go).
		{SweepUnpaidOrders{}.Name(), KindCommand, TopicOrderCommands, func() Message { return &SweepUnpaidOrders{} }},
		{ExpireOrder{}.Name(), KindCommand, TopicOrderCommands, func() Message { return &ExpireOrder{} }},
		{CloseSalesDay{}.Name(), KindCommand, TopicOrderCommands, func() Message { return &CloseSalesDay{} }},
		{UserRegistered{}.Name(), KindEvent, TopicUserEvents, func() Message { return &UserRegistered{} }},
		{OrderPlaced{}.Name(), KindEvent, TopicOrderEvents, func() Message { return &OrderPlaced{} }},
		{OrderPlacedV2{}.Name(), KindEvent, TopicOrderEvents, func() Message { return &OrderPlacedV2{} }},
		{OrderPaid{}.Name(), KindEvent, TopicOrderEvents, func() Message { return &OrderPaid{} }},
		{OrderCancelled{}.Name(), KindEvent, TopicOrderEvents, func() Message { return &OrderCancelled{} }},
		{OrderShipped{}.Name(), KindEvent, TopicOrderEvents, func() Message { return &OrderShipped{} }},
		{UnpaidOrdersSwept{}.Name(), KindEvent, TopicOrderEvents, func() Message { return &UnpaidOrdersSwept{} }},
		{SalesDayClosed{}.Name(), KindEvent, TopicOrderEvents, func() Message { return &SalesDayClosed{} }},
		// The run history of scheduled jobs (jobs.go).
		{JobFired{}.Name(), KindEvent, TopicJobRuns, func() Message { return &JobFired{} }},
		{JobFinished{}.Name(), KindEvent, TopicJobRuns, func() Message { return &JobFinished{} }},
		{JobSkipped{}.Name(), KindEvent, TopicJobRuns, func() Message { return &JobSkipped{} }},
		// CommandRejected travels on the events topic of the context that
		// rejected the command; Topic here names the orders one, and
		// RejectionTopic picks the right one.
		{CommandRejected{}.Name(), KindEvent, TopicOrderEvents, func() Message { return &CommandRejected{} }},
	}
}

// Lookup finds a type by wire name.
func Lookup(name string) (Type, bool) {
	for _, t := range Types() {
		if t.Name == name {
			return t, true
		}
	}
	return Type{}, false
}

// EventTopicFor returns the events topic of the context that owns a command
// topic: where its events and rejections are written.
func EventTopicFor(commandTopic string) string {
	switch commandTopic {
	case TopicUserCommands:
		return TopicUserEvents
	default:
		return TopicOrderEvents
	}
}

// CommandRejected is the outcome of a command that the rules refused. Every
// command ends in events or exactly one CommandRejected.
type CommandRejected struct {
	CommandID   string    `json:"command_id"`
	CommandType string    `json:"command_type"`
	AggregateID string    `json:"aggregate_id"`
	Code        string    `json:"code"`
	Reason      string    `json:"reason"`
	RejectedAt  time.Time `json:"rejected_at"`
}

func (CommandRejected) Name() string  { return "millrace.command-rejected.v1" }
func (e CommandRejected) Key() string { return e.AggregateID }

// Topic declares a topic and how long it keeps messages. Partition counts
// are a deployment choice and come from configuration.
type Topic struct {
	Name string
	// Retention is how long messages are kept; 0 keeps them forever, which
	// every event topic does so that projections can be rebuilt from it.
	Retention time.Duration
}

// Topics returns every topic millrace's contexts use.
func Topics() []Topic {
	const week = 7 * 24 * time.Hour
	return []Topic{
		{Name: TopicUserCommands, Retention: week},
		{Name: TopicUserEvents},
		{Name: TopicOrderCommands, Retention: week},
		{Name: TopicOrderEvents},
		{Name: TopicJobRuns},
	}
}
