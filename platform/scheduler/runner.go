package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// jobRunner fires one job while its scheduler leads: it owns the job's
// timer, decides what is due, and watches the job's open runs. Changes of
// the job's record go through update, serialised by mu in this process and
// by compare-and-set across processes.
type jobRunner struct {
	s      *Scheduler
	name   string
	job    Job
	sched  Schedule
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{}
	mu     sync.Mutex
}

func (s *Scheduler) newRunner(name string, j Job) *jobRunner {
	sched, _ := j.Schedule() // checked by SetJobs
	return &jobRunner{
		s: s, name: name, job: j, sched: sched,
		log:  s.log.With("job", name),
		done: make(chan struct{}),
		wake: make(chan struct{}, 1),
	}
}

// maxScan bounds how many due times one step enumerates: beyond it, times
// older than maxLookback are not counted.
const (
	maxScan     = 1_000_000
	maxLookback = 24 * time.Hour
)

// recordPolls is how many poll intervals pass between two reads of a
// job's record while nothing else wakes its runner.
const recordPolls = 5

// run fires the job until ctx ends, then waits for its run watchers.
func (r *jobRunner) run(ctx context.Context) {
	defer close(r.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	finished := make(chan string)
	watching := map[string]bool{}
	clock := r.s.cfg.Clock

	for first := true; ; first = false {
		st, err := r.step(ctx, first)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("scheduler: cannot read or write the job's record; trying again", "error", err)
		}
		if err == nil {
			for _, o := range st.Open {
				if watching[o.RunID] {
					continue
				}
				watching[o.RunID] = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					r.watch(ctx, o)
					select {
					case finished <- o.RunID:
					case <-ctx.Done():
					}
				}()
			}
		}
		var due <-chan time.Time
		stopDue := func() {}
		if err == nil && r.job.Enabled && r.sched != nil {
			if n := r.sched.Next(st.Last); !n.IsZero() {
				due, stopDue = clock.After(max(0, n.Sub(clock.Now())))
			}
		}
		// The record is read again now and then for what other instances
		// wrote in it (manual triggers they took); a trigger taken here
		// wakes the runner at once.
		poll := time.NewTimer(recordPolls * r.s.cfg.PollInterval)
		select {
		case <-ctx.Done():
		case <-due:
		case <-r.wake:
		case <-poll.C:
		case id := <-finished:
			delete(watching, id)
		}
		stopDue()
		poll.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}

// update changes the job's record; see update.
func (r *jobRunner) update(ctx context.Context, change func(st *State) (bool, error)) (State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out State
	err := update(ctx, r.s.cfg.Store, r.name, func(st *State) (bool, error) {
		changed, err := change(st)
		out = *st
		return changed, err
	})
	return out, err
}

// candidate is a time that is due, or a manual trigger.
type candidate struct {
	scheduled time.Time
	trigger   string
	requestID string
	// catchUp: a missed time of misfire policy fire_all, which waits in
	// the queue for the runs before it whatever the block strategy.
	catchUp bool
}

// step looks at the job's record once: on the first step of a term it
// takes the record over; then it fires, queues or skips what is due and
// what was asked for, and starts the next queued run when none is open.
// It returns the record as it left it.
func (r *jobRunner) step(ctx context.Context, takeOver bool) (State, error) {
	var (
		started []OpenRun
		records []Record
	)
	now := r.s.cfg.Clock.Now().UTC()
	st, err := r.update(ctx, func(st *State) (bool, error) {
		started, records = nil, nil
		changed := false
		if takeOver {
			changed = r.takeOver(st, now)
		}
		d := r.decide(st, now)
		started, records = d.started, d.records
		return changed || d.changed, nil
	})
	if err != nil {
		return State{}, err
	}
	for _, rec := range records {
		r.record(ctx, rec)
	}
	for _, o := range started {
		r.s.metrics.fires.WithLabelValues(r.name, o.Trigger).Inc()
		if o.Trigger != TriggerManual {
			r.s.metrics.lateness.WithLabelValues(r.name).Observe(o.FiredAt.Sub(o.Scheduled).Seconds())
		}
		r.log.Info("scheduler: run fired", "run_id", o.RunID, "trigger", o.Trigger,
			"scheduled", o.Scheduled, "lateness", o.FiredAt.Sub(o.Scheduled), "command_id", o.CommandID)
	}
	return st, nil
}

// takeOver prepares the record when a leader starts the job: a job seen
// for the first time starts now (nothing before it was missed), and so
// does a job enabled again (what passed while it was disabled was not
// missed).
func (r *jobRunner) takeOver(st *State, now time.Time) bool {
	changed := false
	switch {
	case !r.job.Enabled && !st.Disabled:
		st.Disabled, changed = true, true
	case r.job.Enabled && st.Disabled:
		st.Disabled, changed = false, true
		if st.Last.Before(now) {
			st.Last = now
		}
	}
	if st.Last.IsZero() {
		st.Last, changed = now, true
	}
	return changed
}

// decision is what one step decided.
type decision struct {
	changed bool
	started []OpenRun
	records []Record
}

// decide applies the schedule, the misfire policy, the manual triggers and
// the block strategy to the record, as of now.
func (r *jobRunner) decide(st *State, now time.Time) decision {
	var d decision
	j := r.job
	var cands []candidate

	if j.Enabled && !st.Disabled && r.sched != nil {
		keep := 0
		switch j.Misfire {
		case MisfireFireOnce:
			keep = 2
		case MisfireFireAll:
			keep = j.MaxMisfires + 1
		case MisfireSkip:
			keep = 1
		}
		due := scanDue(r.sched, st.Last, now, j.MisfireThreshold.D(), keep)
		if !due.last.IsZero() {
			st.Last, d.changed = due.last, true
		}
		catchUp := false
		if due.missedTotal > 0 {
			fire := 0
			switch {
			case j.Misfire == MisfireFireOnce && len(due.onTime) == 0:
				fire = 1
			case j.Misfire == MisfireFireAll:
				fire = min(j.MaxMisfires, due.missedTotal)
				catchUp = true
			}
			// fire_once with a time due on time as well: that one is the
			// firing now, and every missed time is skipped.
			kept := due.missed
			firing := kept[len(kept)-fire:]
			if skipped := due.missedTotal - fire; skipped > 0 {
				lastSkipped := kept[len(kept)-fire-1]
				d.records = append(d.records, Record{
					Kind: RecordSkipped, Job: r.name, RunID: skipID(r.name, due.firstMissed), Trigger: TriggerMisfire,
					ScheduledAt: due.firstMissed, LastScheduledAt: lastSkipped, Missed: skipped, At: now,
					Outcome: RunSkipped, Reason: fmt.Sprintf("missed while no scheduler led: %d time(s) from %s to %s, skipped by misfire policy %s",
						skipped, stamp(due.firstMissed), stamp(lastSkipped), j.Misfire),
				})
				r.s.metrics.skipped.WithLabelValues(r.name, "misfire").Add(float64(skipped))
			}
			for _, t := range firing {
				cands = append(cands, candidate{scheduled: t, trigger: TriggerMisfire, catchUp: j.Misfire == MisfireFireAll})
			}
		}
		for _, t := range due.onTime {
			// After a fire_all catch-up, the times on time wait their turn
			// in the queue too, whatever the block strategy.
			cands = append(cands, candidate{scheduled: t, trigger: TriggerSchedule, catchUp: catchUp})
		}
	}
	for _, req := range st.Requests {
		if slices.Contains(st.Handled, req.ID) {
			continue
		}
		cands = append(cands, candidate{scheduled: req.At, trigger: TriggerManual, requestID: req.ID})
		st.Handled = append(st.Handled, req.ID)
	}
	if len(st.Handled) > maxHandled {
		st.Handled = slices.Clone(st.Handled[len(st.Handled)-maxHandled:])
	}
	if len(st.Requests) > 0 {
		st.Requests, d.changed = nil, true
	}

	for _, c := range cands {
		switch {
		case j.Block == BlockParallel, len(st.Open) == 0 && len(st.Queue) == 0:
			r.start(st, c, now, &d)
		case j.Block == BlockQueue || c.catchUp:
			if len(st.Queue) >= j.MaxMisfires {
				r.skip(c, now, fmt.Sprintf("the queue holds %d runs already (max_misfires)", len(st.Queue)), "queue_full", &d)
				continue
			}
			trigger := c.trigger
			if trigger == TriggerSchedule {
				trigger = TriggerQueue
			}
			st.Queue = append(st.Queue, Queued{Scheduled: c.scheduled, Trigger: trigger, RequestID: c.requestID})
			d.changed = true
		default:
			running := st.Open[0]
			r.skip(c, now, fmt.Sprintf("run %s (scheduled %s) is still running; block strategy skip",
				running.RunID, stamp(running.Scheduled)), "blocked", &d)
		}
	}
	if len(st.Open) == 0 && len(st.Queue) > 0 {
		q := st.Queue[0]
		st.Queue = st.Queue[1:]
		d.changed = true
		r.start(st, candidate{scheduled: q.Scheduled, trigger: q.Trigger, requestID: q.RequestID}, now, &d)
	}
	return d
}

// start adds a run to the record: it is published once the record is
// saved.
func (r *jobRunner) start(st *State, c candidate, now time.Time, d *decision) {
	runID := CommandID(r.name, c.scheduled, 1)
	if c.requestID != "" {
		runID = manualRunID(r.name, c.requestID)
	}
	for _, o := range st.Open {
		if o.RunID == runID {
			return
		}
	}
	d.changed = true
	payload, err := RenderPayload(r.job, TemplateData{JobName: r.name, FireTime: c.scheduled.UTC(), RunID: runID, Trigger: c.trigger})
	if err != nil {
		d.records = append(d.records, Record{
			Kind: RecordFinished, Job: r.name, RunID: runID, Trigger: c.trigger, ScheduledAt: c.scheduled, At: now, FiredAt: now,
			CommandType: r.job.Command, Outcome: RunFailed, Reason: "render the payload: " + err.Error(),
		})
		r.s.metrics.failures.WithLabelValues(r.name, RunFailed).Inc()
		return
	}
	o := OpenRun{
		RunID: runID, Trigger: c.trigger, Scheduled: c.scheduled.UTC(), FiredAt: now, Attempt: 1,
		CommandID: runID, AttemptAt: now, RequestID: c.requestID, CommandType: r.job.Command, Payload: payload,
	}
	st.Open = append(st.Open, o)
	d.started = append(d.started, o)
}

// skip records a candidate that does not run.
func (r *jobRunner) skip(c candidate, now time.Time, reason, metric string, d *decision) {
	id := skipID(r.name, c.scheduled)
	if c.requestID != "" {
		id = manualRunID(r.name, c.requestID)
	}
	d.records = append(d.records, Record{
		Kind: RecordSkipped, Job: r.name, RunID: id, Trigger: c.trigger, ScheduledAt: c.scheduled,
		LastScheduledAt: c.scheduled, Missed: 1, At: now, Outcome: RunSkipped, Reason: reason,
	})
	r.s.metrics.skipped.WithLabelValues(r.name, metric).Inc()
	r.log.Info("scheduler: run skipped", "scheduled", c.scheduled, "trigger", c.trigger, "reason", reason)
}

// due are the times due in a step.
type due struct {
	onTime      []time.Time // within the misfire threshold, in order
	missed      []time.Time // the latest missed times (as many as asked for), in order
	missedTotal int
	firstMissed time.Time
	last        time.Time // the latest due time; zero when none
}

// scanDue enumerates the times sched is due after after, up to now, keeping
// the latest keep missed ones. Past maxScan times it counts only those
// within maxLookback of now.
func scanDue(sched Schedule, after, now time.Time, threshold time.Duration, keep int) due {
	var d due
	t := after
	jumped := false
	for steps := 0; ; steps++ {
		if steps == maxScan && !jumped {
			jumped = true
			if j := now.Add(-maxLookback); j.After(t) {
				t = j
			}
		}
		n := sched.Next(t)
		if n.IsZero() || n.After(now) {
			break
		}
		t, d.last = n, n
		if now.Sub(n) <= threshold {
			d.onTime = append(d.onTime, n)
			continue
		}
		d.missedTotal++
		if d.firstMissed.IsZero() {
			d.firstMissed = n
		}
		if keep > 0 {
			d.missed = append(d.missed, n)
			if len(d.missed) > 2*keep {
				d.missed = append(d.missed[:0], d.missed[len(d.missed)-keep:]...)
			}
		}
	}
	if len(d.missed) > keep {
		d.missed = d.missed[len(d.missed)-keep:]
	}
	return d
}

// watch publishes the run's attempts and waits for their outcomes until
// the run finishes or ctx ends (the run then stays open in the record for
// the next leader).
func (r *jobRunner) watch(ctx context.Context, o OpenRun) {
	j := r.job
	for {
		deadline := o.AttemptAt.Add(j.Timeout.D())
		outcome, code, reason := RunFailed, "", ""
		if err := r.send(ctx, o, deadline); err != nil {
			if ctx.Err() != nil {
				return
			}
			reason = "publish the command: " + err.Error()
		} else {
			r.record(ctx, Record{
				Kind: RecordFired, Job: r.name, RunID: o.RunID, Trigger: o.Trigger, ScheduledAt: o.Scheduled,
				At: o.AttemptAt, FiredAt: o.FiredAt, Attempt: o.Attempt, CommandID: o.CommandID, CommandType: o.CommandType,
				Outcome: RunRunning,
			})
			outcome, code, reason = r.await(ctx, o, deadline)
			if ctx.Err() != nil {
				return
			}
		}
		if outcome == RunSucceeded || o.Attempt >= j.Retry.MaxAttempts {
			r.finish(ctx, o, outcome, code, reason)
			return
		}
		r.s.metrics.failures.WithLabelValues(r.name, outcome).Inc()
		r.log.Warn("scheduler: attempt failed; retrying", "run_id", o.RunID, "attempt", o.Attempt,
			"outcome", outcome, "code", code, "reason", reason, "backoff", j.Retry.Backoff)
		if !r.sleep(ctx, j.Retry.Backoff.D()) {
			return
		}
		next := o
		next.Attempt++
		next.CommandID = CommandID(r.name, o.Scheduled, next.Attempt)
		if o.RequestID != "" {
			next.CommandID = manualCommandID(r.name, o.RequestID, next.Attempt)
		}
		next.AttemptAt = r.s.cfg.Clock.Now().UTC()
		for {
			_, err := r.update(ctx, func(st *State) (bool, error) {
				for i := range st.Open {
					if st.Open[i].RunID == o.RunID {
						if st.Open[i].Attempt >= next.Attempt {
							next = st.Open[i] // another leader got there first
							return false, nil
						}
						st.Open[i] = next
						return true, nil
					}
				}
				return false, nil
			})
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("scheduler: cannot record the next attempt; trying again", "run_id", o.RunID, "error", err)
			if !r.sleepPoll(ctx) {
				return
			}
		}
		o = next
		r.s.metrics.fires.WithLabelValues(r.name, "retry").Inc()
	}
}

// send publishes the attempt's command, trying again every poll interval
// until it is out or the attempt's deadline passed.
func (r *jobRunner) send(ctx context.Context, o OpenRun, deadline time.Time) error {
	cmd := Command{ID: o.CommandID, Type: o.CommandType, Payload: o.Payload, Job: r.name, RunID: o.RunID, Time: o.AttemptAt}
	for {
		err := r.s.cfg.Sender.Send(ctx, cmd)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if !r.s.cfg.Clock.Now().Before(deadline) {
			return err
		}
		r.log.Warn("scheduler: cannot publish the command; trying again", "run_id", o.RunID, "command_id", o.CommandID, "error", err)
		if !r.sleepPoll(ctx) {
			return ctx.Err()
		}
	}
}

// await reads the attempt's outcome every poll interval until it is no
// longer pending or the deadline passed.
func (r *jobRunner) await(ctx context.Context, o OpenRun, deadline time.Time) (outcome, code, reason string) {
	clock := r.s.cfg.Clock
	timeout, stop := clock.After(max(0, deadline.Sub(clock.Now())))
	defer stop()
	tick := time.NewTicker(r.s.cfg.PollInterval)
	defer tick.Stop()
	check := func() (string, string, string, bool) {
		out, err := r.s.cfg.Outcomes.Outcome(ctx, o.CommandID)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Debug("scheduler: cannot read the command's outcome", "command_id", o.CommandID, "error", err)
			}
			return "", "", "", false
		}
		switch out.Status {
		case OutcomeSucceeded:
			return RunSucceeded, "", "", true
		case OutcomeRejected:
			return RunRejected, out.Code, out.Reason, true
		}
		return "", "", "", false
	}
	for {
		if a, b, c, ok := check(); ok {
			return a, b, c
		}
		select {
		case <-ctx.Done():
			return "", "", ""
		case <-timeout:
			if a, b, c, ok := check(); ok {
				return a, b, c
			}
			return RunTimedOut, "", fmt.Sprintf("no outcome of command %s within %s", o.CommandID, r.job.Timeout)
		case <-tick.C:
		}
	}
}

// finish records the run's end and removes it from the record. The
// journal hears of it first: a leader that dies in between leaves the run
// open, and its successor finishes it again, with the same record.
func (r *jobRunner) finish(ctx context.Context, o OpenRun, outcome, code, reason string) {
	now := r.s.cfg.Clock.Now().UTC()
	r.record(ctx, Record{
		Kind: RecordFinished, Job: r.name, RunID: o.RunID, Trigger: o.Trigger, ScheduledAt: o.Scheduled, At: now,
		FiredAt: o.FiredAt, Attempt: o.Attempt, CommandID: o.CommandID, CommandType: o.CommandType,
		Outcome: outcome, Code: code, Reason: reason,
	})
	for {
		_, err := r.update(ctx, func(st *State) (bool, error) {
			for i := range st.Open {
				if st.Open[i].RunID == o.RunID {
					st.Open = append(st.Open[:i:i], st.Open[i+1:]...)
					return true, nil
				}
			}
			return false, nil
		})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("scheduler: cannot record the end of a run; trying again", "run_id", o.RunID, "error", err)
		if !r.sleepPoll(ctx) {
			return
		}
	}
	r.s.metrics.runs.WithLabelValues(r.name, outcome).Inc()
	if outcome != RunSucceeded {
		r.s.metrics.failures.WithLabelValues(r.name, outcome).Inc()
	}
	level := slog.LevelInfo
	if outcome != RunSucceeded {
		level = slog.LevelWarn
	}
	r.log.Log(ctx, level, "scheduler: run finished", "run_id", o.RunID, "outcome", outcome, "attempts", o.Attempt,
		"duration", now.Sub(o.FiredAt), "code", code, "reason", reason)
}

// record hands a record to the journal, stamped with this instance.
func (r *jobRunner) record(ctx context.Context, rec Record) {
	if r.s.cfg.Journal == nil {
		return
	}
	rec.Instance = r.s.cfg.Instance
	if err := r.s.cfg.Journal.Record(ctx, rec); err != nil && ctx.Err() == nil {
		r.s.metrics.journalErrors.Inc()
		r.log.Error("scheduler: cannot record a run in the journal; the run goes on", "run_id", rec.RunID, "kind", rec.Kind, "error", err)
	}
}

// sleep waits d on the scheduler's clock, reporting false when ctx ended.
func (r *jobRunner) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	c, stop := r.s.cfg.Clock.After(d)
	defer stop()
	select {
	case <-ctx.Done():
		return false
	case <-c:
		return true
	}
}

// sleepPoll waits one poll interval of real time.
func (r *jobRunner) sleepPoll(ctx context.Context) bool {
	t := time.NewTimer(r.s.cfg.PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// stamp formats a time for a reason a person reads.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
