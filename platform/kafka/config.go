package kafka

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/IBM/sarama"
	metrics "github.com/rcrowley/go-metrics"
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
//   - SASL and TLS as SASL and TLS say;
//   - no go-metrics: Sarama's own metrics (rates and histograms per broker
//     and topic) are kept nowhere, since nothing reads them, and updating
//     them cost 2-3 % of millrace dev's CPU (see nilRegistry).
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
	sc.MetricRegistry = nilRegistry{}
	c.applySarama(sc)
	return sc
}

// nilRegistry is a go-metrics registry that keeps nothing: every metric
// Sarama asks it for is go-metrics' no-op kind. Sarama documents disabling
// its metrics with the global metrics.UseNilMetrics, which would reach
// every other user of go-metrics in the process; the registry is per
// configuration.
type nilRegistry struct{}

func (nilRegistry) Each(func(string, any))            {}
func (nilRegistry) Get(string) any                    { return nil }
func (nilRegistry) GetAll() map[string]map[string]any { return nil }
func (nilRegistry) Register(string, any) error        { return nil }
func (nilRegistry) RunHealthchecks()                  {}
func (nilRegistry) Unregister(string)                 {}
func (nilRegistry) UnregisterAll()                    {}

// GetOrRegister returns the no-op metric of the kind asked for: metric is a
// metric, or a function that makes one (metrics.NewMeter, a func returning
// a Histogram), which is not called.
func (nilRegistry) GetOrRegister(_ string, metric any) any {
	switch metric.(type) {
	case func() metrics.Counter, metrics.Counter:
		return metrics.NilCounter{}
	case func() metrics.Gauge, metrics.Gauge:
		return metrics.NilGauge{}
	case func() metrics.GaugeFloat64, metrics.GaugeFloat64:
		return metrics.NilGaugeFloat64{}
	case func() metrics.Histogram, metrics.Histogram:
		return metrics.NilHistogram{}
	case func() metrics.Meter, metrics.Meter:
		return metrics.NilMeter{}
	case func() metrics.Timer, metrics.Timer:
		return metrics.NilTimer{}
	}
	return metric
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
