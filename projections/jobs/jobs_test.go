package jobs_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/jobs"
	"github.com/millrace/millrace/projections/projectiontest"
)

const (
	run1 = "5b0f8a0e-1111-5c1e-9a55-0d1e3f7a9b10"
	run2 = "5b0f8a0e-2222-5c1e-9a55-0d1e3f7a9b10"
	skip = "5b0f8a0e-3333-5c1e-9a55-0d1e3f7a9b10"
	cmd1 = "0f8e7d6c-0001-4392-8170-6f5e4d3c2b1a"
	cmd2 = "0f8e7d6c-0002-4392-8170-6f5e4d3c2b1a"
)

var t0 = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)

// history folds msgs, each as a delivered message (an event repeated at
// a new offset is applied again, as a re-published record would be).
func history(t *testing.T, msgs ...events.Message) *jobs.Projection {
	t.Helper()
	db := projectiontest.OpenDB(t)
	p := jobs.New(db)
	r, err := projections.NewRunner(context.Background(), db, p, nil)
	if err != nil {
		t.Fatalf("new runner: %v", err)
	}
	var log projectiontest.Log
	for _, m := range msgs {
		if err := r.Handle(log.Append(projectiontest.Message(t, m), events.TopicJobRuns, 0)); err != nil {
			t.Fatalf("handle %s: %v", m.Name(), err)
		}
	}
	return p
}

func fired(run string, attempt int, cmd string, scheduled, runFired, at time.Time) events.JobFired {
	return events.JobFired{Job: "sweep", RunID: run, Trigger: "schedule", ScheduledAt: scheduled, FiredAt: at, RunFiredAt: runFired,
		Attempt: attempt, CommandID: cmd, CommandType: "orders.sweep-unpaid-orders.v1", Instance: "a"}
}

func TestRunHistory(t *testing.T) {
	late := t0.Add(1500 * time.Millisecond)
	cases := []struct {
		name  string
		msgs  []events.Message
		check func(t *testing.T, r jobs.Run)
	}{
		{"a fired run is running, with its lateness", []events.Message{fired(run1, 1, cmd1, t0, late, late)}, func(t *testing.T, r jobs.Run) {
			if r.Outcome != jobs.OutcomeRunning || r.Lateness() != 1500*time.Millisecond || r.Attempts != 1 || r.Duration() != 0 {
				t.Errorf("run %+v: want running, 1.5s late, 1 attempt, no duration yet", r)
			}
		}},
		{"a finished run has its outcome and duration", []events.Message{
			fired(run1, 1, cmd1, t0, late, late),
			events.JobFinished{Job: "sweep", RunID: run1, Trigger: "schedule", ScheduledAt: t0, FiredAt: late, FinishedAt: late.Add(2 * time.Second),
				Attempts: 1, CommandID: cmd1, CommandType: "orders.sweep-unpaid-orders.v1", Outcome: "succeeded", Instance: "a"},
		}, func(t *testing.T, r jobs.Run) {
			if r.Outcome != "succeeded" || r.Duration() != 2*time.Second || r.Lateness() != 1500*time.Millisecond {
				t.Errorf("run %+v: want succeeded after 2s, 1.5s late", r)
			}
		}},
		{"a retried run keeps its first firing and every command once", []events.Message{
			fired(run1, 1, cmd1, t0, late, late),
			fired(run1, 2, cmd2, t0, late, late.Add(time.Minute)),
			fired(run1, 2, cmd2, t0, late, late.Add(time.Minute)), // repeated by a new leader
			fired(run1, 1, cmd1, t0, late, late),                  // an old attempt, late
		}, func(t *testing.T, r jobs.Run) {
			if r.Attempts != 2 || !slices.Equal(r.CommandIDs, []string{cmd1, cmd2}) || !r.FiredAt.Equal(late) || r.Outcome != jobs.OutcomeRunning {
				t.Errorf("run %+v: want 2 attempts, both ids once, fired at the first attempt", r)
			}
		}},
		{"a finish before its firing record still ends the run", []events.Message{
			events.JobFinished{Job: "sweep", RunID: run1, Trigger: "schedule", ScheduledAt: t0, FiredAt: late, FinishedAt: late.Add(time.Second),
				Attempts: 1, CommandID: cmd1, CommandType: "orders.sweep-unpaid-orders.v1", Outcome: "rejected", Code: "invalid_command", Reason: "no", Instance: "a"},
			fired(run1, 1, cmd1, t0, late, late),
		}, func(t *testing.T, r jobs.Run) {
			if r.Outcome != "rejected" || r.Code != "invalid_command" {
				t.Errorf("run %+v: want rejected, not running again", r)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := history(t, c.msgs...)
			r, ok, err := p.Run(context.Background(), run1)
			if err != nil || !ok {
				t.Fatalf("run %s = %v, %v", run1, ok, err)
			}
			c.check(t, r)
		})
	}
}

func TestRunsNewestFirst(t *testing.T) {
	p := history(t,
		fired(run1, 1, cmd1, t0, t0, t0),
		events.JobSkipped{Job: "sweep", RunID: skip, Trigger: "misfire", ScheduledAt: t0.Add(time.Minute), LastScheduledAt: t0.Add(4 * time.Minute),
			Missed: 4, Reason: "missed while no scheduler led", SkippedAt: t0.Add(6 * time.Minute), Instance: "b"},
		fired(run2, 1, cmd2, t0.Add(5*time.Minute), t0.Add(6*time.Minute), t0.Add(6*time.Minute)),
		events.JobFired{Job: "report", RunID: "5b0f8a0e-4444-5c1e-9a55-0d1e3f7a9b10", Trigger: "manual", ScheduledAt: t0, FiredAt: t0,
			RunFiredAt: t0, Attempt: 1, CommandID: cmd1, CommandType: "orders.close-sales-day.v1", Instance: "a"},
	)
	runs, err := p.Runs(context.Background(), "sweep", 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.RunID)
	}
	if want := []string{run2, skip, run1}; !slices.Equal(ids, want) {
		t.Fatalf("runs %v, want the sweep's runs newest first %v", ids, want)
	}
	if s := runs[1]; s.Outcome != jobs.OutcomeSkipped || s.Missed != 4 || s.Lateness() != 0 {
		t.Errorf("skipped record %+v: want skipped, 4 missed, no lateness", s)
	}
	if late := runs[0].Lateness(); late != time.Minute {
		t.Errorf("misfired run lateness %s, want 1m", late)
	}
	if got, _ := p.Runs(context.Background(), "sweep", 1); len(got) != 1 || got[0].RunID != run2 {
		t.Errorf("limit 1 = %v, want the newest run only", got)
	}
	if _, ok, err := p.Run(context.Background(), "nope"); ok || err != nil {
		t.Errorf("unknown run = %v, %v; want not found", ok, err)
	}
}
