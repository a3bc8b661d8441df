// Package events holds millrace's contracts: the typed commands and events
// that cross process boundaries, their stable versioned wire names, the topics
// they travel on and their partition keys.
//
// The package imports the standard library only. Everything else in millrace
// (handlers, projections, the gateway) depends on it, never the other way round.
//
// Every type implements [Message]: Name is the CloudEvents type (`ce_type`),
// which never changes once published; a breaking change is a new type with a
// new version suffix. Key is the aggregate id, used as the Kafka record key so
// that all messages of one aggregate stay in one partition, in order.
package events
