// Package leadertest is the shared test suite of the leadership port:
// every leader.Runner implementation (the in-process leader.Local, the
// Consul lock of platform/consul) runs the same cases.
package leadertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/leader"
)

// Harness is one implementation under test.
type Harness struct {
	// New returns a new candidate for key. Candidates of one key compete;
	// each case uses keys of its own.
	New func(t *testing.T, key string) leader.Runner
	// Break ends the current term of key from outside the leader, as an
	// expired or destroyed session would.
	Break func(t *testing.T, key string)
	// Timeout bounds every wait for a change. Default 30 s.
	Timeout time.Duration
}

// Run runs the suite. newHarness is called once per case.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	cases := []struct {
		name string
		run  func(t *testing.T, s *suite)
	}{
		{"one leader at a time, each in turn", testOneAtATime},
		{"a leader that stops hands over", testHandover},
		{"a loss cancels the leader's context and the lock is won again", testLoss},
		{"the leader's error is returned and the lock released", testError},
		{"a candidate stops campaigning when its context ends", testStopCampaign},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			if h.Timeout == 0 {
				h.Timeout = 30 * time.Second
			}
			s := &suite{h: h, key: fmt.Sprintf("millrace/test/leader-%d-%d", i, time.Now().UnixNano())}
			c.run(t, s)
		})
	}
}

type suite struct {
	h   Harness
	key string
}

// candidate is one Runner in its own goroutine, reporting what happens.
type candidate struct {
	name    string
	cancel  context.CancelFunc
	led     chan context.Context // the leader context, each time it leads
	stepOut chan error           // what fn returns next time it is told to
	done    chan struct{}        // closed when Run returned
	err     error                // what Run returned, once done is closed
}

// start runs a candidate whose fn reports its leader context on led and
// returns when told on stepOut, or when its context is done.
func (s *suite) start(t *testing.T, name string, active *atomic.Int32, maxActive *atomic.Int32) *candidate {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{
		name:    name,
		cancel:  cancel,
		led:     make(chan context.Context, 8),
		stepOut: make(chan error, 1),
		done:    make(chan struct{}),
	}
	r := s.h.New(t, s.key)
	go func() {
		defer close(c.done)
		c.err = r.Run(ctx, func(leaderCtx context.Context) error {
			if active != nil {
				n := active.Add(1)
				defer active.Add(-1)
				for {
					m := maxActive.Load()
					if n <= m || maxActive.CompareAndSwap(m, n) {
						break
					}
				}
			}
			c.led <- leaderCtx
			select {
			case err := <-c.stepOut:
				return err
			case <-leaderCtx.Done():
				return leaderCtx.Err()
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-c.done:
		case <-time.After(s.h.Timeout):
			t.Errorf("candidate %s: Run did not return after its context ended", name)
		}
	})
	return c
}

// awaitLeader waits until one of cs leads and returns it with its leader
// context.
func (s *suite) awaitLeader(t *testing.T, cs ...*candidate) (*candidate, context.Context) {
	t.Helper()
	cases := make(chan struct {
		c   *candidate
		ctx context.Context
	}, len(cs))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case ctx := <-c.led:
				cases <- struct {
					c   *candidate
					ctx context.Context
				}{c, ctx}
			case <-stop:
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	select {
	case got := <-cases:
		return got.c, got.ctx
	case <-time.After(s.h.Timeout):
		t.Fatalf("no candidate became leader within %s", s.h.Timeout)
		return nil, nil
	}
}

func (s *suite) awaitDone(t *testing.T, c *candidate) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(s.h.Timeout):
		t.Fatalf("candidate %s: Run did not return within %s", c.name, s.h.Timeout)
		return nil
	}
}

func (s *suite) awaitCancelled(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(s.h.Timeout):
		t.Fatalf("%s: the leader's context was not cancelled within %s", what, s.h.Timeout)
	}
}

func testOneAtATime(t *testing.T, s *suite) {
	var active, maxActive atomic.Int32
	cs := []*candidate{
		s.start(t, "a", &active, &maxActive),
		s.start(t, "b", &active, &maxActive),
		s.start(t, "c", &active, &maxActive),
	}
	remaining := cs
	for len(remaining) > 0 {
		c, _ := s.awaitLeader(t, remaining...)
		c.stepOut <- nil // finished its work: Run releases and returns nil
		if err := s.awaitDone(t, c); err != nil {
			t.Fatalf("candidate %s: Run after its work finished = %v, want nil", c.name, err)
		}
		var rest []*candidate
		for _, o := range remaining {
			if o != c {
				rest = append(rest, o)
			}
		}
		remaining = rest
	}
	if m := maxActive.Load(); m != 1 {
		t.Fatalf("at most %d leaders ran at once, want 1", m)
	}
}

func testHandover(t *testing.T, s *suite) {
	a := s.start(t, "a", nil, nil)
	_, leaderCtx := s.awaitLeader(t, a)
	b := s.start(t, "b", nil, nil)

	a.cancel() // the leader's process shuts down
	s.awaitCancelled(t, leaderCtx, "after the leader's context ended")
	if err := s.awaitDone(t, a); err != nil {
		t.Fatalf("leader's Run after its context ended = %v, want nil", err)
	}
	if c, _ := s.awaitLeader(t, b); c != b {
		t.Fatalf("leader after handover is %s, want b", c.name)
	}
}

func testLoss(t *testing.T, s *suite) {
	a := s.start(t, "a", nil, nil)
	_, first := s.awaitLeader(t, a)
	b := s.start(t, "b", nil, nil)

	s.h.Break(t, s.key)
	s.awaitCancelled(t, first, "after the lock was broken")
	if cause := context.Cause(first); !errors.Is(cause, leader.ErrLost) {
		t.Fatalf("cause of the leader's cancelled context = %v, want leader.ErrLost", cause)
	}
	// Someone leads again: the deposed leader campaigns again as well.
	c, second := s.awaitLeader(t, a, b)
	if second.Err() != nil {
		t.Fatalf("new term of %s started with a done context", c.name)
	}
	select {
	case <-a.done:
		t.Fatalf("deposed leader's Run returned %v; it should campaign again", a.err)
	default:
	}
}

func testError(t *testing.T, s *suite) {
	a := s.start(t, "a", nil, nil)
	s.awaitLeader(t, a)
	b := s.start(t, "b", nil, nil)

	boom := errors.New("boom")
	a.stepOut <- boom
	if err := s.awaitDone(t, a); !errors.Is(err, boom) {
		t.Fatalf("Run after the work failed = %v, want it to wrap boom", err)
	}
	if c, _ := s.awaitLeader(t, b); c != b {
		t.Fatalf("leader after the failed one is %s, want b", c.name)
	}
}

func testStopCampaign(t *testing.T, s *suite) {
	a := s.start(t, "a", nil, nil)
	s.awaitLeader(t, a)
	b := s.start(t, "b", nil, nil)
	b.cancel()
	if err := s.awaitDone(t, b); err != nil {
		t.Fatalf("campaigning candidate's Run after its context ended = %v, want nil", err)
	}
	select {
	case <-b.led:
		t.Fatalf("candidate b led although a never stepped down")
	default:
	}
}
