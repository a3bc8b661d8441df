package kafka

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults applied by Config when a field is left zero.
const (
	DefaultClientID            = "millrace"
	DefaultKafkaVersion        = "3.6.0"
	DefaultNackResendSleep     = 250 * time.Millisecond
	DefaultReconnectRetrySleep = time.Second
)

// minKafkaVersion is the oldest protocol version the adapter speaks (Kafka
// 2.4, the first with the consumer-group and header features it relies on).
func minKafkaVersion() sarama.KafkaVersion { return sarama.V2_4_0_0 }

// Config says which Kafka cluster to talk to and how. Only Brokers is
// required; every other field has a default.
type Config struct {
	// Brokers are the bootstrap addresses, host:port each.
	Brokers []string
	// ClientID names this process to the brokers; DefaultClientID when empty.
	ClientID string
	// KafkaVersion is the protocol version the clients speak, e.g. "3.6.0";
	// DefaultKafkaVersion when empty, and never older than 2.4.0.
	KafkaVersion string
	// NackResendSleep is how long a subscriber waits before redelivering a
	// nacked message; DefaultNackResendSleep when zero.
	NackResendSleep time.Duration
	// ReconnectRetrySleep is how long a subscriber waits between attempts to
	// reconnect to the brokers; DefaultReconnectRetrySleep when zero.
	ReconnectRetrySleep time.Duration
	// Partitioner is how record keys are hashed to partitions by every
	// producer millrace builds (partitioner.go); DefaultPartitioner when
	// empty. Producers sharing topics must agree on it.
	Partitioner Partitioner
	// SASL authenticates the clients; TLS encrypts their connections
	// (security.go). Both are off when zero. Check tries them at start.
	SASL SASL
	TLS  TLS
}

func (c *Config) setDefaults() {
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.KafkaVersion == "" {
		c.KafkaVersion = DefaultKafkaVersion
	}
	if c.NackResendSleep == 0 {
		c.NackResendSleep = DefaultNackResendSleep
	}
	if c.ReconnectRetrySleep == 0 {
		c.ReconnectRetrySleep = DefaultReconnectRetrySleep
	}
	c.Partitioner = c.Partitioner.orDefault()
}

// Validate reports every problem with c at once. Fields left zero are fine
// where a default applies.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("kafka brokers: none given, set at least one host:port"))
	}
	for _, b := range c.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("kafka broker %q: want host:port", b))
		}
	}
	if c.KafkaVersion != "" {
		v, err := sarama.ParseKafkaVersion(c.KafkaVersion)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("kafka version %q: %w", c.KafkaVersion, err))
		case !v.IsAtLeast(minKafkaVersion()):
			errs = append(errs, fmt.Errorf("kafka version %q: older than the supported minimum %s", c.KafkaVersion, minKafkaVersion()))
		}
	}
	if c.NackResendSleep < 0 {
		errs = append(errs, fmt.Errorf("nack resend sleep %s: must not be negative", c.NackResendSleep))
	}
	if c.ReconnectRetrySleep < 0 {
		errs = append(errs, fmt.Errorf("reconnect retry sleep %s: must not be negative", c.ReconnectRetrySleep))
	}
	errs = append(errs, c.Partitioner.Validate(), c.SASL.Validate(), c.TLS.Validate())
	return errors.Join(errs...)
}

// Sarama returns a new Sarama configuration for c, with defaults applied:
//   - the protocol version from KafkaVersion;
//   - an idempotent producer that waits for all in-sync replicas and
//     returns successes (what watermill-kafka's sync publisher needs), so a
//     retried produce neither duplicates nor reorders records;
//   - the record key hashed to a partition by Partitioner, so one key (one
//     aggregate) always lands in the same partition;
//   - no automatic topic creation: topics are declared with EnsureTopics;
//   - consumer groups without a committed offset start at the oldest record;
//   - SASL and TLS as SASL and TLS say.
//
// Call Validate first: an unparsable KafkaVersion falls back to the default
// here.
func (c Config) Sarama() *sarama.Config {
	c.setDefaults()
	version, err := sarama.ParseKafkaVersion(c.KafkaVersion)
	if err != nil || !version.IsAtLeast(minKafkaVersion()) {
		version, _ = sarama.ParseKafkaVersion(DefaultKafkaVersion)
	}

	sc := sarama.NewConfig()
	sc.Version = version
	sc.ClientID = c.ClientID
	sc.Metadata.AllowAutoTopicCreation = false

	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Partitioner = c.Partitioner.sarama()
	sc.Producer.Idempotent = true
	sc.Producer.Retry.Max = 10
	sc.Net.MaxOpenRequests = 1 // required by the idempotent producer

	sc.Consumer.Return.Errors = true
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.applySarama(sc)
	return sc
}

// kgoOptions are the franz-go client options for c, used by the admin,
// inspection and tailing helpers.
func (c Config) kgoOptions(extra ...kgo.Opt) []kgo.Opt {
	c.setDefaults()
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
	}
	opts = append(opts, c.kgoSecurity()...)
	return append(opts, extra...)
}

// prepare applies defaults and validates, for the functions that take a
// Config by value.
func (c Config) prepare() (Config, error) {
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("invalid kafka config: %w", err)
	}
	return c, nil
}
