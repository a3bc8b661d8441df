package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Overview is a snapshot of a cluster's topics and consumer groups, as shown
// by millrace topics.
type Overview struct {
	Topics []TopicInfo // sorted by name; internal topics (leading "__") left out
	Groups []GroupInfo // sorted by name
}

// TopicInfo describes one topic.
type TopicInfo struct {
	Name       string
	Partitions []PartitionInfo // sorted by partition
	// Messages is how many records the topic holds: the sum over its
	// partitions of End - Start.
	Messages int64
}

// PartitionInfo gives the offsets of one partition.
type PartitionInfo struct {
	Partition int32
	Start     int64 // offset of the oldest record kept
	End       int64 // offset the next record will get (the high watermark)
}

// GroupInfo describes one consumer group.
type GroupInfo struct {
	Name    string
	State   string // Stable, PreparingRebalance, CompletingRebalance, Empty or Dead
	Members int
	Topics  []GroupTopic // topics the group committed to or subscribes, sorted by name
	// Lag is the sum of Lag over Topics.
	Lag int64
}

// GroupTopic gives a group's progress on one topic.
type GroupTopic struct {
	Topic      string
	Partitions []GroupPartition // sorted by partition
	// Committed is the sum of the committed offsets, End the sum of the
	// end offsets and Lag the sum of the lags of the partitions that have
	// one.
	Committed, End, Lag int64
}

// GroupPartition gives a group's progress on one partition.
type GroupPartition struct {
	Partition int32
	Committed int64 // next offset the group will read; -1 when it committed none
	End       int64
	// Lag is End - Committed, or End - Start when the group committed
	// nothing (it will read from the oldest record); -1 when it cannot be
	// known (the partition's offsets could not be listed).
	Lag int64
}

// Inspect lists the topics of the cluster cfg points at, with their
// partitions' offsets, and the consumer groups with their committed offsets
// and lag.
func Inspect(ctx context.Context, cfg Config) (Overview, error) {
	cfg, err := cfg.prepare()
	if err != nil {
		return Overview{}, fmt.Errorf("inspect kafka: %w", err)
	}
	adm, err := newAdmin(cfg)
	if err != nil {
		return Overview{}, fmt.Errorf("inspect kafka: %w", err)
	}
	defer adm.Close()

	topics, err := inspectTopics(ctx, adm)
	if err != nil {
		return Overview{}, fmt.Errorf("inspect kafka on %v: %w", cfg.Brokers, err)
	}
	groups, err := inspectGroups(ctx, adm)
	if err != nil {
		return Overview{}, fmt.Errorf("inspect kafka on %v: %w", cfg.Brokers, err)
	}
	return Overview{Topics: topics, Groups: groups}, nil
}

func isInternalTopic(name string) bool { return strings.HasPrefix(name, "__") }

func inspectTopics(ctx context.Context, adm *kadm.Client) ([]TopicInfo, error) {
	details, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var names []string
	for _, name := range details.Names() {
		if !isInternalTopic(name) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	ends, err := adm.ListEndOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}

	var errs []error
	topics := make([]TopicInfo, 0, len(names))
	for _, name := range names {
		if err := details[name].Err; err != nil {
			errs = append(errs, fmt.Errorf("describe topic %s: %w", name, err))
			continue
		}
		info := TopicInfo{Name: name}
		for _, p := range details[name].Partitions.Numbers() {
			end, eok := ends.Lookup(name, p)
			start, sok := starts.Lookup(name, p)
			switch {
			case !eok || !sok:
				errs = append(errs, fmt.Errorf("list offsets of %s/%d: missing from the broker's answer", name, p))
				continue
			case end.Err != nil:
				errs = append(errs, fmt.Errorf("list end offset of %s/%d: %w", name, p, end.Err))
				continue
			case start.Err != nil:
				errs = append(errs, fmt.Errorf("list start offset of %s/%d: %w", name, p, start.Err))
				continue
			}
			info.Partitions = append(info.Partitions, PartitionInfo{Partition: p, Start: start.Offset, End: end.Offset})
			info.Messages += end.Offset - start.Offset
		}
		topics = append(topics, info)
	}
	return topics, errors.Join(errs...)
}

func inspectGroups(ctx context.Context, adm *kadm.Client) ([]GroupInfo, error) {
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("list consumer groups: %w", err)
	}
	names := listed.Groups()
	if len(names) == 0 {
		return nil, nil
	}
	lags, err := adm.Lag(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("describe consumer groups: %w", err)
	}

	var errs []error
	groups := make([]GroupInfo, 0, len(lags))
	for _, l := range lags.Sorted() {
		if err := l.Error(); err != nil {
			errs = append(errs, fmt.Errorf("describe consumer group %s: %w", l.Group, err))
			continue
		}
		g := GroupInfo{Name: l.Group, State: l.State, Members: len(l.Members)}
		for topic, partitions := range l.Lag {
			if isInternalTopic(topic) {
				continue
			}
			gt := GroupTopic{Topic: topic}
			for _, m := range partitions {
				gp := GroupPartition{Partition: m.Partition, Committed: m.Commit.At, End: m.End.Offset, Lag: m.Lag}
				if m.Err != nil {
					gp.Lag = -1
				}
				if gp.Committed < 0 {
					gp.Committed = -1
				} else {
					gt.Committed += gp.Committed
				}
				if m.End.Err == nil {
					gt.End += gp.End
				}
				if gp.Lag > 0 {
					gt.Lag += gp.Lag
				}
				gt.Partitions = append(gt.Partitions, gp)
			}
			slices.SortFunc(gt.Partitions, func(a, b GroupPartition) int { return cmp.Compare(a.Partition, b.Partition) })
			g.Topics = append(g.Topics, gt)
			g.Lag += gt.Lag
		}
		slices.SortFunc(g.Topics, func(a, b GroupTopic) int { return strings.Compare(a.Topic, b.Topic) })
		groups = append(groups, g)
	}
	return groups, errors.Join(errs...)
}

// Group returns the group named name and whether the overview has it.
func (o Overview) Group(name string) (GroupInfo, bool) {
	for _, g := range o.Groups {
		if g.Name == name {
			return g, true
		}
	}
	return GroupInfo{}, false
}

// Topic returns the topic named name and whether the overview has it.
func (o Overview) Topic(name string) (TopicInfo, bool) {
	for _, t := range o.Topics {
		if t.Name == name {
			return t, true
		}
	}
	return TopicInfo{}, false
}

// Topic returns the group's progress on topic and whether it has any.
func (g GroupInfo) Topic(topic string) (GroupTopic, bool) {
	for _, t := range g.Topics {
		if t.Topic == topic {
			return t, true
		}
	}
	return GroupTopic{}, false
}

// WriteTable writes o as two aligned plain-text tables, topics then
// consumer groups (one row per group and topic).
func (o Overview) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	t := &tableWriter{w: tw}

	t.row("TOPIC", "PARTITIONS", "MESSAGES", "END OFFSETS")
	if len(o.Topics) == 0 {
		t.row("(no topics)")
	}
	for _, topic := range o.Topics {
		ends := make([]string, len(topic.Partitions))
		for i, p := range topic.Partitions {
			ends[i] = strconv.FormatInt(p.End, 10)
		}
		t.row(topic.Name, strconv.Itoa(len(topic.Partitions)), strconv.FormatInt(topic.Messages, 10), strings.Join(ends, " "))
	}
	t.row()
	t.row("GROUP", "STATE", "MEMBERS", "TOPIC", "COMMITTED", "END", "LAG")
	if len(o.Groups) == 0 {
		t.row("(no consumer groups)")
	}
	for _, g := range o.Groups {
		if len(g.Topics) == 0 {
			t.row(g.Name, g.State, strconv.Itoa(g.Members), "-", "-", "-", "-")
		}
		for _, gt := range g.Topics {
			t.row(g.Name, g.State, strconv.Itoa(g.Members), gt.Topic,
				strconv.FormatInt(gt.Committed, 10), strconv.FormatInt(gt.End, 10), strconv.FormatInt(gt.Lag, 10))
		}
	}
	if t.err != nil {
		return fmt.Errorf("write topics table: %w", t.err)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write topics table: %w", err)
	}
	return nil
}

// tableWriter writes tab-separated rows and keeps the first error.
type tableWriter struct {
	w   io.Writer
	err error
}

func (t *tableWriter) row(cells ...string) {
	if t.err != nil {
		return
	}
	_, t.err = io.WriteString(t.w, strings.Join(cells, "\t")+"\n")
}
