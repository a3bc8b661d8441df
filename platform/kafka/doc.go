// Package kafka is the Kafka adapter every millrace process uses.
//
// It holds, in one place, everything that touches the Kafka protocol:
//
//   - [EmbeddedBroker]: a Kafka-protocol broker (franz-go kfake) running
//     in-process on a loopback address and persisted to a data directory,
//     for one-machine use (millrace dev) and for tests;
//   - [Config]: broker addresses and client settings, turned into the Sarama
//     configuration that Watermill's Kafka publisher and subscriber use;
//   - [Marshaler]: the CloudEvents binary content mode on Kafka records
//     (metadata keys are header names, the message UUID is ce_id, the record
//     key is ce_partitionkey);
//   - [NewPublisher] and [NewSubscriber]: watermill-kafka publishers and
//     consumer-group subscribers wired with the marshaler and the config;
//   - [Topic] and [EnsureTopics]: topics declared in code and created with
//     their partitions, retention and compaction;
//   - [Inspect] and [Tail]: topics, end offsets, consumer groups and lag, and
//     a group-less reader of a topic, for the millrace topics and tail
//     commands.
//
// The package knows nothing of millrace's commands and events: it moves
// CloudEvents, whatever their type. Every function that talks to a broker
// takes a context that bounds the whole call; nothing keeps a context.
package kafka
