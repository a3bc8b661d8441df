// Package schedulertest is the shared test suite of platform/scheduler: a
// cluster of scheduler instances on one leader lock and one store, run
// against every pair of implementations (leader.Local with the SQLite
// store, Consul's LeaderLock with the Consul store), and the fake clock
// the suite moves by hand.
package schedulertest

import (
	"sort"
	"sync"
	"time"
)

// Clock is a scheduler.Clock that moves only when told to. It is safe for
// concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	c  chan time.Time
}

// NewClock returns a clock showing start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now implements scheduler.Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After implements scheduler.Clock: the channel receives once the clock
// was moved d past the time of the call (at once when d <= 0).
func (c *Clock) After(d time.Duration) (<-chan time.Time, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch, func() {}
	}
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), c: ch})
	return ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, o := range c.waiters {
			if o.c == ch {
				c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
				return
			}
		}
	}
}

// Advance moves the clock d forward and wakes the waits that are due.
func (c *Clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// Set moves the clock to t (never backwards) and wakes the waits that are
// due, earliest first.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Before(c.now) {
		return
	}
	c.now = t
	sort.SliceStable(c.waiters, func(i, j int) bool { return c.waiters[i].at.Before(c.waiters[j].at) })
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(t) {
			w.c <- t
			continue
		}
		keep = append(keep, w)
	}
	c.waiters = keep
}
