// Package users is the users bounded context's command side: the rules for
// registering a user, and the handler that applies them to the commands on
// events.TopicUserCommands.
//
// The rules are the pure function [Decide]; [Handler] wires it to Watermill's
// CQRS component through the [Store] interface declared here, which
// cmd/millrace implements with platform/commandstore.
//
// The users commands form ONE handler group ([Handler.GroupHandlers]): one
// subscription and one consumer group on the command topic, so that the
// commands of one user are handled in the order of their partition.
// Watermill's CommandProcessor would subscribe once per command type, and a
// later command type could overtake an earlier one as soon as there is more
// than one (docs/adr/0001-command-handlers-as-handler-groups.md).
package users
