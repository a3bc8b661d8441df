package projections

import "sync"

// Signal wakes the goroutines waiting for a change: Wait hands out a channel
// that the next Broadcast closes. A waiter takes the channel before it looks
// at the state it waits for, so that a change between the look and the wait
// is not missed. The zero value is ready; it is safe for concurrent use.
//
// It only speeds waiting up within one process: waiters also poll, for
// changes other processes commit to the same file.
type Signal struct {
	mu  sync.Mutex
	ch  chan struct{}
	gen uint64 // Broadcasts so far
}

// Wait returns a channel closed at the next Broadcast.
func (s *Signal) Wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Generation counts the broadcasts so far: a value read before looking at
// the state is still current while nothing was broadcast since.
func (s *Signal) Generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// Broadcast wakes every goroutine waiting on a channel from Wait.
func (s *Signal) Broadcast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// CommitObserver is implemented by projections that want to know when the
// runner committed events they applied (projections/commands wakes the
// requests waiting for a command's outcome). Committed is called after
// every commit (and at times after a failed one: observers look, they do
// not trust the call), outside the transaction; it must not block.
type CommitObserver interface {
	Committed()
}
