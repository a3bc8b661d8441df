package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/platform/leader"
)

// ErrUnknownJob is wrapped by the error of an operation on a job that is
// not configured.
var ErrUnknownJob = errors.New("no such job")

// Defaults of Config.
const (
	DefaultPollInterval = time.Second
)

// Config configures a Scheduler.
type Config struct {
	// Leader is this instance's candidate for the scheduler's lock. Required.
	Leader leader.Runner
	// Store keeps the jobs' records, shared by every instance. Required.
	Store Store
	// Sender publishes the runs' commands. Required.
	Sender Sender
	// Outcomes reads the commands' outcomes. Required.
	Outcomes Outcomes
	// Journal receives the records of runs. Nil discards them.
	Journal Journal
	// Check checks each job's command and rendered payload when jobs are
	// set (see ValidateJobs). Nil checks only that the payload is JSON.
	Check CommandCheck
	// Clock tells the time. Default SystemClock.
	Clock Clock
	// Instance names this instance in records and metrics. Default
	// "<hostname>:<pid>".
	Instance string
	// PollInterval is how often the leader reads the outcomes of open
	// runs; it reads the jobs' records (for manual triggers taken by other
	// instances) every five intervals. Default 1s.
	PollInterval time.Duration
	// Registerer receives the scheduler's metrics. Nil registers none.
	Registerer prometheus.Registerer
	// Logger receives a record per run and per problem. Default: discard.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	if c.Instance == "" {
		host, _ := os.Hostname()
		c.Instance = host + ":" + strconv.Itoa(os.Getpid())
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every missing part at once.
func (c Config) Validate() error {
	var errs []error
	for _, p := range []struct {
		name string
		ok   bool
	}{{"leader", c.Leader != nil}, {"store", c.Store != nil}, {"sender", c.Sender != nil}, {"outcomes", c.Outcomes != nil}} {
		if !p.ok {
			errs = append(errs, fmt.Errorf("no %s given", p.name))
		}
	}
	if c.PollInterval < 0 {
		errs = append(errs, fmt.Errorf("poll interval %s: must not be negative", c.PollInterval))
	}
	return errors.Join(errs...)
}

// Scheduler fires jobs while it leads. Every instance of a cluster runs
// one; see the package documentation for how they share the work. Its
// methods are safe for concurrent use; Run is called once.
type Scheduler struct {
	cfg     Config
	metrics *metrics
	log     *slog.Logger

	mu      sync.Mutex
	jobs    map[string]Job
	changed chan struct{} // a token when the jobs changed
	// wakers are the running job runners' wake channels, while leading.
	wakers map[string]chan struct{}

	leading atomic.Bool
}

// New checks cfg and jobs and returns a scheduler. It does not contact
// the store or the lock: Run does.
func New(cfg Config, jobs map[string]Job) (*Scheduler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configure scheduler: %w", err)
	}
	m, err := newMetrics(cfg.Registerer, cfg.Instance)
	if err != nil {
		return nil, err
	}
	s := &Scheduler{cfg: cfg, metrics: m, log: cfg.Logger, changed: make(chan struct{}, 1), wakers: map[string]chan struct{}{}}
	if err := s.SetJobs(jobs); err != nil {
		return nil, err
	}
	return s, nil
}

// SetJobs replaces the jobs, once they are all valid (ValidateJobs with
// Config.Check): a job that changed restarts on the leader with its new
// declaration, resuming its open runs; a removed job stops firing (its
// record stays in the store, and it resumes if declared again).
func (s *Scheduler) SetJobs(jobs map[string]Job) error {
	if err := ValidateJobs(jobs, s.cfg.Check); err != nil {
		return fmt.Errorf("set jobs: %w", err)
	}
	next := make(map[string]Job, len(jobs))
	for name, j := range jobs {
		j.At = j.At.UTC() // one representation of the time, so that equal jobs compare equal
		next[name] = j
	}
	s.mu.Lock()
	s.jobs = next
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

// Jobs returns the jobs in force.
func (s *Scheduler) Jobs() map[string]Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.jobs)
}

// Job returns one job, or an error wrapping ErrUnknownJob.
func (s *Scheduler) Job(name string) (Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[name]
	if !ok {
		return Job{}, fmt.Errorf("job %q: %w; configured: %v", name, ErrUnknownJob, slices.Sorted(maps.Keys(s.jobs)))
	}
	return j, nil
}

// Leading reports whether this instance leads (fires the jobs) now.
func (s *Scheduler) Leading() bool { return s.leading.Load() }

// Instance names this instance.
func (s *Scheduler) Instance() string { return s.cfg.Instance }

// Run campaigns for the lock and, while it leads, fires the jobs, until
// ctx is done. A lost lead stops every job at once (their open runs stay
// in the store for the next leader) and campaigns again.
func (s *Scheduler) Run(ctx context.Context) error {
	err := s.cfg.Leader.Run(ctx, s.lead)
	if err != nil {
		return fmt.Errorf("run scheduler: %w", err)
	}
	return nil
}

// lead fires the jobs until leaderCtx ends. It returns nil then: every
// problem while leading is logged and retried, never a reason to give up
// the lead.
func (s *Scheduler) lead(leaderCtx context.Context) error {
	s.leading.Store(true)
	s.metrics.leader.Set(1)
	s.log.Info("scheduler leading: firing jobs", "instance", s.cfg.Instance)
	defer func() {
		s.leading.Store(false)
		s.metrics.leader.Set(0)
		s.log.Info("scheduler no longer leading", "instance", s.cfg.Instance, "cause", context.Cause(leaderCtx))
	}()

	runners := map[string]*jobRunner{}
	stop := func(name string) {
		r := runners[name]
		r.cancel()
		<-r.done
		delete(runners, name)
		s.mu.Lock()
		delete(s.wakers, name)
		s.mu.Unlock()
	}
	defer func() {
		for name := range runners {
			stop(name)
		}
	}()
	sync := func() {
		jobs := s.Jobs()
		for name, r := range runners {
			if j, ok := jobs[name]; !ok || j != r.job {
				stop(name)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(jobs)) {
			if _, ok := runners[name]; ok {
				continue
			}
			r := s.newRunner(name, jobs[name])
			rctx, cancel := context.WithCancel(leaderCtx)
			r.cancel = cancel
			runners[name] = r
			s.mu.Lock()
			s.wakers[name] = r.wake
			s.mu.Unlock()
			go r.run(rctx)
		}
	}
	sync()
	for {
		select {
		case <-leaderCtx.Done():
			return nil
		case <-s.changed:
			sync()
		}
	}
}

// wakeJob tells the job's runner to look at its record now, if this
// instance leads.
func (s *Scheduler) wakeJob(name string) {
	s.mu.Lock()
	w := s.wakers[name]
	s.mu.Unlock()
	if w != nil {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// TriggerReceipt says what a manual trigger asked for.
type TriggerReceipt struct {
	Job       string    `json:"job"`
	RequestID string    `json:"request_id"`
	RunID     string    `json:"run_id"`
	At        time.Time `json:"requested_at"`
}

// Trigger asks for a run of the job now, whatever its schedule, even when
// it is disabled. The request is recorded in the store and fired by the
// leader (this instance or another) within a poll interval, subject to
// the job's block strategy. by names who asked. requestID makes the
// request idempotent: the same id asks for the same run once; empty
// makes a new one.
func (s *Scheduler) Trigger(ctx context.Context, name, by, requestID string) (TriggerReceipt, error) {
	if _, err := s.Job(name); err != nil {
		return TriggerReceipt{}, fmt.Errorf("trigger: %w", err)
	}
	if requestID == "" {
		requestID = uuid.NewString()
	}
	at := s.cfg.Clock.Now().UTC()
	err := update(ctx, s.cfg.Store, name, func(st *State) (bool, error) {
		for _, r := range st.Requests {
			if r.ID == requestID {
				at = r.At
				return false, nil
			}
		}
		if slices.Contains(st.Handled, requestID) {
			return false, nil // fired already: the same run
		}
		st.Requests = append(st.Requests, Request{ID: requestID, At: at, By: by})
		return true, nil
	})
	if err != nil {
		return TriggerReceipt{}, fmt.Errorf("trigger job %s: %w", name, err)
	}
	s.wakeJob(name)
	return TriggerReceipt{Job: name, RequestID: requestID, RunID: manualRunID(name, requestID), At: at}, nil
}

// JobStatus is a job's declaration and record.
type JobStatus struct {
	Name        string  `json:"name"`
	Description string  `json:"description,omitempty"`
	Schedule    string  `json:"schedule"`
	Command     string  `json:"command"`
	Enabled     bool    `json:"enabled"`
	Block       Block   `json:"block"`
	Misfire     Misfire `json:"misfire"`
	Timeout     string  `json:"timeout"`
	MaxAttempts int     `json:"max_attempts"`
	// Next is when the job is due next; nil when disabled or never again.
	Next *time.Time `json:"next,omitempty"`
	// LastScheduled is the latest scheduled time handled.
	LastScheduled *time.Time `json:"last_scheduled,omitempty"`
	// Open are the runs under way; Queued and Requested how many wait.
	Open      []OpenRunStatus `json:"open"`
	Queued    int             `json:"queued"`
	Requested int             `json:"requested"`
}

// OpenRunStatus is a run under way.
type OpenRunStatus struct {
	RunID     string    `json:"run_id"`
	Trigger   string    `json:"trigger"`
	Scheduled time.Time `json:"scheduled"`
	FiredAt   time.Time `json:"fired_at"`
	Attempt   int       `json:"attempt"`
	CommandID string    `json:"command_id"`
}

// Status returns every job's status, by name, read from the store.
func (s *Scheduler) Status(ctx context.Context) ([]JobStatus, error) {
	jobs := s.Jobs()
	out := make([]JobStatus, 0, len(jobs))
	for _, name := range slices.Sorted(maps.Keys(jobs)) {
		st, err := s.status(ctx, name, jobs[name])
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// JobStatus returns one job's status, or an error wrapping ErrUnknownJob.
func (s *Scheduler) JobStatus(ctx context.Context, name string) (JobStatus, error) {
	j, err := s.Job(name)
	if err != nil {
		return JobStatus{}, err
	}
	return s.status(ctx, name, j)
}

func (s *Scheduler) status(ctx context.Context, name string, j Job) (JobStatus, error) {
	rec, _, err := s.cfg.Store.Load(ctx, name)
	if err != nil {
		return JobStatus{}, err
	}
	st := JobStatus{
		Name: name, Description: j.Description, Schedule: j.Describe(), Command: j.Command, Enabled: j.Enabled,
		Block: j.Block, Misfire: j.Misfire, Timeout: j.Timeout.String(), MaxAttempts: j.Retry.MaxAttempts,
		Open: []OpenRunStatus{}, Queued: len(rec.Queue), Requested: len(rec.Requests),
	}
	if !rec.Last.IsZero() {
		last := rec.Last.UTC()
		st.LastScheduled = &last
	}
	if sched, err := j.Schedule(); err == nil && j.Enabled {
		from := rec.Last
		if now := s.cfg.Clock.Now(); from.IsZero() || rec.Disabled {
			from = now
		}
		if n := sched.Next(from); !n.IsZero() {
			st.Next = &n
		}
	}
	for _, r := range rec.Open {
		st.Open = append(st.Open, OpenRunStatus{RunID: r.RunID, Trigger: r.Trigger, Scheduled: r.Scheduled.UTC(),
			FiredAt: r.FiredAt.UTC(), Attempt: r.Attempt, CommandID: r.CommandID})
	}
	return st, nil
}

// update applies change to the job's record with compare-and-set, loading
// it again and redoing the change after a conflict. change reports
// whether it changed anything; nothing is written when it did not.
func update(ctx context.Context, store Store, job string, change func(st *State) (bool, error)) error {
	for {
		st, version, err := store.Load(ctx, job)
		if err != nil {
			return err
		}
		changed, err := change(&st)
		if err != nil || !changed {
			return err
		}
		err = store.Save(ctx, job, st, version)
		if !errors.Is(err, ErrConflict) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
