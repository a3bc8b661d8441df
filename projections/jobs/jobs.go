// Package jobs is the run history of scheduled jobs: one row per run, with
// its scheduled time, when it actually fired, its lateness, its attempts and
// their commands, its outcome and its duration. It folds the records the
// scheduler publishes on events.TopicJobRuns (JobFired, JobFinished,
// JobSkipped), run by a projections.Runner, and answers
// `millrace jobs history` and GET /admin/jobs/{name}/history.
//
// A record may come twice (a new leader repeats what the old one may have
// published) and in any order across attempts: the fold keeps the first
// firing time, the highest attempt, every command id once, and a final
// outcome over "running".
//
// Its table carries the projection version in its name (jobs_v1_runs, …;
// see projections.Table); queries read the active version.
package jobs

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/projections"
)

// Outcomes of a run, as the history says them.
const (
	OutcomeRunning = "running"
	OutcomeSkipped = "skipped"
)

// Run is one run of a job.
type Run struct {
	RunID       string
	Job         string
	Trigger     string
	CommandType string
	ScheduledAt time.Time
	// FiredAt is when the first attempt was published; zero for skipped
	// times.
	FiredAt time.Time
	// Outcome is running, succeeded, rejected, timed_out, failed or skipped.
	Outcome    string
	Attempts   int
	CommandIDs []string
	Code       string
	Reason     string
	// FinishedAt is zero while the run is open.
	FinishedAt time.Time
	// Missed and LastScheduledAt describe skipped times.
	Missed          int
	LastScheduledAt time.Time
	Instance        string
}

// Lateness is how long after its scheduled time the run fired; 0 when it
// did not fire.
func (r Run) Lateness() time.Duration {
	if r.FiredAt.IsZero() {
		return 0
	}
	return r.FiredAt.Sub(r.ScheduledAt)
}

// Duration is how long the run took, from its first firing to its end; 0
// while it is open.
func (r Run) Duration() time.Duration {
	if r.FiredAt.IsZero() || r.FinishedAt.IsZero() {
		return 0
	}
	return r.FinishedAt.Sub(r.FiredAt)
}

// Projection is the run history. Apply is called by a projections.Runner;
// the query methods are safe for concurrent use with it and with each
// other. It does not own the database.
type Projection struct {
	db *sql.DB
}

// New returns the run history, reading and writing db.
func New(db *sql.DB) *Projection { return &Projection{db: db} }

// Name implements projections.Projection.
func (*Projection) Name() string { return "jobs" }

// Topics implements projections.Projection.
func (*Projection) Topics() []string { return []string{events.TopicJobRuns} }

// Times are Unix nanoseconds, 0 for none.
const setupSQL = `
CREATE TABLE IF NOT EXISTS %[1]s (
	run_id            TEXT PRIMARY KEY,
	job               TEXT    NOT NULL,
	trigger           TEXT    NOT NULL,
	command_type      TEXT    NOT NULL,
	scheduled_at      INTEGER NOT NULL,
	fired_at          INTEGER NOT NULL,
	outcome           TEXT    NOT NULL,
	attempts          INTEGER NOT NULL,
	command_ids       TEXT    NOT NULL,
	code              TEXT    NOT NULL,
	reason            TEXT    NOT NULL,
	finished_at       INTEGER NOT NULL,
	missed            INTEGER NOT NULL,
	last_scheduled_at INTEGER NOT NULL,
	instance          TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS %[2]s ON %[1]s (job, scheduled_at);`

// Setup implements projections.Projection.
func (*Projection) Setup(ctx context.Context, tx *projections.Tx) error {
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(setupSQL, tx.Table("runs"), tx.Table("runs_by_job"))); err != nil {
		return fmt.Errorf("create job runs table: %w", err)
	}
	return nil
}

// Apply implements projections.Projection.
func (*Projection) Apply(ctx context.Context, tx *projections.Tx, e projections.Event) error {
	table := tx.Table("runs")
	switch d := e.Data.(type) {
	case *events.JobFired:
		return update(ctx, tx, table, d.RunID, func(r *Run) {
			r.Job, r.Trigger, r.CommandType, r.ScheduledAt = d.Job, d.Trigger, d.CommandType, d.ScheduledAt.UTC()
			if first := d.RunFiredAt.UTC(); r.FiredAt.IsZero() || (!first.IsZero() && first.Before(r.FiredAt)) {
				r.FiredAt = first
			}
			r.Attempts = max(r.Attempts, d.Attempt)
			addID(r, d.CommandID)
			if r.Outcome == "" {
				r.Outcome = OutcomeRunning
			}
			r.Instance = d.Instance
		})
	case *events.JobFinished:
		return update(ctx, tx, table, d.RunID, func(r *Run) {
			r.Job, r.Trigger, r.CommandType, r.ScheduledAt = d.Job, d.Trigger, d.CommandType, d.ScheduledAt.UTC()
			if r.FiredAt.IsZero() {
				r.FiredAt = d.FiredAt.UTC()
			}
			r.Attempts = max(r.Attempts, d.Attempts)
			addID(r, d.CommandID)
			r.Outcome, r.Code, r.Reason, r.FinishedAt = d.Outcome, d.Code, d.Reason, d.FinishedAt.UTC()
			r.Instance = d.Instance
		})
	case *events.JobSkipped:
		return update(ctx, tx, table, d.RunID, func(r *Run) {
			r.Job, r.Trigger, r.ScheduledAt = d.Job, d.Trigger, d.ScheduledAt.UTC()
			r.LastScheduledAt, r.Missed = d.LastScheduledAt.UTC(), d.Missed
			r.Outcome, r.Reason, r.FinishedAt = OutcomeSkipped, d.Reason, d.SkippedAt.UTC()
			r.Instance = d.Instance
		})
	}
	return nil
}

func addID(r *Run, id string) {
	if id != "" && !slices.Contains(r.CommandIDs, id) {
		r.CommandIDs = append(r.CommandIDs, id)
	}
}

// Runs returns the job's latest runs, by scheduled time, newest first, at
// most limit.
func (p *Projection) Runs(ctx context.Context, job string, limit int) ([]Run, error) {
	var out []Run
	err := projections.Read(ctx, p.db, p.Name(), func(tx *sql.Tx, v int) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+columns+` FROM `+projections.Table(p.Name(), v, "runs")+`
WHERE job = ? ORDER BY scheduled_at DESC, run_id LIMIT ?`, job, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scan(rows)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read the runs of job %s: %w", job, err)
	}
	return out, nil
}

// Run returns one run, and false when the history does not know it.
func (p *Projection) Run(ctx context.Context, runID string) (Run, bool, error) {
	var (
		r     Run
		found bool
	)
	err := projections.Read(ctx, p.db, p.Name(), func(tx *sql.Tx, v int) error {
		var err error
		r, found, err = load(ctx, tx, projections.Table(p.Name(), v, "runs"), runID)
		return err
	})
	if err != nil {
		return Run{}, false, fmt.Errorf("read run %s: %w", runID, err)
	}
	return r, found, nil
}

const columns = `run_id, job, trigger, command_type, scheduled_at, fired_at, outcome, attempts, command_ids,
	code, reason, finished_at, missed, last_scheduled_at, instance`

type scanner interface{ Scan(dest ...any) error }

func scan(s scanner) (Run, error) {
	var (
		r                                   Run
		ids                                 string
		scheduled, fired, finished, lastSch int64
	)
	if err := s.Scan(&r.RunID, &r.Job, &r.Trigger, &r.CommandType, &scheduled, &fired, &r.Outcome, &r.Attempts, &ids,
		&r.Code, &r.Reason, &finished, &r.Missed, &lastSch, &r.Instance); err != nil {
		return Run{}, err
	}
	if err := json.Unmarshal([]byte(ids), &r.CommandIDs); err != nil {
		return Run{}, fmt.Errorf("decode the command ids of run %s: %w", r.RunID, err)
	}
	if len(r.CommandIDs) == 0 {
		r.CommandIDs = nil
	}
	r.ScheduledAt, r.FiredAt, r.FinishedAt, r.LastScheduledAt = fromNanos(scheduled), fromNanos(fired), fromNanos(finished), fromNanos(lastSch)
	return r, nil
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func load(ctx context.Context, q queryer, table, runID string) (Run, bool, error) {
	r, err := scan(q.QueryRowContext(ctx, `SELECT `+columns+` FROM `+table+` WHERE run_id = ?`, runID))
	if errors.Is(err, sql.ErrNoRows) {
		return Run{}, false, nil
	}
	if err != nil {
		return Run{}, false, fmt.Errorf("load run %s: %w", runID, err)
	}
	return r, true, nil
}

// update loads a run (a new one if unknown), changes it and stores it.
func update(ctx context.Context, tx *projections.Tx, table, runID string, change func(*Run)) error {
	r, _, err := load(ctx, tx, table, runID)
	if err != nil {
		return err
	}
	r.RunID = runID
	change(&r)
	ids := r.CommandIDs
	if ids == nil {
		ids = []string{}
	}
	data, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("encode the command ids of run %s: %w", runID, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO `+table+` (`+columns+`)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.RunID, r.Job, r.Trigger, r.CommandType, nanos(r.ScheduledAt), nanos(r.FiredAt), r.Outcome, r.Attempts, string(data),
		r.Code, r.Reason, nanos(r.FinishedAt), r.Missed, nanos(r.LastScheduledAt), r.Instance); err != nil {
		return fmt.Errorf("store run %s: %w", runID, err)
	}
	return nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
