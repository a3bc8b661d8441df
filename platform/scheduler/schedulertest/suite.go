package schedulertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/platform/leader"
	"github.com/millrace/millrace/platform/scheduler"
)

// Harness is one implementation of the scheduler's ports under test.
type Harness struct {
	// NewLeader returns a new candidate for the lock named key. The
	// candidates of one key compete.
	NewLeader func(t *testing.T, key string) leader.Runner
	// Kill ends the current term of key from outside, as the expiry of a
	// dead process's session does.
	Kill func(t *testing.T, key string)
	// NewStore returns the store the instances of one case share.
	NewStore func(t *testing.T) scheduler.Store
	// Timeout bounds every wait. Default 30 s.
	Timeout time.Duration
}

// Run runs the suite. newHarness is called once per case.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	cases := []struct {
		name string
		run  func(t *testing.T, c *cluster)
	}{
		{"fires every scheduled time once with a deterministic id", testFiresOnSchedule},
		{"leader killed just before a firing: the job fires exactly once", testKillBeforeFiring},
		{"leader killed after publishing: the successor publishes the same id", testKillDuringFiring},
		{"misfire fire_once with a stopped cluster", testMisfire(scheduler.MisfireFireOnce)},
		{"misfire fire_all with a stopped cluster", testMisfire(scheduler.MisfireFireAll)},
		{"misfire skip with a stopped cluster", testMisfire(scheduler.MisfireSkip)},
		{"misfire fire_once with a time also due on time fires that one only", testMisfireWithOnTime},
		{"block skip with a slow job", testBlock(scheduler.BlockSkip)},
		{"block queue with a slow job", testBlock(scheduler.BlockQueue)},
		{"block parallel with a slow job", testBlock(scheduler.BlockParallel)},
		{"manual trigger taken by another instance", testManualTrigger},
		{"rejected and timed-out attempts are retried with new ids", testRetry},
		{"disabled jobs do not fire and do not misfire when enabled", testDisable},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if h.Timeout == 0 {
				h.Timeout = 30 * time.Second
			}
			c := newCluster(t, h, fmt.Sprintf("millrace/test/scheduler-%d-%d", i, time.Now().UnixNano()))
			tc.run(t, c)
		})
	}
}

// start is where every case's clock starts: 3 s past a whole minute.
func start() time.Time { return time.Date(2026, 11, 30, 9, 0, 3, 0, time.UTC) }

// every10s is a job due every 10 s, whose command the bus succeeds at once.
func every10s() scheduler.Job {
	j := scheduler.DefaultJob()
	j.Every = scheduler.Duration(10 * time.Second)
	j.Command = "test.tick.v1"
	j.Payload = `{"job": {{ json .JobName }}, "at": "{{ .FireTime | rfc3339 }}", "day": "{{ .FireTime | date }}"}`
	j.Timeout = scheduler.Duration(time.Hour)
	return j
}

// at returns the scheduled time start's minute plus s seconds.
func at(s int) time.Time { return start().Truncate(time.Minute).Add(time.Duration(s) * time.Second) }

func testFiresOnSchedule(t *testing.T, c *cluster) {
	c.jobs = map[string]scheduler.Job{"tick": every10s()}
	a := c.start("a", nil)
	c.awaitLeader(a)
	c.awaitTakenOver("tick")
	for n, s := range []int{10, 20, 30} {
		c.clock.Set(at(s))
		c.awaitSends(n + 1)
		c.awaitFinished(n + 1) // else the next time is skipped: block strategy skip
	}
	want := []string{scheduler.CommandID("tick", at(10), 1), scheduler.CommandID("tick", at(20), 1), scheduler.CommandID("tick", at(30), 1)}
	if got := c.bus.distinct(); !slices.Equal(got, want) {
		t.Fatalf("commands published %v, want one per scheduled time %v", got, want)
	}
	p := c.bus.payload(want[0])
	if !strings.Contains(p, `"at": "2026-11-30T09:00:10Z"`) || !strings.Contains(p, `"job": "tick"`) {
		t.Fatalf("payload of the first run = %s, want the template rendered with the scheduled time", p)
	}
	fin := c.journal.await(t, c.h.Timeout, func(rs []scheduler.Record) bool {
		return len(kind(rs, scheduler.RecordFinished)) == 3
	})
	for _, r := range kind(fin, scheduler.RecordFinished) {
		if r.Outcome != scheduler.RunSucceeded || r.Attempt != 1 {
			t.Errorf("run %s finished %s after %d attempts, want succeeded after 1", r.RunID, r.Outcome, r.Attempt)
		}
	}
}

func testKillBeforeFiring(t *testing.T, c *cluster) {
	c.jobs = map[string]scheduler.Job{"tick": every10s()}
	a, b := c.start("a", nil), c.start("b", nil)
	first := c.awaitLeader(a, b)
	c.awaitTakenOver("tick")
	c.clock.Set(at(10))
	c.awaitSends(1)
	c.awaitFinished(1)

	c.clock.Set(at(19)) // one second before the next firing
	c.kill(first)
	second := c.awaitLeader(a, b)
	if second == first {
		t.Fatalf("instance %s leads again after it was killed", first.name)
	}
	c.clock.Set(at(20))
	c.awaitSends(2)
	c.awaitFinished(2)
	c.clock.Set(at(30))
	c.awaitSends(3)

	for _, s := range []int{10, 20, 30} {
		id := scheduler.CommandID("tick", at(s), 1)
		if n := c.bus.count(id); n != 1 {
			t.Errorf("the firing of %s was published %d times, want exactly once", at(s).Format(time.TimeOnly), n)
		}
	}
	if got := c.bus.sender(scheduler.CommandID("tick", at(20), 1)); got != second.name {
		t.Errorf("the firing after the kill was published by %s, want the new leader %s", got, second.name)
	}
	if got := c.bus.effects(); got != 3 {
		t.Errorf("the handler applied %d commands, want 3", got)
	}
}

func testKillDuringFiring(t *testing.T, c *cluster) {
	c.jobs = map[string]scheduler.Job{"tick": every10s()}
	published := make(chan struct{})
	var once sync.Once
	// a publishes its first command, then hangs as if it died before it
	// could note anything else.
	hang := func(ctx context.Context) error {
		once.Do(func() { close(published) })
		<-ctx.Done()
		return ctx.Err()
	}
	a := c.start("a", hang)
	c.awaitLeader(a)
	c.awaitTakenOver("tick")
	b := c.start("b", nil)

	c.clock.Set(at(10))
	select {
	case <-published:
	case <-time.After(c.h.Timeout):
		t.Fatalf("the leader did not publish the firing of %s", at(10))
	}
	c.kill(a)
	c.awaitLeader(b)
	c.journal.await(t, c.h.Timeout, func(rs []scheduler.Record) bool {
		return len(kind(rs, scheduler.RecordFinished)) == 1
	})
	id := scheduler.CommandID("tick", at(10), 1)
	if got := c.bus.distinct(); !slices.Equal(got, []string{id}) {
		t.Fatalf("distinct commands %v, want only the firing's id %s", got, id)
	}
	// The bus handles what the successor published asynchronously.
	c.eventually("the firing published again by the successor", func() bool { return c.bus.count(id) >= 2 })
	if n := c.bus.count(id); n != 2 {
		t.Errorf("the firing was published %d times, want 2 (by the killed leader and again by its successor)", n)
	}
	if got := c.bus.effects(); got != 1 {
		t.Errorf("the handler applied %d commands, want 1: it skips the repeated id", got)
	}
}

func testMisfire(policy scheduler.Misfire) func(t *testing.T, c *cluster) {
	return func(t *testing.T, c *cluster) {
		j := every10s()
		j.Misfire = policy
		c.jobs = map[string]scheduler.Job{"tick": j}
		a := c.start("a", nil)
		c.awaitLeader(a)
		c.awaitTakenOver("tick")
		c.stop(a) // the whole cluster is down ...

		c.clock.Set(at(58)) // ... while 09:00:10 to 09:00:50 pass
		b := c.start("b", nil)
		c.awaitLeader(b)

		switch policy {
		case scheduler.MisfireFireOnce:
			c.awaitSends(1)
			if got, want := c.bus.distinct(), []string{scheduler.CommandID("tick", at(50), 1)}; !slices.Equal(got, want) {
				t.Fatalf("fired %v, want only the latest missed time %v", got, want)
			}
			rs := c.journal.await(t, c.h.Timeout, func(rs []scheduler.Record) bool {
				return len(kind(rs, scheduler.RecordSkipped)) == 1 && len(kind(rs, scheduler.RecordFired)) == 1
			})
			s := kind(rs, scheduler.RecordSkipped)[0]
			if s.Missed != 4 || !s.ScheduledAt.Equal(at(10)) || !s.LastScheduledAt.Equal(at(40)) {
				t.Errorf("skipped %d from %s to %s, want 4 from 09:00:10 to 09:00:40", s.Missed, s.ScheduledAt, s.LastScheduledAt)
			}
			f := kind(rs, scheduler.RecordFired)[0]
			if f.Trigger != scheduler.TriggerMisfire || f.At.Sub(f.ScheduledAt) != 8*time.Second {
				t.Errorf("fired with trigger %s, %s late; want misfire, 8s late", f.Trigger, f.At.Sub(f.ScheduledAt))
			}
		case scheduler.MisfireFireAll:
			c.awaitSends(5)
			var want []string
			for _, s := range []int{10, 20, 30, 40, 50} {
				want = append(want, scheduler.CommandID("tick", at(s), 1))
			}
			if got := c.bus.distinct(); !slices.Equal(got, want) {
				t.Fatalf("fired %v, want every missed time, oldest first %v", got, want)
			}
			rs := c.journal.await(t, c.h.Timeout, func(rs []scheduler.Record) bool {
				return len(kind(rs, scheduler.RecordFinished)) == 5
			})
			if s := kind(rs, scheduler.RecordSkipped); len(s) != 0 {
				t.Errorf("skipped %v, want nothing skipped", s)
			}
			first := kind(rs, scheduler.RecordFired)[0]
			if late := first.At.Sub(first.ScheduledAt); late != 48*time.Second {
				t.Errorf("the oldest missed time fired %s late, want 48s", late)
			}
		case scheduler.MisfireSkip:
			rs := c.journal.await(t, c.h.Timeout, func(rs []scheduler.Record) bool {
				return len(kind(rs, scheduler.RecordSkipped)) == 1
			})
			if s := kind(rs, scheduler.RecordSkipped)[0]; s.Missed != 5 {
				t.Errorf("skipped %d times, want 5", s.Missed)
			}
			c.clock.Set(at(60)) // the next time fires as usual
			c.awaitSends(1)
			if got, want := c.bus.distinct(), []string{scheduler.CommandID("tick", at(60), 1)}; !slices.Equal(got, want) {
				t.Fatalf("fired %v, want only the first time after the start %v", got, want)
			}
		}
	}
}

func testMisfireWithOnTime(t *testing.T, c *cluster) {
	c.jobs = map[string]scheduler.Job{"tick": every10s()}
	a := c.start("a", nil)
	c.awaitLeader(a)
	c.awaitTakenOver("tick")
	c.stop(a)
	c.clock.Set(at(52)) // 09:00:10 to 09:00:40 missed; 09:00:50 is 2s late, within the threshold
	b := c.start("b", nil)
	c.awaitLeader(b)
	c.awaitSends(1)
	rs := c.journal.await(t, c.h.Timeout, func(rs []scheduler.Record) bool {
		return len(kind(rs, scheduler.RecordSkipped)) == 1 && len(kind(rs, scheduler.RecordFinished)) == 1
	})
	if got, want := c.bus.distinct(), []string{scheduler.CommandID("tick", at(50), 1)}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want only the time due on time %v", got, want)
	}
	if f := kind(rs, scheduler.RecordFired)[0]; f.Trigger != scheduler.TriggerSchedule || f.At.Sub(f.ScheduledAt) != 2*time.Second {
		t.Errorf("fired with trigger %s, %s late; want schedule, 2s late", f.Trigger, f.At.Sub(f.ScheduledAt))
	}
	if s := kind(rs, scheduler.RecordSkipped)[0]; s.Missed != 4 {
		t.Errorf("skipped %d missed times, want 4", s.Missed)
	}
}

func testBlock(strategy scheduler.Block) func(t *testing.T, c *cluster) {
	return func(t *testing.T, c *cluster) {
		j := every10s()
		j.Block = strategy
		c.jobs = map[string]scheduler.Job{"tick": j}
		first := scheduler.CommandID("tick", at(10), 1)
		second := scheduler.CommandID("tick", at(20), 1)
		c.bus.hold(first) // a slow run: no outcome until released
		a := c.start("a", nil)
		c.awaitLeader(a)
		c.awaitTakenOver("tick")
		c.clock.Set(at(10))
		c.awaitSends(1)
		c.clock.Set(at(20))

		switch strategy {
		case scheduler.BlockSkip:
			rs := c.journal.await(t, c.h.Timeout, func(rs []scheduler.Record) bool { return len(kind(rs, scheduler.RecordSkipped)) == 1 })
			if s := kind(rs, scheduler.RecordSkipped)[0]; !s.ScheduledAt.Equal(at(20)) || !strings.Contains(s.Reason, "still running") {
				t.Errorf("skipped %s (%s), want 09:00:20 because the previous run is still running", s.ScheduledAt, s.Reason)
			}
			c.bus.release(first)
			c.awaitFinished(1)
			c.clock.Set(at(30))
			c.awaitSends(2)
			if c.bus.count(second) != 0 {
				t.Errorf("the skipped time was published")
			}
		case scheduler.BlockQueue:
			c.awaitRecord(func(st scheduler.State) bool { return len(st.Queue) == 1 })
			if n := len(c.bus.distinct()); n != 1 {
				t.Fatalf("%d commands published while the first run is open, want 1: the second waits in the queue", n)
			}
			c.bus.release(first)
			c.awaitSends(2)
			rs := c.journal.await(t, c.h.Timeout, func(rs []scheduler.Record) bool { return len(kind(rs, scheduler.RecordFired)) == 2 })
			if f := kind(rs, scheduler.RecordFired)[1]; f.CommandID != second || f.Trigger != scheduler.TriggerQueue {
				t.Errorf("second run fired %s with trigger %s, want %s from the queue", f.CommandID, f.Trigger, second)
			}
		case scheduler.BlockParallel:
			c.awaitSends(2)
			if got := c.bus.distinct(); !slices.Equal(got, []string{first, second}) {
				t.Fatalf("published %v, want both runs at once", got)
			}
			if c.bus.outcome(first) != scheduler.OutcomePending {
				t.Errorf("the first run finished before the second fired")
			}
			c.bus.release(first)
		}
	}
}

func testManualTrigger(t *testing.T, c *cluster) {
	j := every10s()
	j.Enabled = false // triggered by hand only
	c.jobs = map[string]scheduler.Job{"report": j}
	a, b := c.start("a", nil), c.start("b", nil)
	leaderInst := c.awaitLeader(a, b)
	other := a
	if leaderInst == a {
		other = b
	}
	c.awaitTakenOver("report")
	c.clock.Set(at(40)) // disabled: nothing fires on the schedule

	rc, err := other.s.Trigger(context.Background(), "report", "ops@example.com", "req-1")
	if err != nil {
		t.Fatalf("trigger on the instance that does not lead: %v", err)
	}
	c.awaitSends(1)
	if got := c.bus.distinct(); !slices.Equal(got, []string{rc.RunID}) {
		t.Fatalf("published %v, want the triggered run %s", got, rc.RunID)
	}
	if got := c.bus.sender(rc.RunID); got != leaderInst.name {
		t.Errorf("the manual run was published by %s, want the leader %s", got, leaderInst.name)
	}
	again, err := other.s.Trigger(context.Background(), "report", "ops@example.com", "req-1")
	if err != nil || again.RunID != rc.RunID {
		t.Fatalf("the same request again = %+v, %v; want the same run", again, err)
	}
	rs := c.journal.await(t, c.h.Timeout, func(rs []scheduler.Record) bool { return len(kind(rs, scheduler.RecordFinished)) == 1 })
	if f := kind(rs, scheduler.RecordFinished)[0]; f.Trigger != scheduler.TriggerManual || f.Outcome != scheduler.RunSucceeded {
		t.Errorf("manual run finished %+v, want trigger manual, succeeded", f)
	}
	if _, err := other.s.Trigger(context.Background(), "nope", "", ""); !errors.Is(err, scheduler.ErrUnknownJob) {
		t.Errorf("trigger of an unknown job = %v, want ErrUnknownJob", err)
	}
}

func testRetry(t *testing.T, c *cluster) {
	j := every10s()
	j.Retry = scheduler.Retry{MaxAttempts: 3}
	j.Timeout = scheduler.Duration(30 * time.Second)
	c.jobs = map[string]scheduler.Job{"tick": j}
	first := scheduler.CommandID("tick", at(10), 1)
	c.bus.reject(first)
	c.bus.hold(scheduler.CommandID("tick", at(10), 2))
	a := c.start("a", nil)
	c.awaitLeader(a)
	c.awaitTakenOver("tick")
	c.clock.Set(at(10))
	c.awaitSends(2) // rejected, then attempt 2 at once (no backoff)
	c.clock.Set(at(10).Add(31 * time.Second))
	c.awaitSends(3) // attempt 2 timed out: attempt 3
	rs := c.journal.await(t, c.h.Timeout, func(rs []scheduler.Record) bool { return len(kind(rs, scheduler.RecordFinished)) == 1 })
	f := kind(rs, scheduler.RecordFinished)[0]
	if f.Outcome != scheduler.RunSucceeded || f.Attempt != 3 || f.CommandID != scheduler.CommandID("tick", at(10), 3) {
		t.Errorf("run finished %s after %d attempts with %s, want succeeded after 3 with attempt 3's id", f.Outcome, f.Attempt, f.CommandID)
	}
	if got := len(c.bus.distinct()); got != 3 {
		t.Errorf("%d distinct commands, want one per attempt", got)
	}
	for _, r := range kind(rs, scheduler.RecordFired) {
		if r.RunID != first {
			t.Errorf("attempt %d carries run id %s, want %s", r.Attempt, r.RunID, first)
		}
	}
}

func testDisable(t *testing.T, c *cluster) {
	c.jobs = map[string]scheduler.Job{"tick": every10s()}
	a := c.start("a", nil)
	c.awaitLeader(a)
	c.awaitTakenOver("tick")
	c.clock.Set(at(10))
	c.awaitSends(1)
	c.awaitFinished(1)

	off := every10s()
	off.Enabled = false
	if err := a.s.SetJobs(map[string]scheduler.Job{"tick": off}); err != nil {
		t.Fatal(err)
	}
	c.awaitRecord(func(st scheduler.State) bool { return st.Disabled })
	c.clock.Set(at(45))
	if err := a.s.SetJobs(map[string]scheduler.Job{"tick": every10s()}); err != nil {
		t.Fatal(err)
	}
	c.awaitRecord(func(st scheduler.State) bool { return !st.Disabled })
	c.clock.Set(at(50))
	c.awaitSends(2)
	want := []string{scheduler.CommandID("tick", at(10), 1), scheduler.CommandID("tick", at(50), 1)}
	if got := c.bus.distinct(); !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v: nothing while disabled, no misfires after", got, want)
	}
	if s := kind(c.journal.all(), scheduler.RecordSkipped); len(s) != 0 {
		t.Errorf("skipped %v after the job was enabled again, want nothing", s)
	}
}

// cluster is the scheduler instances of one case and what they share.
type cluster struct {
	t       *testing.T
	h       Harness
	key     string
	store   scheduler.Store
	clock   *Clock
	bus     *bus
	journal *journal
	jobs    map[string]scheduler.Job
}

type instance struct {
	name   string
	s      *scheduler.Scheduler
	cancel context.CancelFunc
	done   chan error
	killed *atomic.Bool

	stopOnce sync.Once
}

// killable is a candidate that, once killed, never leads again: a term it
// wins after the kill ends at once, and its Run returns.
type killable struct {
	next   leader.Runner
	killed *atomic.Bool
}

func (k killable) Run(ctx context.Context, fn func(context.Context) error) error {
	return k.next.Run(ctx, func(leaderCtx context.Context) error {
		if k.killed.Load() {
			return nil
		}
		return fn(leaderCtx)
	})
}

func newCluster(t *testing.T, h Harness, key string) *cluster {
	c := &cluster{t: t, h: h, key: key, store: h.NewStore(t), clock: NewClock(start()), journal: &journal{}}
	c.bus = newBus(t)
	return c
}

// start starts an instance. afterSend, when set, runs after each command
// it publishes (the bus has it then).
func (c *cluster) start(name string, afterSend func(ctx context.Context) error) *instance {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sender := &tagSender{name: name, bus: c.bus, next: scheduler.NewCloudEventsSender(c.bus.pub, fixedRouter{}, ""), after: afterSend}
	killed := &atomic.Bool{}
	s, err := scheduler.New(scheduler.Config{
		Leader: killable{next: c.h.NewLeader(c.t, c.key), killed: killed}, Store: c.store, Sender: sender, Outcomes: c.bus, Journal: c.journal,
		Clock: c.clock, Instance: name, PollInterval: 20 * time.Millisecond,
		Registerer: prometheus.NewRegistry(), Logger: Logger(c.t),
	}, c.jobs)
	if err != nil {
		c.t.Fatalf("new scheduler %s: %v", name, err)
	}
	in := &instance{name: name, s: s, cancel: cancel, done: make(chan error, 1), killed: killed}
	go func() { in.done <- s.Run(ctx) }()
	c.t.Cleanup(func() { c.stop(in) })
	return in
}

// stop shuts an instance down gracefully.
func (c *cluster) stop(in *instance) {
	in.stopOnce.Do(func() {
		in.cancel()
		select {
		case err := <-in.done:
			if err != nil {
				c.t.Errorf("instance %s: Run = %v", in.name, err)
			}
		case <-time.After(c.h.Timeout):
			c.t.Errorf("instance %s did not stop within %s", in.name, c.h.Timeout)
		}
	})
}

// kill ends an instance as a crash would: its lock is broken from outside
// (no clean release) and it stops.
func (c *cluster) kill(in *instance) {
	c.t.Helper()
	in.killed.Store(true)
	c.h.Kill(c.t, c.key)
	c.eventually("the killed instance "+in.name+" stops leading", func() bool { return !in.s.Leading() })
	c.stop(in) // it no longer campaigns either
}

// awaitLeader waits until one of ins leads and returns it.
func (c *cluster) awaitLeader(ins ...*instance) *instance {
	c.t.Helper()
	var got *instance
	c.eventually("an instance leads", func() bool {
		for _, in := range ins {
			if in.s.Leading() {
				got = in
				return true
			}
		}
		return false
	})
	return got
}

// awaitTakenOver waits until the leader took the job's record over.
func (c *cluster) awaitTakenOver(job string) {
	c.t.Helper()
	c.awaitRecord(func(st scheduler.State) bool { return !st.Last.IsZero() }, job)
}

// awaitRecord waits until the job's record (default "tick") satisfies ok.
func (c *cluster) awaitRecord(ok func(scheduler.State) bool, job ...string) {
	c.t.Helper()
	name := "tick"
	if len(job) > 0 {
		name = job[0]
	}
	c.eventually("the record of job "+name, func() bool {
		st, _, err := c.store.Load(context.Background(), name)
		return err == nil && ok(st)
	})
}

// awaitSends waits until n distinct commands were published.
func (c *cluster) awaitSends(n int) {
	c.t.Helper()
	c.eventually(fmt.Sprintf("%d distinct commands published", n), func() bool { return len(c.bus.distinct()) >= n })
}

// awaitFinished waits until the journal has n finished runs and the
// record of job "tick" no open run (the journal hears of the end first).
func (c *cluster) awaitFinished(n int) {
	c.t.Helper()
	c.journal.await(c.t, c.h.Timeout, func(rs []scheduler.Record) bool { return len(kind(rs, scheduler.RecordFinished)) >= n })
	c.awaitRecord(func(st scheduler.State) bool { return len(st.Open) == 0 })
}

func (c *cluster) eventually(what string, ok func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(c.h.Timeout)
	for !ok() {
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %s (commands %v, records %d)", what, c.h.Timeout, c.bus.distinct(), len(c.journal.all()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tagSender publishes through next, noting which instance sent what.
type tagSender struct {
	name  string
	bus   *bus
	next  scheduler.Sender
	after func(ctx context.Context) error
}

func (s *tagSender) Send(ctx context.Context, cmd scheduler.Command) error {
	if cmd.Payload == nil {
		return errors.New("no payload")
	}
	s.bus.noteSender(cmd.ID, s.name)
	if err := s.next.Send(ctx, cmd); err != nil {
		return err
	}
	if s.after != nil {
		return s.after(ctx)
	}
	return nil
}

// fixedRouter sends every command to one topic.
type fixedRouter struct{}

func (fixedRouter) Route(string, []byte) (string, string, error) { return "commands", "k", nil }

// bus is the command topic (Watermill's gochannel) with a handler behind
// it that applies each command id once and decides its outcome: succeeded,
// unless the case asked to reject it or hold it (pending until released).
type bus struct {
	pub *gochannel.GoChannel

	mu       sync.Mutex
	order    []string          // distinct ids, in the order first seen
	counts   map[string]int    // publications per id
	senders  map[string]string // instance that first published each id
	payloads map[string]string
	outcomes map[string]scheduler.OutcomeStatus
	held     map[string]bool
	rejected map[string]bool
}

func newBus(t *testing.T) *bus {
	pub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64}, watermill.NopLogger{})
	b := &bus{pub: pub, counts: map[string]int{}, senders: map[string]string{}, payloads: map[string]string{},
		outcomes: map[string]scheduler.OutcomeStatus{}, held: map[string]bool{}, rejected: map[string]bool{}}
	msgs, err := pub.Subscribe(context.Background(), "commands")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range msgs {
			b.handle(m)
			m.Ack()
		}
	}()
	t.Cleanup(func() {
		_ = pub.Close()
		<-done
	})
	return b
}

func (b *bus) handle(m *message.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := m.UUID
	b.counts[id]++
	if b.counts[id] > 1 {
		return // the handler's inbox: a repeated id has no second effect
	}
	b.order = append(b.order, id)
	b.payloads[id] = string(m.Payload)
	switch {
	case b.rejected[id]:
		b.outcomes[id] = scheduler.OutcomeRejected
	case b.held[id]:
		b.outcomes[id] = scheduler.OutcomePending
	default:
		b.outcomes[id] = scheduler.OutcomeSucceeded
	}
}

// Outcome implements scheduler.Outcomes.
func (b *bus) Outcome(_ context.Context, id string) (scheduler.Outcome, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, ok := b.outcomes[id]
	if !ok {
		return scheduler.Outcome{Status: scheduler.OutcomePending}, nil
	}
	out := scheduler.Outcome{Status: st}
	if st == scheduler.OutcomeRejected {
		out.Code, out.Reason = "test_rejection", "rejected by the test"
	}
	return out, nil
}

// noteSender notes the instance that publishes id first.
func (b *bus) noteSender(id, name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.senders[id]; !ok {
		b.senders[id] = name
	}
}

func (b *bus) hold(id string)   { b.mu.Lock(); b.held[id] = true; b.mu.Unlock() }
func (b *bus) reject(id string) { b.mu.Lock(); b.rejected[id] = true; b.mu.Unlock() }

func (b *bus) release(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.held, id)
	if _, ok := b.outcomes[id]; ok {
		b.outcomes[id] = scheduler.OutcomeSucceeded
	}
}

func (b *bus) outcome(id string) scheduler.OutcomeStatus {
	o, _ := b.Outcome(context.Background(), id)
	return o.Status
}

func (b *bus) distinct() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.order)
}

func (b *bus) effects() int { return len(b.distinct()) }

func (b *bus) count(id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.counts[id]
}

func (b *bus) sender(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.senders[id]
}

func (b *bus) payload(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.payloads[id]
}

// journal keeps every record, deduplicated as a projection would: by
// kind, run and attempt.
type journal struct {
	mu      sync.Mutex
	records []scheduler.Record
	seen    map[string]bool
}

// Record implements scheduler.Journal.
func (j *journal) Record(_ context.Context, r scheduler.Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.seen == nil {
		j.seen = map[string]bool{}
	}
	k := fmt.Sprintf("%s/%s/%d", r.Kind, r.RunID, r.Attempt)
	if j.seen[k] {
		return nil
	}
	j.seen[k] = true
	j.records = append(j.records, r)
	return nil
}

func (j *journal) all() []scheduler.Record {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.records)
}

func (j *journal) await(t *testing.T, timeout time.Duration, ok func([]scheduler.Record) bool) []scheduler.Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rs := j.all()
		if ok(rs) {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("journal: the records expected did not come within %s; have %+v", timeout, rs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func kind(rs []scheduler.Record, k string) []scheduler.Record {
	var out []scheduler.Record
	for _, r := range rs {
		if r.Kind == k {
			out = append(out, r)
		}
	}
	return out
}

// Logger returns a logger writing to t's log, at info and above.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
