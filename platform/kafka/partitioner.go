package kafka

import (
	"fmt"
	"hash/crc32"
	"hash/fnv"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Partitioner names how a record key is hashed to a partition. Every record
// of one key must land in the same partition, whichever client wrote it, or
// the order of one aggregate's messages is lost; clients disagree by
// default, so a cluster shared with producers millrace did not build needs
// the scheme those producers use (docs/adr/0006-key-partitioning.md):
//
//   - PartitionerFNV1a, the default: Sarama's default hash partitioner
//     (FNV-1a of the key; a negative int32 remainder negated), which is
//     librdkafka's "fnv1a" and "fnv1a_random". What millrace has always
//     written.
//   - PartitionerMurmur2: the Java client's default (murmur2 of the key,
//     high bit masked, modulo the partition count), as Spring Kafka and
//     Kafka Streams producers partition; librdkafka's "murmur2" and
//     "murmur2_random", franz-go's default.
//   - PartitionerCRC32: librdkafka's default ("consistent_random":
//     unsigned CRC-32 modulo the partition count), as kcat, confluent-kafka-go,
//     confluent-kafka-python and node-rdkafka producers partition.
//
// Records without a key (none that millrace writes) go to any partition.
type Partitioner string

// The partitioners millrace can write with.
const (
	PartitionerFNV1a   Partitioner = "fnv1a"
	PartitionerMurmur2 Partitioner = "murmur2"
	PartitionerCRC32   Partitioner = "crc32"
)

// DefaultPartitioner is the partitioner of a Config that names none.
const DefaultPartitioner = PartitionerFNV1a

// Partitioners lists every valid Partitioner, the default first.
func Partitioners() []Partitioner {
	return []Partitioner{PartitionerFNV1a, PartitionerMurmur2, PartitionerCRC32}
}

// Validate reports whether p names a partitioner; the empty name is the default.
func (p Partitioner) Validate() error {
	switch p {
	case "", PartitionerFNV1a, PartitionerMurmur2, PartitionerCRC32:
		return nil
	}
	return fmt.Errorf("kafka partitioner %q: want one of %v", string(p), Partitioners())
}

// orDefault is p, or DefaultPartitioner when p is empty.
func (p Partitioner) orDefault() Partitioner {
	if p == "" {
		return DefaultPartitioner
	}
	return p
}

// PartitionOf is the partition of n that p sends key to, as every producer
// millrace builds computes it: what the tests and tools use to say where a
// key lives. key must not be nil; p must be valid.
func (p Partitioner) PartitionOf(key []byte, n int) int {
	return p.kgo().ForTopic("").Partition(&kgo.Record{Key: key}, n)
}

// kgo is p as a franz-go record partitioner (the batch publisher), from
// franz-go's own hashers (StickyKeyPartitioner's documentation says which
// client each one matches).
func (p Partitioner) kgo() kgo.Partitioner {
	switch p.orDefault() {
	case PartitionerMurmur2:
		return kgo.StickyKeyPartitioner(nil) // the Java client's, exactly
	case PartitionerCRC32:
		return kgo.StickyKeyPartitioner(kgo.SaramaHasher(crc32.ChecksumIEEE)) // librdkafka's consistent
	default:
		return kgo.StickyKeyPartitioner(kgo.SaramaCompatHasher(fnv32a))
	}
}

// sarama is p as a Sarama partitioner (the watermill-kafka publisher).
func (p Partitioner) sarama() sarama.PartitionerConstructor {
	switch p.orDefault() {
	case PartitionerMurmur2:
		return sarama.NewMurmur2Partitioner
	case PartitionerCRC32:
		return sarama.NewConsistentCRCHashPartitioner
	default:
		return sarama.NewHashPartitioner
	}
}

// fnv32a is the hash of Sarama's default hash partitioner.
func fnv32a(b []byte) uint32 {
	h := fnv.New32a()
	_, _ = h.Write(b) // a hash.Hash never fails to write
	return h.Sum32()
}
