package kafka_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/kafka"
)

// BenchmarkMarshaler measures turning a CloudEvent message into a Kafka
// record and a consumed record back into a message.
func BenchmarkMarshaler(b *testing.B) {
	msg := event("order-1", `{"order_id":"order-1","user_id":"u-1","amount_cents":2500,"currency":"EUR","payment_ref":"pay-1"}`)
	var m kafka.Marshaler
	rec, err := m.Marshal("orders.events", msg)
	if err != nil {
		b.Fatal(err)
	}
	consumed := &sarama.ConsumerMessage{Topic: "orders.events", Partition: 1, Offset: 42,
		Key: []byte("order-1"), Value: msg.Payload}
	for _, h := range rec.Headers {
		consumed.Headers = append(consumed.Headers, &sarama.RecordHeader{Key: h.Key, Value: h.Value})
	}
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := m.Marshal("orders.events", msg); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := m.Unmarshal(consumed); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// BenchmarkPublishConcurrent publishes one message per Publish call from 64
// goroutines, as the gateway's requests do, to the embedded broker: with
// the watermill-kafka publisher (one broker round trip per message) and
// with the BatchPublisher (concurrent calls share produce requests). Both
// return only after the broker's ack.
func BenchmarkPublishConcurrent(b *testing.B) {
	for _, tc := range []struct {
		name string
		pub  func(b *testing.B, cfg kafka.Config) message.Publisher
	}{
		{"watermill", func(b *testing.B, cfg kafka.Config) message.Publisher {
			pub, err := kafka.NewPublisher(cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			return pub
		}},
		{"batch", func(b *testing.B, cfg kafka.Config) message.Publisher {
			pub, err := kafka.NewBatchPublisher(cfg, kafka.BatchPublisherOptions{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			return pub
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0", DataDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer broker.Close()
			cfg := kafka.Config{Brokers: broker.Addrs(), ClientID: "bench"}
			if err := kafka.EnsureTopics(b.Context(), cfg, kafka.Topic{Name: "bench", Partitions: 3}); err != nil {
				b.Fatal(err)
			}
			pub := tc.pub(b, cfg)
			defer pub.Close()
			var seq atomic.Int64
			b.SetParallelism(32) // 64 goroutines on 2 cores
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := seq.Add(1)
					if err := pub.Publish("bench", event("order-"+strconv.FormatInt(n%1000, 10), `{"n":1}`)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
