package main

// The scheduler (platform/scheduler) wired to the domain: jobs declared in
// the jobs section of the rules, their commands routed to the topics
// package events names and checked against the JSON Schemas, their outcomes
// read from the command log, their runs published on jobs.runs for the run
// history (projections/jobs), and the orders commands the example jobs
// send (handlers/orders, jobs.go there). See docs/scheduling.md.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/handlers/orders"
	"github.com/millrace/millrace/platform/auth"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/commandstore"
	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/leader"
	"github.com/millrace/millrace/platform/scheduler"
	"github.com/millrace/millrace/platform/schema"
	commandlog "github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/jobs"
	"github.com/millrace/millrace/schemas"
)

// schedulerLockKey names the scheduler's leader lock: every scheduler
// instance of a cluster competes for it (in Consul:
// millrace/leader/scheduler).
const schedulerLockKey = "scheduler"

// checkJobCommand checks a job's command as the scheduler will publish it:
// a command type package events knows, and a payload its JSON Schema
// accepts. A validator is compiled per check: jobs are checked when the
// rules change, not per firing.
func checkJobCommand(commandType string, payload []byte) error {
	t, ok := events.Lookup(commandType)
	if !ok || t.Kind != events.KindCommand {
		var known []string
		for _, t := range events.Types() {
			if t.Kind == events.KindCommand {
				known = append(known, t.Name)
			}
		}
		return fmt.Errorf("%q is not a command millrace knows; known: %s", commandType, strings.Join(known, ", "))
	}
	v, err := schema.New(schemas.FS())
	if err != nil {
		return fmt.Errorf("compile schemas: %w", err)
	}
	if err := v.ValidateJSON(commandType, payload); err != nil {
		return fmt.Errorf("the payload rendered for a sample firing, %s, is not a valid %s: %w", payload, commandType, err)
	}
	return nil
}

// validateJobs checks the jobs section of the rules.
func validateJobs(jobs map[string]scheduler.Job) error {
	return scheduler.ValidateJobs(jobs, checkJobCommand)
}

// eventsRouter routes a command type to its topic (events.Lookup) and a
// payload to its partition key (the typed command's Key, as the gateway
// keys it).
type eventsRouter struct{}

func (eventsRouter) Route(commandType string, payload []byte) (string, string, error) {
	t, ok := events.Lookup(commandType)
	if !ok || t.Kind != events.KindCommand {
		return "", "", fmt.Errorf("%s is not a command", commandType)
	}
	cmd := t.New()
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cmd); err != nil {
		return "", "", fmt.Errorf("decode %s payload: %w", commandType, err)
	}
	return t.Topic, cmd.Key(), nil
}

// commandReader is what the scheduler reads outcomes from: the command
// log (*commands.Projection), or a remote query edge (upstream.Client).
type commandReader interface {
	Get(ctx context.Context, id string) (commandlog.Outcome, error)
}

// commandOutcomes reads the scheduler's outcomes from the command log.
type commandOutcomes struct{ log commandReader }

func (o commandOutcomes) Outcome(ctx context.Context, id string) (scheduler.Outcome, error) {
	out, err := o.log.Get(ctx, id)
	if errors.Is(err, commandlog.ErrNotFound) {
		return scheduler.Outcome{Status: scheduler.OutcomePending}, nil
	}
	if err != nil {
		return scheduler.Outcome{}, err
	}
	switch out.Status {
	case commandlog.StatusSucceeded:
		return scheduler.Outcome{Status: scheduler.OutcomeSucceeded}, nil
	case commandlog.StatusRejected:
		return scheduler.Outcome{Status: scheduler.OutcomeRejected, Code: out.Code, Reason: out.Reason}, nil
	}
	return scheduler.Outcome{Status: scheduler.OutcomePending}, nil
}

// runJournal publishes the scheduler's records as events on jobs.runs,
// with ids derived from the record, so that a record a new leader repeats
// is the same event.
type runJournal struct {
	pub message.Publisher
}

func (j runJournal) Record(ctx context.Context, r scheduler.Record) error {
	var (
		e  events.Message
		id string
	)
	switch r.Kind {
	case scheduler.RecordFired:
		e = events.JobFired{Job: r.Job, RunID: r.RunID, Trigger: r.Trigger, ScheduledAt: r.ScheduledAt.UTC(), FiredAt: r.At.UTC(),
			RunFiredAt: r.FiredAt.UTC(), Attempt: r.Attempt, CommandID: r.CommandID, CommandType: r.CommandType, Instance: r.Instance}
		id = recordID(r.CommandID, "fired")
	case scheduler.RecordFinished:
		e = events.JobFinished{Job: r.Job, RunID: r.RunID, Trigger: r.Trigger, ScheduledAt: r.ScheduledAt.UTC(), FiredAt: r.FiredAt.UTC(),
			FinishedAt: r.At.UTC(), Attempts: r.Attempt, CommandID: r.CommandID, CommandType: r.CommandType,
			Outcome: r.Outcome, Code: r.Code, Reason: r.Reason, Instance: r.Instance}
		id = recordID(r.RunID, "finished")
	case scheduler.RecordSkipped:
		e = events.JobSkipped{Job: r.Job, RunID: r.RunID, Trigger: r.Trigger, ScheduledAt: r.ScheduledAt.UTC(),
			LastScheduledAt: r.LastScheduledAt.UTC(), Missed: r.Missed, Reason: r.Reason, SkippedAt: r.At.UTC(), Instance: r.Instance}
		id = recordID(r.RunID, "skipped")
	default:
		return fmt.Errorf("record a run: unknown kind %q", r.Kind)
	}
	m := cloudevents.Marshaler{Source: events.SourceScheduler, NewUUID: func() string { return id }, Now: func() time.Time { return r.At }}
	msg, err := m.Marshal(e)
	if err != nil {
		return err
	}
	msg.Metadata.Set(cloudevents.CorrelationID, r.RunID)
	msg.SetContext(ctx)
	if err := j.pub.Publish(events.TopicJobRuns, msg); err != nil {
		return fmt.Errorf("publish %s of run %s: %w", e.Name(), r.RunID, err)
	}
	return nil
}

// recordID is the event id of a run's record.
func recordID(id, kind string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://millrace.dev/scheduler/records/"+kind+"/"+id)).String()
}

// runHistory reads the run history (projections/jobs) for the admin API.
type runHistory struct{ p *jobs.Projection }

func (h runHistory) Runs(ctx context.Context, job string, limit int) ([]scheduler.Run, error) {
	runs, err := h.p.Runs(ctx, job, limit)
	if err != nil {
		return nil, err
	}
	out := make([]scheduler.Run, 0, len(runs))
	for _, r := range runs {
		out = append(out, toSchedulerRun(r))
	}
	return out, nil
}

func (h runHistory) Run(ctx context.Context, runID string) (scheduler.Run, bool, error) {
	r, ok, err := h.p.Run(ctx, runID)
	if err != nil || !ok {
		return scheduler.Run{}, ok, err
	}
	return toSchedulerRun(r), true, nil
}

func toSchedulerRun(r jobs.Run) scheduler.Run {
	out := scheduler.Run{
		RunID: r.RunID, Job: r.Job, Trigger: r.Trigger, ScheduledAt: r.ScheduledAt, Outcome: r.Outcome,
		Attempts: r.Attempts, CommandIDs: r.CommandIDs, Code: r.Code, Reason: r.Reason, Missed: r.Missed, Instance: r.Instance,
	}
	if !r.FiredAt.IsZero() {
		t := r.FiredAt
		out.FiredAt = &t
		out.Lateness = roundShow(r.Lateness()).String()
	}
	if !r.FinishedAt.IsZero() {
		t := r.FinishedAt
		out.FinishedAt = &t
		if !r.FiredAt.IsZero() {
			out.Duration = roundShow(r.Duration()).String()
		}
	}
	if !r.LastScheduledAt.IsZero() {
		t := r.LastScheduledAt
		out.LastScheduledAt = &t
	}
	return out
}

// roundShow rounds a duration for people: to the millisecond, or to the
// microsecond below 10 ms.
func roundShow(d time.Duration) time.Duration {
	if d < 10*time.Millisecond && d > -10*time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// schedulerPollInterval is how often the leader reads its runs' outcomes
// from the command log (a SQLite read, or a query edge's) and the jobs'
// records (manual triggers taken by other instances).
const schedulerPollInterval = 200 * time.Millisecond

// schedulerDeps are what buildScheduler wires the scheduler to.
type schedulerDeps struct {
	// leaders hands out the leader lock (wire_discovery.go).
	leaders func(key string) (leader.Runner, error)
	// getenv finds Consul (CONSUL_HTTP_ADDR): its KV keeps the jobs'
	// records beside its lock. Without it the records are in stateDB.
	getenv func(string) string
	env    string
	// stateDB keeps the jobs' records without Consul; stateFile names it.
	stateDB   *sql.DB
	stateFile string
	// publisher carries the commands and the run records.
	publisher  message.Publisher
	commands   commandReader
	history    *jobs.Projection
	jobs       map[string]scheduler.Job
	instance   string
	registerer prometheus.Registerer
	logger     *slog.Logger
}

// schedulerParts are the scheduler and its admin API.
type schedulerParts struct {
	sched *scheduler.Scheduler
	admin http.Handler
	desc  string
}

// buildScheduler builds the scheduler with the jobs of the rules in force.
func buildScheduler(ctx context.Context, d schedulerDeps) (*schedulerParts, error) {
	lock, err := d.leaders(schedulerLockKey)
	if err != nil {
		return nil, fmt.Errorf("scheduler leader lock: %w", err)
	}
	logger := d.logger.With("component", "scheduler")
	var (
		store scheduler.Store
		desc  string
	)
	if d.getenv(consul.EnvHTTPAddr) != "" {
		ccfg, err := consul.ConfigFromEnv(d.getenv)
		if err != nil {
			return nil, err
		}
		client, err := consul.NewClient(ccfg)
		if err != nil {
			return nil, err
		}
		cs, err := scheduler.NewConsulStore(client, "millrace/"+d.env+"/scheduler/jobs")
		if err != nil {
			return nil, err
		}
		store, desc = cs, "leader lock and records in Consul ("+cs.Key("<job>")+")"
	} else {
		ss, err := scheduler.NewSQLiteStore(ctx, d.stateDB)
		if err != nil {
			return nil, err
		}
		store, desc = ss, "in-process leader lock, records in "+d.stateFile
	}
	s, err := scheduler.New(scheduler.Config{
		Leader:       lock,
		Store:        store,
		Sender:       scheduler.NewCloudEventsSender(d.publisher, eventsRouter{}, events.SourceScheduler),
		Outcomes:     commandOutcomes{log: d.commands},
		Journal:      runJournal{pub: d.publisher},
		Check:        checkJobCommand,
		Instance:     d.instance,
		PollInterval: schedulerPollInterval,
		Registerer:   d.registerer,
		Logger:       logger,
	}, d.jobs)
	if err != nil {
		return nil, fmt.Errorf("configuration: jobs: %w", err)
	}
	var history scheduler.History
	if d.history != nil {
		history = runHistory{p: d.history}
	}
	admin := scheduler.AdminHandler(s, history, scheduler.AdminOptions{
		Logger: logger,
		Who: func(r *http.Request) string {
			if p, ok := auth.FromContext(r.Context()); ok && p.Method != auth.MethodNone {
				return p.Subject
			}
			return auth.AnonymousSubject
		},
	})
	return &schedulerParts{sched: s, admin: admin, desc: desc}, nil
}

// withJobsAdmin serves the scheduler's admin API under /admin/jobs beside
// next.
func withJobsAdmin(sp *schedulerParts, next http.Handler) http.Handler {
	if sp == nil {
		return next
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/jobs", sp.admin)
	mux.Handle("/admin/jobs/", sp.admin)
	mux.Handle("/", next)
	return mux
}

// orderJobHandlers are the orders context's handlers of the commands the
// example jobs send (sweeping unpaid orders, closing a sales day), to be
// added to the orders handler group. Their aggregates live in store; the
// orders they look for are read from the order aggregates in stateDB.
func orderJobHandlers(store *commandstore.Store, stateDB *sql.DB) ([]cqrs.GroupEventHandler, error) {
	dispatch, err := commandstore.NewAggregate[orders.Sweeper, events.Message](store, commandstore.AggregateConfig{
		Name: "unpaid-sweeper", Handler: "orders-sweep", Topic: events.TopicOrderCommands, Source: events.SourceOrders,
	})
	if err != nil {
		return nil, err
	}
	sweeper, err := commandstore.NewAggregate[orders.Sweeper, events.Message](store, commandstore.AggregateConfig{
		Name: "unpaid-sweeper", Handler: "orders", Topic: events.TopicOrderEvents, Source: events.SourceOrders,
	})
	if err != nil {
		return nil, err
	}
	ledger, err := commandstore.NewAggregate[orders.SalesLedger, events.Message](store, commandstore.AggregateConfig{
		Name: "sales-ledger", Handler: "orders", Topic: events.TopicOrderEvents, Source: events.SourceOrders,
	})
	if err != nil {
		return nil, err
	}
	q := orderState{db: stateDB}
	p, err := orders.NewPeriodic(orders.PeriodicDeps{SweepDispatch: dispatch, Sweeper: sweeper, Ledger: ledger, Unpaid: q, Sales: q})
	if err != nil {
		return nil, err
	}
	return p.GroupHandlers(), nil
}

// orderState reads the orders context's own state: the order aggregates
// platform/commandstore keeps as JSON in its aggregates table. It is the
// command side's truth (no read model's lag), and it is where a worker of
// the orders context runs.
type orderState struct{ db *sql.DB }

// UnpaidPlacedBefore implements orders.UnpaidOrders.
func (q orderState) UnpaidPlacedBefore(ctx context.Context, before time.Time, limit int) ([]string, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT id, state FROM aggregates
WHERE aggregate = 'order' AND json_extract(state, '$.status') = ?`, string(orders.StatusPlaced))
	if err != nil {
		return nil, fmt.Errorf("find unpaid orders: %w", err)
	}
	defer rows.Close()
	type found struct {
		id     string
		placed time.Time
	}
	var all []found
	for rows.Next() {
		var (
			id    string
			state []byte
			o     orders.Order
		)
		if err := rows.Scan(&id, &state); err != nil {
			return nil, fmt.Errorf("find unpaid orders: %w", err)
		}
		if err := json.Unmarshal(state, &o); err != nil {
			return nil, fmt.Errorf("find unpaid orders: decode order %s: %w", id, err)
		}
		if o.Status == orders.StatusPlaced && o.PlacedAt.Before(before) {
			all = append(all, found{id, o.PlacedAt})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find unpaid orders: %w", err)
	}
	sort.Slice(all, func(i, j int) bool {
		if !all[i].placed.Equal(all[j].placed) {
			return all[i].placed.Before(all[j].placed)
		}
		return all[i].id < all[j].id
	})
	ids := make([]string, 0, min(len(all), limit))
	for _, f := range all[:min(len(all), limit)] {
		ids = append(ids, f.id)
	}
	return ids, nil
}

// SalesOn implements orders.DailySales from the order aggregates, with the
// sales read model's rules (projections/sales): an order counts as paid on
// the UTC day of its payment, in its currency; a paid order cancelled
// later is refunded on the day of its cancellation.
func (q orderState) SalesOn(ctx context.Context, date string) ([]events.DaySales, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT id, state FROM aggregates
WHERE aggregate = 'order' AND (substr(json_extract(state, '$.paid_at'), 1, 10) = ? OR substr(json_extract(state, '$.cancelled_at'), 1, 10) = ?)`,
		date, date)
	if err != nil {
		return nil, fmt.Errorf("read the sales of %s: %w", date, err)
	}
	defer rows.Close()
	byCurrency := map[string]*events.DaySales{}
	for rows.Next() {
		var (
			id    string
			state []byte
			o     orders.Order
		)
		if err := rows.Scan(&id, &state); err != nil {
			return nil, fmt.Errorf("read the sales of %s: %w", date, err)
		}
		if err := json.Unmarshal(state, &o); err != nil {
			return nil, fmt.Errorf("read the sales of %s: decode order %s: %w", date, id, err)
		}
		if o.PaidAt.IsZero() {
			continue // cancelled unpaid: no sale, no refund
		}
		d := byCurrency[o.Currency]
		if d == nil {
			d = &events.DaySales{Currency: o.Currency}
			byCurrency[o.Currency] = d
		}
		if o.PaidAt.UTC().Format(time.DateOnly) == date {
			d.OrdersPaid++
			d.GrossCents += o.TotalCents
		}
		if o.Status == orders.StatusCancelled && o.CancelledAt.UTC().Format(time.DateOnly) == date {
			d.OrdersRefunded++
			d.RefundedCents += o.TotalCents
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the sales of %s: %w", date, err)
	}
	out := make([]events.DaySales, 0, len(byCurrency))
	for _, d := range byCurrency {
		d.NetCents = d.GrossCents - d.RefundedCents
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Currency < out[j].Currency })
	return out, nil
}
