package gateway

import (
	"container/list"
	"sync"
	"time"

	"github.com/millrace/millrace/projections/commands"
)

// Defaults of the record of recently accepted commands (Config).
const (
	DefaultRecentCommands   = 32768
	DefaultRecentCommandTTL = time.Minute
)

// recentCommands remembers the commands this gateway accepted lately, until
// the command log has them: the gateway answers 202 once the broker
// acknowledged a command, and the log learns of it a moment later, from the
// command topic. Meanwhile GET /v1/commands/{id}, a read after the command
// and a retry with the same Idempotency-Key are answered from here.
//
// It is bounded twice: at most max entries, the least recently used one
// dropped first, and none older than ttl, so that it holds only the window
// in which the log may not know a command yet. An entry that fell out is
// not an error: the log knows the command by then, or the client is told
// the command is unknown, as it would have been by another instance. It is
// safe for concurrent use.
type recentCommands struct {
	max int
	ttl time.Duration

	mu    sync.Mutex
	byID  map[string]*list.Element // of *recentCommand
	order *list.List               // front: least recently used
}

// recentCommand is one entry: what the log will record of the command.
type recentCommand struct {
	id, typ, aggregateID, requestHash string
	acceptedAt                        time.Time
	expires                           time.Time
}

func newRecentCommands(max int, ttl time.Duration) *recentCommands {
	return &recentCommands{max: max, ttl: ttl, byID: make(map[string]*list.Element), order: list.New()}
}

// outcome is the entry as the command log reports a pending command.
func (c *recentCommand) outcome() commands.Outcome {
	return commands.Outcome{
		CommandID: c.id, Type: c.typ, AggregateID: c.aggregateID, Status: commands.StatusPending,
		AcceptedAt: c.acceptedAt, RequestHash: c.requestHash,
	}
}

// add records a pending command (o.Status is ignored) and returns it with
// true; for an id recorded already (and not expired) it keeps the first
// record and returns that one with false.
func (r *recentCommands) add(o commands.Outcome, now time.Time) (commands.Outcome, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.byID[o.CommandID]; ok {
		c := e.Value.(*recentCommand)
		if now.Before(c.expires) {
			r.order.MoveToBack(e)
			return c.outcome(), false
		}
		r.remove(e)
	}
	c := &recentCommand{
		id: o.CommandID, typ: o.Type, aggregateID: o.AggregateID, requestHash: o.RequestHash,
		acceptedAt: o.AcceptedAt, expires: now.Add(r.ttl),
	}
	r.byID[c.id] = r.order.PushBack(c)
	for r.order.Len() > r.max {
		r.remove(r.order.Front())
	}
	// Expired entries at the front go at once; those further back when met.
	for e := r.order.Front(); e != nil && !now.Before(e.Value.(*recentCommand).expires); e = r.order.Front() {
		r.remove(e)
	}
	return c.outcome(), true
}

// get returns the pending record of a command, if there is one that has
// not expired.
func (r *recentCommands) get(id string, now time.Time) (commands.Outcome, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.byID[id]
	if !ok {
		return commands.Outcome{}, false
	}
	c := e.Value.(*recentCommand)
	if !now.Before(c.expires) {
		r.remove(e)
		return commands.Outcome{}, false
	}
	r.order.MoveToBack(e)
	return c.outcome(), true
}

func (r *recentCommands) remove(e *list.Element) {
	delete(r.byID, e.Value.(*recentCommand).id)
	r.order.Remove(e)
}
