package projections_test

import (
	"sync"
	"testing"

	"github.com/millrace/millrace/projections"
)

func TestSignal(t *testing.T) {
	var s projections.Signal
	s.Broadcast() // nobody waits: nothing to wake, and no panic
	first := s.Wait()
	if s.Wait() != first {
		t.Fatal("two waiters before a broadcast got different channels")
	}
	select {
	case <-first:
		t.Fatal("closed before the broadcast")
	default:
	}
	var woke sync.WaitGroup
	for range 3 {
		woke.Go(func() { <-first })
	}
	s.Broadcast()
	woke.Wait() // every waiter woke
	next := s.Wait()
	select {
	case <-next:
		t.Fatal("a channel taken after the broadcast is already closed")
	default:
	}
}
