package kafka

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
)

// NewPublisher returns a watermill-kafka publisher that writes CloudEvents
// with Marshaler through cfg's Sarama configuration. Publish blocks until the
// broker has acknowledged each message. Topics must exist (see EnsureTopics):
// publishing to a missing topic fails after Sarama's metadata retries.
//
// The caller owns the publisher and must Close it, which flushes it. A nil
// logger logs nothing.
func NewPublisher(cfg Config, logger watermill.LoggerAdapter) (*wmkafka.Publisher, error) {
	cfg, err := cfg.prepare()
	if err != nil {
		return nil, fmt.Errorf("create kafka publisher: %w", err)
	}
	pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{
		Brokers:               cfg.Brokers,
		Marshaler:             Marshaler{},
		OverwriteSaramaConfig: cfg.Sarama(),
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("create kafka publisher for %v: %w", cfg.Brokers, err)
	}
	return pub, nil
}

// NewSubscriber returns a watermill-kafka subscriber consuming in consumer
// group group, unmarshalling with Marshaler. Within a partition a message is
// delivered only after the previous one was acked, so one key's messages are
// handled in order; acked offsets are committed about once a second, and
// delivery is at least once. A group with no committed offset starts at the
// oldest record. The subscriber does not create topics (see EnsureTopics).
//
// The caller owns the subscriber and must Close it. A nil logger logs nothing.
func NewSubscriber(cfg Config, group string, logger watermill.LoggerAdapter) (*wmkafka.Subscriber, error) {
	cfg, err := cfg.prepare()
	if group == "" {
		err = errors.Join(err, errors.New("consumer group: required, name the group that shares the work"))
	}
	if err != nil {
		return nil, fmt.Errorf("create kafka subscriber: %w", err)
	}
	sub, err := wmkafka.NewSubscriber(wmkafka.SubscriberConfig{
		Brokers:               cfg.Brokers,
		Unmarshaler:           Marshaler{},
		OverwriteSaramaConfig: cfg.Sarama(),
		ConsumerGroup:         group,
		NackResendSleep:       cfg.NackResendSleep,
		ReconnectRetrySleep:   cfg.ReconnectRetrySleep,
		// InitializeTopicDetails stays nil: topics are created by
		// EnsureTopics with the settings declared in code.
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("create kafka subscriber for group %s: %w", group, err)
	}
	return sub, nil
}
