package kafka

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/millrace/millrace/platform/cloudevents"
)

// TailOptions says where Tail starts and when it stops.
type TailOptions struct {
	// FromBeginning starts at the oldest record of each partition instead
	// of at the newest (only records written from now on).
	FromBeginning bool
	// Limit stops Tail after this many records; 0 means no limit.
	Limit int
}

// Record is one Kafka record as Tail reads it.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Headers   map[string]string // the last value wins when a header repeats
	Value     []byte
	Timestamp time.Time
}

// Tail reads topic, all its partitions, without a consumer group: it
// commits nothing and disturbs no group. It calls fn with each record, in
// order within a partition, until ctx is done (then it returns nil), Limit
// records were read, or fn returns an error (which Tail returns).
func Tail(ctx context.Context, cfg Config, topic string, opts TailOptions, fn func(Record) error) error {
	cfg, err := cfg.prepare()
	if err != nil {
		return fmt.Errorf("tail %s: %w", topic, err)
	}
	if opts.Limit < 0 {
		return fmt.Errorf("tail %s: limit %d must not be negative", topic, opts.Limit)
	}
	start := kgo.NewOffset().AtEnd()
	if opts.FromBeginning {
		start = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(cfg.kgoOptions(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(start))...)
	if err != nil {
		return fmt.Errorf("tail %s: create kafka client for %v: %w", topic, cfg.Brokers, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	// Fail fast on a topic that does not exist instead of waiting for it.
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return ignoreDone(ctx, fmt.Errorf("tail %s: describe topic: %w", topic, err))
	}
	if terr := details[topic].Err; terr != nil {
		if errors.Is(terr, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("tail %s: topic does not exist (millrace topics lists the topics)", topic)
		}
		return fmt.Errorf("tail %s: describe topic: %w", topic, terr)
	}

	seen := 0
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if fetches.IsClientClosed() {
			return fmt.Errorf("tail %s: client closed", topic)
		}
		var errs []error
		fetches.EachError(func(t string, p int32, err error) {
			errs = append(errs, fmt.Errorf("fetch %s/%d: %w", t, p, err))
		})
		if len(errs) > 0 {
			return fmt.Errorf("tail %s: %w", topic, errors.Join(errs...))
		}
		for iter := fetches.RecordIter(); !iter.Done(); {
			if err := fn(recordFromKgo(iter.Next())); err != nil {
				return fmt.Errorf("tail %s: %w", topic, err)
			}
			seen++
			if opts.Limit > 0 && seen >= opts.Limit {
				return nil
			}
		}
	}
}

func ignoreDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func recordFromKgo(r *kgo.Record) Record {
	headers := make(map[string]string, len(r.Headers))
	for _, h := range r.Headers {
		headers[h.Key] = string(h.Value)
	}
	return Record{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Key:       r.Key,
		Headers:   headers,
		Value:     r.Value,
		Timestamp: r.Timestamp,
	}
}

// Format writes r as one readable block: its position, then the
// CloudEvents type, key, id, source and time, then the data, indented when
// it is JSON, and a blank line.
func (r Record) Format(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%d@%d\n", r.Topic, r.Partition, r.Offset)
	field := func(name, value string) {
		if value == "" {
			value = "-"
		}
		fmt.Fprintf(&b, "  %-8s %s\n", name+":", value)
	}
	field("type", r.Headers[cloudevents.Type])
	field("key", printable(r.Key))
	field("id", r.Headers[cloudevents.ID])
	field("source", r.Headers[cloudevents.Source])
	when := r.Headers[cloudevents.Time]
	if when == "" && !r.Timestamp.IsZero() {
		when = r.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	field("time", when)
	b.WriteString("  data:\n")
	b.WriteString(formatData(r.Value))
	b.WriteString("\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write record %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	return nil
}

// formatData renders a record value: indented JSON, text as is, anything
// else quoted; every line indented by four spaces.
func formatData(v []byte) string {
	var text string
	var indented bytes.Buffer
	switch {
	case v == nil:
		text = "(null)"
	case len(v) == 0:
		text = "(empty)"
	case json.Valid(v) && json.Indent(&indented, v, "", "  ") == nil:
		text = indented.String()
	case utf8.Valid(v):
		text = string(v)
	default:
		text = fmt.Sprintf("%q", v)
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(text, "\n"), "\n", "\n    ") + "\n"
}

// printable renders a record key.
func printable(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return fmt.Sprintf("%q", b)
}
