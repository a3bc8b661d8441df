// Package leader is millrace's port for leadership: work that must run on
// one process of a cluster at a time (the scheduler's firing, a relay that
// must not run twice) runs under a lock, and losing the lock cancels the
// work's context.
//
// [Runner] is the port. [Local] implements it inside one process, for
// `millrace dev` and tests; platform/consul implements it with Consul
// sessions for many machines. Both pass the suite in leadertest.
//
// Leadership is never certain: a leader learns that it lost its lock some
// time after the fact (for Consul, at the latest one session TTL later).
// Work that must never overlap with a successor's must therefore also be
// idempotent or fenced; millrace's effects are idempotent by design.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// ErrLost is the cause (context.Cause) of a leader's context cancelled
// because leadership was lost rather than given up.
var ErrLost = errors.New("leadership lost")

// Runner runs work under a leader lock. Implementations are safe for
// concurrent use, though one Runner is meant to run one Run at a time.
type Runner interface {
	// Run campaigns for the lock until it holds it, then calls fn with a
	// context that is cancelled when ctx is done or leadership is lost
	// (context.Cause is then ErrLost). When fn returns:
	//   - after a loss, Run campaigns again and calls fn again when it
	//     leads again;
	//   - after ctx is done, Run releases the lock and returns nil;
	//   - otherwise (fn finished or failed while leading) Run releases the
	//     lock and returns fn's error.
	// Run returns nil when ctx is done while it campaigns, and an error
	// without campaigning further only when retrying cannot help (Consul
	// refused for lack of permission).
	Run(ctx context.Context, fn func(leaderCtx context.Context) error) error
}

// Local is a set of leader locks inside one process, one per key: every
// Runner from Lock(key) competes with the others of the same key. It is
// safe for concurrent use and owns no goroutines.
type Local struct {
	mu    sync.Mutex
	locks map[string]*localLock
	log   *slog.Logger
}

type localLock struct {
	held    bool
	term    uint64
	revoke  context.CancelCauseFunc
	changed chan struct{} // closed and replaced when the lock is released
}

// NewLocal returns a set of in-process locks. logger receives a record per
// term; nil discards.
func NewLocal(logger *slog.Logger) *Local {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Local{locks: map[string]*localLock{}, log: logger}
}

// Lock returns a candidate for the lock named key.
func (l *Local) Lock(key string) *LocalLock { return &LocalLock{set: l, key: key} }

// Revoke ends the current term of key, as an expired session would: the
// leader's context is cancelled with ErrLost, and every candidate,
// the deposed leader included, campaigns again. It reports whether key had
// a leader.
func (l *Local) Revoke(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lk := l.locks[key]
	if lk == nil || !lk.held {
		return false
	}
	lk.revoke(fmt.Errorf("lock %s revoked: %w", key, ErrLost))
	l.releaseLocked(lk)
	return true
}

func (l *Local) lockLocked(key string) *localLock {
	lk := l.locks[key]
	if lk == nil {
		lk = &localLock{changed: make(chan struct{})}
		l.locks[key] = lk
	}
	return lk
}

func (l *Local) releaseLocked(lk *localLock) {
	if lk.revoke != nil {
		lk.revoke(context.Canceled) // a no-op after a Revoke, which set ErrLost
	}
	lk.held = false
	lk.revoke = nil
	close(lk.changed)
	lk.changed = make(chan struct{})
}

// LocalLock is one candidate for an in-process lock. It implements Runner.
type LocalLock struct {
	set *Local
	key string
}

// Run implements Runner.
func (c *LocalLock) Run(ctx context.Context, fn func(leaderCtx context.Context) error) error {
	for {
		leaderCtx, term, ok := c.acquire(ctx)
		if !ok {
			return nil
		}
		c.set.log.Info("leading", "lock", c.key, "term", term)
		err := fn(leaderCtx)
		lost := errors.Is(context.Cause(leaderCtx), ErrLost)

		c.set.mu.Lock()
		if lk := c.set.locks[c.key]; lk.held && lk.term == term {
			c.set.releaseLocked(lk)
		}
		c.set.mu.Unlock()

		switch {
		case lost && ctx.Err() == nil:
			c.set.log.Warn("leadership lost; campaigning again", "lock", c.key, "term", term)
			continue
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("leader work under lock %s: %w", c.key, err)
		default:
			return nil
		}
	}
}

// acquire waits until the lock is free and takes it, or until ctx is done.
func (c *LocalLock) acquire(ctx context.Context) (context.Context, uint64, bool) {
	for {
		c.set.mu.Lock()
		lk := c.set.lockLocked(c.key)
		if !lk.held {
			leaderCtx, revoke := context.WithCancelCause(ctx)
			lk.held, lk.revoke = true, revoke
			lk.term++
			term := lk.term
			c.set.mu.Unlock()
			return leaderCtx, term, true
		}
		changed := lk.changed
		c.set.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, 0, false
		}
	}
}

var _ Runner = (*LocalLock)(nil)
