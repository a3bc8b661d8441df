package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/commands"
)

// Read-your-writes. Read models follow the log a little behind: a client
// that placed an order and reads it at once may not find it yet. A query may
// name the command it must see the effects of, with the query parameter
// `after` or the header `X-Millrace-After` (the command id from the 202):
//
//	GET /v1/orders/{id}?after=<command id>
//
// The gateway then waits, up to a bound, until the command has an outcome
// and the read model that answers the query has handled every event the
// command caused (their positions are in the outcome), and answers as usual.
// When the bound passes first it answers 503 with a not-yet-visible problem
// and Retry-After; the client asks again. A rejected command caused nothing
// to wait for. The bound is `Prefer: wait=N` seconds, at most Config.MaxWait,
// and DefaultReadAfterWait without one.

// AfterHeader names the command a query must read after; the query
// parameter "after" does the same.
const AfterHeader = "X-Millrace-After"

// DefaultReadAfterWait bounds how long a query with `after` waits when the
// request does not say (Prefer: wait=N).
const DefaultReadAfterWait = 5 * time.Second

// ProblemNotYetVisible is the problem type of a query whose read model did
// not reach the command it was asked to read after in time.
const ProblemNotYetVisible = problemBase + "not-yet-visible"

// readAfterPoll is how often a waiting query asks whether the read model got there.
const readAfterPoll = 10 * time.Millisecond

// Progress tells how far a read model got; *projections.Manager implements
// it. Reached reports whether projection has handled every position given on
// the topics it consumes. It must be safe for concurrent use.
type Progress interface {
	Reached(ctx context.Context, projection string, positions []projections.Position) (bool, error)
}

// ProgressNotifier is implemented by a Progress that can say when to ask
// again (*projections.Manager): Advanced returns a channel closed at the
// next commit of projection. A waiting query then asks Reached once per
// commit instead of on a timer; it still asks every readAfterPoll, for
// commits it is not told of.
type ProgressNotifier interface {
	Advanced(projection string) <-chan struct{}
}

// notVisibleError: the read model did not reach the command in time.
type notVisibleError struct {
	projection, commandID string
	waited                time.Duration
	pending               bool // the command itself had no outcome yet
}

func (e *notVisibleError) Error() string {
	return fmt.Sprintf("read model %s did not reach command %s within %s", e.projection, e.commandID, e.waited)
}

func (e *notVisibleError) problem() problem {
	why := fmt.Sprintf("the %s read model has not yet handled the events of command %s", e.projection, e.commandID)
	if e.pending {
		why = fmt.Sprintf("command %s has not been handled yet", e.commandID)
	}
	return problem{
		Type: ProblemNotYetVisible, Title: "Not yet visible", Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("Waited %s, but %s. Retry in a moment with the same %s; send Prefer: wait=N to wait longer.",
			e.waited, why, "after"),
		CommandID: e.commandID,
		headers:   http.Header{"Retry-After": {strconv.Itoa(retryAfterSeconds)}},
	}
}

// readAfter waits, when the request names a command to read after, until
// projection has handled the command's events.
func (g *Gateway) readAfter(r *http.Request, projection string) error {
	id, err := afterCommand(r)
	if err != nil || id == "" {
		return err
	}
	if g.deps.Progress == nil {
		return &paramError{name: "after",
			detail: "This gateway cannot wait for read models to catch up. Drop the after parameter and the X-Millrace-After header."}
	}
	wait := DefaultReadAfterWait
	if w, ok := preferredWait(r.Header.Values("Prefer"), g.cfg.MaxWait); ok {
		wait = w
	}
	wait = min(wait, g.cfg.MaxWait)
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()

	o, err := g.lookup(ctx, id) // the log, else this gateway's record (command.go)
	if errors.Is(err, commands.ErrNotFound) && mintedRecently(id, time.Now()) {
		// Accepted a moment ago, by another gateway: the command log
		// learns of it from the command topic. Wait for it like for a
		// command known to be pending.
		o, err = commands.Outcome{CommandID: id, Status: commands.StatusPending}, nil
	}
	if errors.Is(err, commands.ErrNotFound) {
		return &paramError{name: "after",
			detail: fmt.Sprintf("No command has the id %q. Give the command_id of a command this service accepted.", id)}
	}
	if err != nil {
		return fmt.Errorf("read after command %s: %w", id, err)
	}
	if o.Status == commands.StatusPending {
		o, err = g.deps.Commands.Wait(ctx, id)
		switch {
		case errors.Is(err, commands.ErrNotFound):
			// Accepted here, not consumed by the log before the bound.
			o.Status = commands.StatusPending
		case err != nil:
			return fmt.Errorf("read after command %s: %w", id, err)
		}
		if o.Status == commands.StatusPending {
			return &notVisibleError{projection: projection, commandID: id, waited: wait, pending: true}
		}
	}
	if o.Status == commands.StatusRejected || len(o.Positions) == 0 {
		return nil
	}

	notifier, _ := g.deps.Progress.(ProgressNotifier)
	tick := time.NewTicker(readAfterPoll)
	defer tick.Stop()
	for {
		var advanced <-chan struct{} // nil: only the ticker
		if notifier != nil {
			advanced = notifier.Advanced(projection) // before asking: a commit meanwhile is not missed
		}
		reached, err := g.deps.Progress.Reached(ctx, projection, o.Positions)
		switch {
		case err == nil && reached:
			return nil
		case err != nil && ctx.Err() == nil:
			return fmt.Errorf("read after command %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			if r.Context().Err() != nil {
				return fmt.Errorf("read after command %s: %w", id, r.Context().Err())
			}
			return &notVisibleError{projection: projection, commandID: id, waited: wait}
		case <-advanced:
		case <-tick.C:
		}
	}
}

// recentlyMinted is how old a fresh command id may be for read-your-writes
// to wait for a command the log does not know yet: as long as a gateway
// keeps the commands it accepted (recent.go).
const recentlyMinted = DefaultRecentCommandTTL

// mintedRecently reports whether id is a time-ordered command id (UUIDv7,
// see newCommandID) minted within recentlyMinted of now. Ids derived from
// an Idempotency-Key carry no time and are not.
func mintedRecently(id string, now time.Time) bool {
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 {
		return false
	}
	sec, nsec := u.Time().UnixTime()
	age := now.Sub(time.Unix(sec, nsec))
	return age > -recentlyMinted && age < recentlyMinted
}

// afterCommand returns the command id the request names, by query parameter
// or header; "" when it names none.
func afterCommand(r *http.Request) (string, error) {
	params := r.URL.Query()["after"]
	header := r.Header.Values(AfterHeader)
	if len(params) > 1 || len(header) > 1 {
		return "", &paramError{name: "after", detail: "Name one command to read after, once: ?after=<command id> or the header " + AfterHeader + "."}
	}
	var id string
	switch {
	case len(params) == 1 && len(header) == 1 && params[0] != header[0]:
		return "", &paramError{name: "after", detail: "The after parameter and the " + AfterHeader + " header name different commands. Give one of them."}
	case len(params) == 1:
		id = params[0]
	case len(header) == 1:
		id = header[0]
	default:
		return "", nil
	}
	if id == "" {
		return "", &paramError{name: "after", detail: "The command id to read after is empty. Give the command_id of the 202 answer."}
	}
	return id, nil
}
