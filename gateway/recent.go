package gateway

import (
	"math"
	"sync"
	"time"

	"github.com/google/uuid"

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
//
// Its layout is for the garbage collector: tens of thousands of entries are
// most of a gateway's live heap, and the collector scans every pointer of
// it on every cycle. The entries hold no pointer (ids as UUIDs, the other
// strings in arrays, times as integers), live in one slice, linked by
// index, and are found through a map without pointers: the collector has
// nothing to scan in them. Command ids are UUIDs in canonical form, as the
// gateway makes them (newCommandID); an id in any other form is never
// recorded, so never found.
type recentCommands struct {
	max   int
	ttl   time.Duration
	epoch time.Time // expiry times count from here, on the monotonic clock

	mu         sync.Mutex
	index      map[uuid.UUID]int32 // command id → slot
	slots      []recentSlot        // at most max
	head, tail int32               // least and most recently used slot; -1: none
	free       int32               // a slot to reuse, chained through next; -1: none
	types      []string            // command types; recentSlot.typ indexes it
	typeIndex  map[string]uint16
	// long holds the strings too long for a slot's arrays, by slot: none
	// for the commands the gateway makes (UUIDs, SHA-256 digests).
	long map[int32]longStrings
}

const (
	maxInlineAggregate = 36 // a UUID
	maxInlineHash      = 64 // a SHA-256 digest in hex
	stored             = 0xff
)

// recentSlot is one entry: what the log will record of the command.
type recentSlot struct {
	id           uuid.UUID
	aggregate    [maxInlineAggregate]byte
	hash         [maxInlineHash]byte
	aggregateLen uint8 // stored: in long
	hashLen      uint8 // stored: in long
	typ          uint16
	hasAccepted  bool
	acceptedAt   int64 // Unix nanoseconds, UTC
	expires      int64 // nanoseconds since epoch
	prev, next   int32
}

// longStrings are a slot's strings that do not fit its arrays.
type longStrings struct{ aggregate, hash string }

func newRecentCommands(max int, ttl time.Duration) *recentCommands {
	return &recentCommands{
		max: max, ttl: ttl, epoch: time.Now(),
		index: make(map[uuid.UUID]int32), head: -1, tail: -1, free: -1,
		typeIndex: make(map[string]uint16), long: make(map[int32]longStrings),
	}
}

// canonicalID parses a UUID in canonical form (lower-case hex, hyphens at
// 8, 13, 18 and 23) and nothing else.
func canonicalID(s string) (uuid.UUID, bool) {
	if len(s) != 36 {
		return uuid.UUID{}, false
	}
	for i := range len(s) {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return uuid.UUID{}, false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return uuid.UUID{}, false
			}
		}
	}
	u, err := uuid.Parse(s)
	return u, err == nil
}

// add records a pending command (o.Status is ignored) and returns it with
// true; for an id recorded already (and not expired) it keeps the first
// record and returns that one with false.
func (r *recentCommands) add(o commands.Outcome, now time.Time) (commands.Outcome, bool) {
	pending := commands.Outcome{
		CommandID: o.CommandID, Type: o.Type, AggregateID: o.AggregateID, Status: commands.StatusPending,
		AcceptedAt: o.AcceptedAt, RequestHash: o.RequestHash,
	}
	id, ok := canonicalID(o.CommandID)
	if !ok {
		return pending, true // not recorded: see the type's documentation
	}
	at := now.Sub(r.epoch).Nanoseconds()

	r.mu.Lock()
	defer r.mu.Unlock()
	if i, ok := r.index[id]; ok {
		if at < r.slots[i].expires {
			r.moveToBack(i)
			return r.outcome(i), false
		}
		r.remove(i)
	}
	for len(r.index) >= r.max {
		r.remove(r.head)
	}
	i := r.alloc()
	s := &r.slots[i]
	expires := at + r.ttl.Nanoseconds()
	if expires < at { // a TTL of centuries
		expires = math.MaxInt64
	}
	*s = recentSlot{id: id, typ: r.intern(o.Type), expires: expires, prev: -1, next: -1}
	if !o.AcceptedAt.IsZero() {
		s.hasAccepted, s.acceptedAt = true, o.AcceptedAt.UnixNano()
	}
	var long longStrings
	if len(o.AggregateID) <= maxInlineAggregate {
		s.aggregateLen = uint8(copy(s.aggregate[:], o.AggregateID))
	} else {
		s.aggregateLen, long.aggregate = stored, o.AggregateID
	}
	if len(o.RequestHash) <= maxInlineHash {
		s.hashLen = uint8(copy(s.hash[:], o.RequestHash))
	} else {
		s.hashLen, long.hash = stored, o.RequestHash
	}
	if s.aggregateLen == stored || s.hashLen == stored {
		r.long[i] = long
	}
	r.index[id] = i
	r.pushBack(i)
	// Expired entries at the front go at once; those further back when met.
	for r.head >= 0 && at >= r.slots[r.head].expires {
		r.remove(r.head)
	}
	if !o.AcceptedAt.IsZero() {
		pending.AcceptedAt = time.Unix(0, s.acceptedAt).UTC()
	}
	return pending, true
}

// get returns the pending record of a command, if there is one that has
// not expired.
func (r *recentCommands) get(id string, now time.Time) (commands.Outcome, bool) {
	key, ok := canonicalID(id)
	if !ok {
		return commands.Outcome{}, false
	}
	at := now.Sub(r.epoch).Nanoseconds()
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.index[key]
	if !ok {
		return commands.Outcome{}, false
	}
	if at >= r.slots[i].expires {
		r.remove(i)
		return commands.Outcome{}, false
	}
	r.moveToBack(i)
	return r.outcome(i), true
}

// outcome is slot i as the command log reports a pending command.
func (r *recentCommands) outcome(i int32) commands.Outcome {
	s := &r.slots[i]
	o := commands.Outcome{
		CommandID: s.id.String(), Type: r.types[s.typ], Status: commands.StatusPending,
		AggregateID: string(s.aggregate[:min(s.aggregateLen, maxInlineAggregate)]),
		RequestHash: string(s.hash[:min(s.hashLen, maxInlineHash)]),
	}
	if s.aggregateLen == stored {
		o.AggregateID = r.long[i].aggregate
	}
	if s.hashLen == stored {
		o.RequestHash = r.long[i].hash
	}
	if s.hasAccepted {
		o.AcceptedAt = time.Unix(0, s.acceptedAt).UTC()
	}
	return o
}

// intern returns the index of a command type in r.types.
func (r *recentCommands) intern(typ string) uint16 {
	if i, ok := r.typeIndex[typ]; ok {
		return i
	}
	// The types are the gateway's command routes': a handful.
	i := uint16(len(r.types))
	r.types = append(r.types, typ)
	r.typeIndex[typ] = i
	return i
}

// alloc returns a slot for a new entry, unlinked.
func (r *recentCommands) alloc() int32 {
	if i := r.free; i >= 0 {
		r.free = r.slots[i].next
		return i
	}
	r.slots = append(r.slots, recentSlot{})
	return int32(len(r.slots) - 1)
}

// remove drops the entry in slot i.
func (r *recentCommands) remove(i int32) {
	r.unlink(i)
	delete(r.index, r.slots[i].id)
	if r.slots[i].aggregateLen == stored || r.slots[i].hashLen == stored {
		delete(r.long, i)
	}
	r.slots[i] = recentSlot{prev: -1, next: r.free}
	r.free = i
}

func (r *recentCommands) moveToBack(i int32) {
	if r.tail == i {
		return
	}
	r.unlink(i)
	r.pushBack(i)
}

func (r *recentCommands) pushBack(i int32) {
	r.slots[i].prev, r.slots[i].next = r.tail, -1
	if r.tail >= 0 {
		r.slots[r.tail].next = i
	} else {
		r.head = i
	}
	r.tail = i
}

func (r *recentCommands) unlink(i int32) {
	s := &r.slots[i]
	if s.prev >= 0 {
		r.slots[s.prev].next = s.next
	} else {
		r.head = s.next
	}
	if s.next >= 0 {
		r.slots[s.next].prev = s.prev
	} else {
		r.tail = s.prev
	}
	s.prev, s.next = -1, -1
}
