package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Topic is a topic declared in code: EnsureTopics creates it with these
// settings.
type Topic struct {
	// Name is the topic name: at most 249 of the characters a-z A-Z 0-9 . _ -
	Name string
	// Partitions is the partition count; 0 leaves it to the broker default.
	// Records of one key stay in one partition, so the count bounds how many
	// consumers of a group work in parallel.
	Partitions int32
	// ReplicationFactor is how many brokers hold each partition; 0 leaves it
	// to the broker default.
	ReplicationFactor int16
	// Retention is how long records are kept; 0 keeps them forever
	// (retention.ms=-1), as topics that projections replay from need.
	Retention time.Duration
	// Compact keeps the latest record of each key instead of deleting by
	// age (cleanup.policy=compact), for topics keyed by entity.
	Compact bool
}

// maxTopicNameLen is Kafka's limit on topic name length.
const maxTopicNameLen = 249

// Validate reports every problem with t at once.
func (t Topic) Validate() error {
	var errs []error
	switch {
	case t.Name == "":
		errs = append(errs, errors.New("topic name: required"))
	case t.Name == "." || t.Name == "..":
		errs = append(errs, fmt.Errorf("topic %q: name may not be %q", t.Name, t.Name))
	case len(t.Name) > maxTopicNameLen:
		errs = append(errs, fmt.Errorf("topic %q: name is %d characters, at most %d allowed", t.Name, len(t.Name), maxTopicNameLen))
	default:
		for _, r := range t.Name {
			if !legalTopicRune(r) {
				errs = append(errs, fmt.Errorf("topic %q: character %q not allowed, use a-z A-Z 0-9 . _ -", t.Name, r))
				break
			}
		}
	}
	if t.Partitions < 0 {
		errs = append(errs, fmt.Errorf("topic %q: partitions %d must not be negative", t.Name, t.Partitions))
	}
	if t.ReplicationFactor < 0 {
		errs = append(errs, fmt.Errorf("topic %q: replication factor %d must not be negative", t.Name, t.ReplicationFactor))
	}
	if t.Retention < 0 {
		errs = append(errs, fmt.Errorf("topic %q: retention %s must not be negative", t.Name, t.Retention))
	} else if t.Retention > 0 && t.Retention < time.Millisecond {
		errs = append(errs, fmt.Errorf("topic %q: retention %s is below Kafka's resolution of 1ms", t.Name, t.Retention))
	}
	return errors.Join(errs...)
}

func legalTopicRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

// configs returns the topic-level Kafka configs for t.
func (t Topic) configs() map[string]*string {
	retention := "-1"
	if t.Retention > 0 {
		retention = strconv.FormatInt(t.Retention.Milliseconds(), 10)
	}
	policy := "delete"
	if t.Compact {
		policy = "compact"
	}
	return map[string]*string{
		"retention.ms":   &retention,
		"cleanup.policy": &policy,
	}
}

// EnsureTopics makes sure every declared topic exists. It creates the
// missing ones with their partitions, replication factor, retention and
// cleanup policy, and grows a topic that exists with fewer partitions than
// declared (which moves keys to other partitions: records of one key written
// before and after the change may be consumed out of order). It leaves alone
// the settings of topics that exist and never shrinks them. It is idempotent
// and safe to call from many processes at once.
//
// It reports every topic it could not ensure, each error naming its topic.
func EnsureTopics(ctx context.Context, cfg Config, topics ...Topic) error {
	cfg, err := cfg.prepare()
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	var errs []error
	declared := make(map[string]Topic, len(topics))
	names := make([]string, 0, len(topics))
	for _, t := range topics {
		if err := t.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, ok := declared[t.Name]; ok {
			if prev != t {
				errs = append(errs, fmt.Errorf("topic %q: declared twice with different settings", t.Name))
			}
			continue
		}
		declared[t.Name] = t
		names = append(names, t.Name)
	}
	if len(errs) > 0 {
		return fmt.Errorf("ensure topics: %w", errors.Join(errs...))
	}
	if len(names) == 0 {
		return nil
	}

	adm, err := newAdmin(cfg)
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	defer adm.Close()

	existing, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("ensure topics: list topics on %v: %w", cfg.Brokers, err)
	}
	for _, name := range names {
		if err := ensureTopic(ctx, adm, declared[name], existing[name]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func ensureTopic(ctx context.Context, adm *kadm.Client, t Topic, have kadm.TopicDetail) error {
	switch {
	case errors.Is(have.Err, kerr.UnknownTopicOrPartition) || have.Topic == "":
		return createTopic(ctx, adm, t)
	case have.Err != nil:
		return fmt.Errorf("ensure topic %s: describe: %w", t.Name, have.Err)
	}
	if n := int32(len(have.Partitions)); t.Partitions > 0 && n < t.Partitions {
		resp, err := adm.UpdatePartitions(ctx, int(t.Partitions), t.Name)
		if err == nil {
			err = resp[t.Name].Err
		}
		if err != nil {
			return fmt.Errorf("ensure topic %s: grow from %d to %d partitions: %w", t.Name, n, t.Partitions, err)
		}
	}
	return nil
}

func createTopic(ctx context.Context, adm *kadm.Client, t Topic) error {
	partitions, rf := t.Partitions, t.ReplicationFactor
	if partitions == 0 {
		partitions = -1 // broker default
	}
	if rf == 0 {
		rf = -1 // broker default
	}
	resp, err := adm.CreateTopic(ctx, partitions, rf, t.configs(), t.Name)
	if err == nil {
		err = resp.Err
	}
	// Another process may have created it in between: it exists, with
	// the same declaration as long as both run the same code.
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		if resp.ErrMessage != "" {
			return fmt.Errorf("ensure topic %s: create with %d partitions: %w (%s)", t.Name, t.Partitions, err, resp.ErrMessage)
		}
		return fmt.Errorf("ensure topic %s: create with %d partitions: %w", t.Name, t.Partitions, err)
	}
	return nil
}

// newAdmin returns an admin client for cfg. The caller must Close it.
func newAdmin(cfg Config) (*kadm.Client, error) {
	cl, err := kgo.NewClient(cfg.kgoOptions()...)
	if err != nil {
		return nil, fmt.Errorf("create kafka client for %v: %w", cfg.Brokers, err)
	}
	return kadm.NewClient(cl), nil
}
