// Package scheduler fires jobs that publish commands: cron expressions with
// seconds, fixed intervals and one-shot times, declared in configuration and
// changed while the process runs. It is millrace's XXL-Job, with one rule
// above all: each scheduled time of a job fires exactly once across every
// scheduler instance of a cluster.
//
// # Exactly one firing per scheduled time
//
// Every instance runs [Scheduler.Run]; only the one holding the leader lock
// (a leader.Runner: platform/consul's LeaderLock across machines, leader.Local
// in one process) fires. Before it publishes a firing, the leader records it
// in the [Store] (Consul KV or SQLite), compare-and-set on the job's record:
// the latest scheduled time handled and the runs still open. The command it
// then publishes carries a deterministic id, a UUIDv5 over the job's name and
// the scheduled time ([CommandID]; each retry has its own), so:
//
//   - a leader that dies after recording but before or after publishing is
//     followed by one that finds the open run and publishes it again with
//     the same id, which the command's handler skips (its inbox);
//   - a leader that takes over computes the times due since the latest
//     recorded one: nothing is skipped, and what was missed while no leader
//     ran is handled by the job's misfire policy (fire once now, fire all
//     missed up to a bound, or skip).
//
// # Runs
//
// A firing is a run. The leader watches the outcome of the run's command in
// the command log ([Outcomes]): succeeded ends the run; rejected, or no
// outcome within the job's timeout, is retried with a new deterministic id
// per attempt, as the job's retry policy allows. While a run is open, a new
// scheduled time follows the job's block strategy: skip it, queue it, or run
// in parallel. Each fire, finish and skip is handed to a [Journal] (millrace
// publishes it as an event that projections/jobs folds into the run history).
//
// The package knows no domain types: a job names its command by wire type and
// writes its payload as a text/template over the firing ([TemplateData]);
// [CloudEventsSender] publishes it as a CloudEvent to the topic a [Router]
// names. cmd/millrace maps wire types to topics with package events.
package scheduler
