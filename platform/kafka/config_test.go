package kafka_test

import (
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	metrics "github.com/rcrowley/go-metrics"

	"github.com/millrace/millrace/platform/kafka"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  kafka.Config
		want []string // substrings of the error; none: valid
	}{
		{name: "brokers only", cfg: kafka.Config{Brokers: []string{"127.0.0.1:9092"}}},
		{name: "everything set", cfg: kafka.Config{Brokers: []string{"kafka-1:9092", "kafka-2:9092"}, ClientID: "gw", KafkaVersion: "2.4.0", NackResendSleep: time.Second, ReconnectRetrySleep: time.Second}},
		{name: "no brokers", cfg: kafka.Config{}, want: []string{"brokers"}},
		{name: "broker without port", cfg: kafka.Config{Brokers: []string{"kafka-1"}}, want: []string{`"kafka-1"`}},
		{name: "unknown version", cfg: kafka.Config{Brokers: []string{"k:1"}, KafkaVersion: "three"}, want: []string{`"three"`}},
		{name: "version too old", cfg: kafka.Config{Brokers: []string{"k:1"}, KafkaVersion: "2.1.0"}, want: []string{"older than"}},
		{
			name: "every problem at once",
			cfg:  kafka.Config{KafkaVersion: "2.0.0", NackResendSleep: -1, ReconnectRetrySleep: -1},
			want: []string{"brokers", "older than", "nack resend", "reconnect retry"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error mentioning %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestConfigSarama(t *testing.T) {
	sc := kafka.Config{Brokers: []string{"127.0.0.1:9092"}}.Sarama()
	if err := sc.Validate(); err != nil {
		t.Fatalf("Sarama config does not validate: %v", err)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"protocol version at least 2.4", sc.Version.IsAtLeast(sarama.V2_4_0_0)},
		{"client id defaulted", sc.ClientID == kafka.DefaultClientID},
		{"new groups start at the oldest record", sc.Consumer.Offsets.Initial == sarama.OffsetOldest},
		{"producer waits for all replicas", sc.Producer.RequiredAcks == sarama.WaitForAll},
		{"producer returns successes", sc.Producer.Return.Successes},
		{"idempotent producer", sc.Producer.Idempotent},
		{"no automatic topic creation", !sc.Metadata.AllowAutoTopicCreation},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: not so", c.name)
		}
	}

	// The partitioner hashes the key: one key, one partition, every time.
	p := sc.Producer.Partitioner("t")
	if !p.RequiresConsistency() {
		t.Error("partitioner does not promise consistency per key")
	}
	for _, key := range []string{"order-1", "order-2", "user-77"} {
		first, err := p.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, 6)
		if err != nil {
			t.Fatalf("partition %s: %v", key, err)
		}
		again, _ := sc.Producer.Partitioner("t").Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, 6)
		if first != again {
			t.Errorf("key %s went to partitions %d and %d", key, first, again)
		}
	}

	if v := (kafka.Config{Brokers: []string{"k:1"}, KafkaVersion: "2.8.0"}).Sarama().Version; v != sarama.V2_8_0_0 {
		t.Errorf("KafkaVersion 2.8.0 gave %s", v)
	}
}

// Sarama's metrics are kept nowhere: each kind Sarama registers (meters,
// counters, histograms) comes back as go-metrics' no-op kind, and the
// process-wide switch metrics.UseNilMetrics is left alone.
func TestConfigSaramaKeepsNoMetrics(t *testing.T) {
	reg := kafka.Config{Brokers: []string{"127.0.0.1:9092"}}.Sarama().MetricRegistry
	cases := []struct {
		name string
		get  func() any
		want any
	}{
		{"meter", func() any { return metrics.GetOrRegisterMeter("incoming-byte-rate", reg) }, metrics.NilMeter{}},
		{"counter", func() any { return metrics.GetOrRegisterCounter("requests-in-flight", reg) }, metrics.NilCounter{}},
		{"histogram", func() any {
			return metrics.GetOrRegisterHistogram("request-latency-in-ms", reg, metrics.NewUniformSample(10))
		}, metrics.NilHistogram{}},
		{"gauge", func() any { return metrics.GetOrRegisterGauge("g", reg) }, metrics.NilGauge{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.get(); got != tc.want {
				t.Errorf("registered %T, want %T", got, tc.want)
			}
		})
	}
	if all := reg.GetAll(); len(all) != 0 {
		t.Errorf("registry holds %d metrics, want none", len(all))
	}
	if metrics.UseNilMetrics {
		t.Error("metrics.UseNilMetrics was set: it would silence go-metrics for the whole process")
	}
}
