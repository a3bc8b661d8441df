// Package projections runs read models: it feeds the events consumed from
// Kafka to a [Projection] and stores, in the same SQLite transaction as the
// read-model change, how far it got.
//
// Delivery is at least once; the [Runner] makes the effect exactly once. For
// every message it stores the partition offset it reached (so a redelivery of
// an offset already applied costs one indexed read) and the event id it applied
// (so an event that an outbox relay published again, at a new offset, is not
// applied twice). Both live in tables of their own, shared by every projection
// in the database and keyed by projection name and version:
//
//	projection_positions(projection, version, topic, partition, offset)
//	projection_applied(projection, version, event_id)
//
// A new [Projection.Version] therefore starts from no position at all and,
// consumed under its own consumer group ([Runner.Group]), rebuilds from the
// first retained event while the old version keeps serving.
//
// The read models themselves live in the sub-packages: projections/orders,
// projections/sales and projections/commands.
package projections
