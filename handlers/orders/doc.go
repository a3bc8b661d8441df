// Package orders is the orders bounded context's command side: the rules for
// placing, paying, cancelling and shipping an order, and the handlers that
// apply them to the commands on events.TopicOrderCommands.
//
// The rules are the pure function [Decide]: given the current order, a
// command and the facts it needs, it returns the next order and the events
// to publish, or the unchanged order and exactly one
// events.CommandRejected. It does no I/O, so every rule is tested as a table.
//
// [Handler] wires Decide to Watermill's CQRS component through the [Store]
// and [Users] interfaces declared here; cmd/millrace implements them with
// platform/commandstore.
//
// All order commands form ONE handler group ([Handler.GroupHandlers]), i.e.
// one subscription and one consumer group on the command topic, dispatched by
// ce_type. Kafka keeps one order's commands in one partition, in the order
// they were sent, and one consumer group reads a partition in that order.
// Watermill's CommandProcessor would instead subscribe once per command type:
// four consumer groups reading the same partitions independently, so a
// PayOrder could be handled before the PlaceOrder it follows
// (docs/adr/0001-command-handlers-as-handler-groups.md).
package orders
