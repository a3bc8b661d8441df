// Package projections runs read models: it feeds the events consumed from
// Kafka to a [Projection], stores in the same SQLite transaction as the
// read-model change how far it got, and rebuilds a projection from the log
// into a new version while the current one serves.
//
// # Exactly once
//
// Delivery is at least once; the [Runner] makes the effect exactly once. For
// every message it stores the partition offset it reached (so a redelivery of
// an offset already applied costs one indexed read), and it recognises an
// event that an outbox relay published again, at a new offset: by the
// highest outbox sequence it applied per partition and outbox, for events
// that carry one (cloudevents.Sequence, which millrace's relay sets; ADR
// 0007), else by the event's id. All of it is stored in the read model's
// transaction, in tables shared by every projection in the database:
//
//	projection_positions(projection, version, topic, partition, offset)
//	projection_sequences(projection, version, topic, partition, outbox, seq)
//	projection_event_ids(projection, version, at, event_id)
//
// [Runner.Handle] takes one message per transaction, as a handler on the
// Watermill router; [Runner.HandleBatch] many, as a rebuild's batch consumer
// hands them over. Old versions of an event are upcast (events.Upcast) before
// Apply sees them.
//
// # Versions and rebuilds
//
// A version is a generation of a projection's tables: every table is named
// [Table](projection, version, name), e.g. orders_v2_orders, and each version
// consumes in its own consumer groups, [GroupFor](projection, version,
// topic). The catalog table projection_versions says which version serves
// reads; read models query it with [Read], in the same snapshot as their
// tables.
//
// The [Manager] runs every projection: the active version live (through a
// [Live] the caller provides, the router in millrace), and on demand
// ([Manager.Rebuild]) the next version, built from the log beside it, swapped
// in once it has caught up, then the old version retired. Its state is in the
// database: a rebuild survives a crash and resumes from its own checkpoint,
// and a second rebuild of the same projection is refused, across processes.
// [Manager.Status] reports versions, positions, lag, state and errors, and
// [Manager.AdminHandler] serves all of it over HTTP.
//
// The read models themselves live in the sub-packages: projections/orders,
// projections/sales and projections/commands.
package projections
