package cloudevents

import "context"

// Replays. A consumer reads a message again, on purpose, when a projection is
// rebuilt from the log or a handler's consumer group is reset to an earlier
// time or offset. State folds (read models, aggregate state keyed by message
// id) must apply such a message as usual; side effects that reach outside
// (a notification sent, an HTTP call) must not happen a second time.
//
// The consumer that replays marks the context it hands to the handler with
// WithReplay, and a handler asks IsReplaying. The mark lives in the context,
// never in the message metadata, so it cannot travel on to the poison queue
// or to another topic with a message that is published again.
//
// It lives here, with the CloudEvents attribute and transport metadata names,
// because it is part of the same contract between the consumers (platform and
// cmd) and the code they call (handlers, reactors, projections), and because
// this is the one package all of them may import (docs/adr/0002).

// replayKey is the context key of the replay mark.
type replayKey struct{}

// WithReplay returns a copy of ctx marked as the context of a replayed
// message.
func WithReplay(ctx context.Context) context.Context {
	return context.WithValue(ctx, replayKey{}, true)
}

// IsReplaying reports whether ctx was marked by WithReplay: the message being
// handled was handled before (or belongs to history being rebuilt), and side
// effects beyond the handler's own state must not be repeated.
func IsReplaying(ctx context.Context) bool {
	v, _ := ctx.Value(replayKey{}).(bool)
	return v
}
