package events

import "time"

// The run history of scheduled jobs (platform/scheduler): every run fired,
// finished or skipped, on TopicJobRuns keyed by job name, folded by
// projections/jobs. The scheduler publishes them with deterministic ids, so
// that a record a new leader repeats is applied once.

// TopicJobRuns carries the records of scheduled jobs' runs.
const TopicJobRuns = "jobs.runs"

// SourceScheduler is the CloudEvents source of what the scheduler publishes.
const SourceScheduler = "/millrace/scheduler"

// JobFired records that one attempt of a run published its command.
type JobFired struct {
	Job   string `json:"job"`
	RunID string `json:"run_id"`
	// Trigger is schedule, misfire, queue or manual.
	Trigger string `json:"trigger"`
	// ScheduledAt is the time the run was due (for a manual run, when it
	// was asked for).
	ScheduledAt time.Time `json:"scheduled_at"`
	// FiredAt is when this attempt was published; RunFiredAt when the
	// run's first attempt was. RunFiredAt − ScheduledAt is the run's
	// lateness.
	FiredAt     time.Time `json:"fired_at"`
	RunFiredAt  time.Time `json:"run_fired_at"`
	Attempt     int       `json:"attempt"`
	CommandID   string    `json:"command_id"`
	CommandType string    `json:"command_type"`
	Instance    string    `json:"instance"`
}

func (JobFired) Name() string  { return "jobs.job-fired.v1" }
func (e JobFired) Key() string { return e.Job }

// JobFinished records how a run ended.
type JobFinished struct {
	Job         string    `json:"job"`
	RunID       string    `json:"run_id"`
	Trigger     string    `json:"trigger"`
	ScheduledAt time.Time `json:"scheduled_at"`
	// FiredAt is when the run's first attempt was published.
	FiredAt    time.Time `json:"fired_at"`
	FinishedAt time.Time `json:"finished_at"`
	Attempts   int       `json:"attempts"`
	// CommandID and CommandType are the last attempt's command.
	CommandID   string `json:"command_id"`
	CommandType string `json:"command_type"`
	// Outcome is succeeded, rejected, timed_out or failed; Code and Reason
	// explain the last failure.
	Outcome  string `json:"outcome"`
	Code     string `json:"code,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Instance string `json:"instance"`
}

func (JobFinished) Name() string  { return "jobs.job-finished.v1" }
func (e JobFinished) Key() string { return e.Job }

// JobSkipped records due times that did not run: missed while no scheduler
// led (misfire policy), or blocked by a run still open (block strategy).
type JobSkipped struct {
	Job   string `json:"job"`
	RunID string `json:"run_id"`
	// Trigger is what would have started them.
	Trigger string `json:"trigger"`
	// ScheduledAt and LastScheduledAt are the first and last time skipped,
	// Missed how many.
	ScheduledAt     time.Time `json:"scheduled_at"`
	LastScheduledAt time.Time `json:"last_scheduled_at"`
	Missed          int       `json:"missed"`
	Reason          string    `json:"reason"`
	SkippedAt       time.Time `json:"skipped_at"`
	Instance        string    `json:"instance"`
}

func (JobSkipped) Name() string  { return "jobs.job-skipped.v1" }
func (e JobSkipped) Key() string { return e.Job }
