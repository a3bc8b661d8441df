package kafka_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/millrace/millrace/platform/kafka"
)

// librdkafkaName is the partitioner of librdkafka (kcat) that matches each of
// ours.
var librdkafkaName = map[kafka.Partitioner]string{
	kafka.PartitionerFNV1a:   "fnv1a",      // Sarama's
	kafka.PartitionerMurmur2: "murmur2",    // the Java client's
	kafka.PartitionerCRC32:   "consistent", // librdkafka's default for keyed records
}

// TestPartitionersAgree writes the same keys with both of millrace's
// producers (Sarama's and the franz-go batch publisher) and with kcat
// (librdkafka, set to the same scheme), and reads where each record landed:
// with every partitioner, each key is in one partition, the one PartitionOf
// names.
func TestPartitionersAgree(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	_, base := startBroker(t)
	const partitions = 7
	keys := []string{"a", "ab", "abc", "order-1", "order-2", "user:42"}
	for range 60 {
		keys = append(keys, uuid.NewString())
	}

	placed := map[kafka.Partitioner]map[string]int{}
	for _, p := range kafka.Partitioners() {
		t.Run(string(p), func(t *testing.T) {
			cfg := base
			cfg.Partitioner = p
			topic := "keys-" + string(p)
			ensureTopic(t, ctx, cfg, topic, partitions)

			sarama := newPublisher(t, cfg)
			batch, err := kafka.NewBatchPublisher(cfg, kafka.BatchPublisherOptions{}, nil)
			if err != nil {
				t.Fatalf("new batch publisher: %v", err)
			}
			t.Cleanup(func() { _ = batch.Close() })
			for _, k := range keys {
				for name, pub := range map[string]message.Publisher{"sarama": sarama, "batch": batch} {
					if err := pub.Publish(topic, event(k, `{"by":"`+name+`"}`)); err != nil {
						t.Fatalf("publish key %q with the %s publisher: %v", k, name, err)
					}
				}
			}
			var in strings.Builder
			for _, k := range keys {
				fmt.Fprintf(&in, "%s\t{\"by\":\"kcat\"}\n", k)
			}
			runKcat(t, ctx, in.String(), "-b", cfg.Brokers[0], "-P", "-t", topic, "-K", "\t", "-X", "partitioner="+librdkafkaName[p])
			const writers = 3

			out := runKcat(t, ctx, "", "-b", cfg.Brokers[0], "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q")
			where := map[string]map[int32][]string{} // key → partition → writers
			n := 0
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				if len(bytes.TrimSpace(sc.Bytes())) == 0 {
					continue
				}
				var r kcatRecord
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					t.Fatalf("decode kcat output %q: %v", sc.Text(), err)
				}
				if r.Key == nil || r.Payload == nil {
					t.Fatalf("record without key or payload: %s", sc.Text())
				}
				if where[*r.Key] == nil {
					where[*r.Key] = map[int32][]string{}
				}
				where[*r.Key][r.Partition] = append(where[*r.Key][r.Partition], *r.Payload)
				n++
			}
			if want := len(keys) * writers; n != want {
				t.Fatalf("read %d records, want %d", n, want)
			}
			placed[p] = map[string]int{}
			for _, k := range keys {
				want := p.PartitionOf([]byte(k), partitions)
				placed[p][k] = want
				if len(where[k]) != 1 || len(where[k][int32(want)]) != writers {
					t.Errorf("key %q: partitions and writers %v, want all %d writers in partition %d", k, where[k], writers, want)
				}
			}
		})
	}

	// The schemes really differ: a test that every client agrees means
	// nothing if they would agree by any scheme.
	for _, pair := range [][2]kafka.Partitioner{
		{kafka.PartitionerFNV1a, kafka.PartitionerMurmur2},
		{kafka.PartitionerFNV1a, kafka.PartitionerCRC32},
		{kafka.PartitionerMurmur2, kafka.PartitionerCRC32},
	} {
		differ := 0
		for _, k := range keys {
			if placed[pair[0]][k] != placed[pair[1]][k] {
				differ++
			}
		}
		if differ == 0 {
			t.Errorf("%s and %s put all %d keys in the same partitions", pair[0], pair[1], len(keys))
		}
	}
}

func TestPartitionerValidate(t *testing.T) {
	for _, p := range append(kafka.Partitioners(), "") {
		if err := p.Validate(); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", p, err)
		}
	}
	cfg := kafka.Config{Brokers: []string{"127.0.0.1:9092"}, Partitioner: "murmur3"}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), `"murmur3"`) || !strings.Contains(err.Error(), "murmur2") {
		t.Fatalf("Validate of partitioner murmur3 = %v, want an error naming it and the valid ones", err)
	}
}
