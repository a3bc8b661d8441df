package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrGroupActive is wrapped by the error of an offset commit or reset for a
// consumer group that still has members: Kafka only lets a group's offsets be
// moved from outside while nobody consumes in it.
var ErrGroupActive = errors.New("consumer group has active members")

// Admin lists offsets of topics and moves and deletes consumer groups: what
// replaying a projection and resetting a handler need from the broker. It
// keeps one connection pool for its lifetime. It is safe for concurrent use;
// the caller owns it and must Close it.
//
// Offsets are maps from topic to partition to offset. An offset is always
// the offset of the next record to read: a partition's start offset is its
// oldest record, its end offset the one the next record written will get.
type Admin struct {
	client  *kgo.Client
	adm     *kadm.Client
	brokers []string
}

// NewAdmin connects an Admin to the cluster cfg names (lazily: the first call
// dials).
func NewAdmin(cfg Config) (*Admin, error) {
	cfg, err := cfg.prepare()
	if err != nil {
		return nil, fmt.Errorf("create kafka admin: %w", err)
	}
	cl, err := kgo.NewClient(cfg.kgoOptions()...)
	if err != nil {
		return nil, fmt.Errorf("create kafka admin for %v: %w", cfg.Brokers, err)
	}
	return &Admin{client: cl, adm: kadm.NewClient(cl), brokers: cfg.Brokers}, nil
}

// Close closes the admin's connections.
func (a *Admin) Close() error {
	a.client.Close()
	return nil
}

// StartOffsets returns, per partition of each topic, the offset of its oldest
// record.
func (a *Admin) StartOffsets(ctx context.Context, topics ...string) (map[string]map[int32]int64, error) {
	listed, err := a.adm.ListStartOffsets(ctx, topics...)
	return listedOffsets("list start offsets", topics, listed, err)
}

// EndOffsets returns, per partition of each topic, the offset the next record
// written will get (the high watermark).
func (a *Admin) EndOffsets(ctx context.Context, topics ...string) (map[string]map[int32]int64, error) {
	listed, err := a.adm.ListEndOffsets(ctx, topics...)
	return listedOffsets("list end offsets", topics, listed, err)
}

// OffsetsAt returns, per partition of each topic, the offset of the first
// record whose timestamp is at or after t, or the partition's end offset when
// every record is older.
func (a *Admin) OffsetsAt(ctx context.Context, t time.Time, topics ...string) (map[string]map[int32]int64, error) {
	listed, err := a.adm.ListOffsetsAfterMilli(ctx, t.UnixMilli(), topics...)
	return listedOffsets("list offsets at "+t.UTC().Format(time.RFC3339), topics, listed, err)
}

func listedOffsets(what string, topics []string, listed kadm.ListedOffsets, err error) (map[string]map[int32]int64, error) {
	if err != nil {
		return nil, fmt.Errorf("%s of %s: %w", what, strings.Join(topics, ", "), err)
	}
	out := make(map[string]map[int32]int64, len(listed))
	var errs []error
	for topic, partitions := range listed {
		for p, o := range partitions {
			if o.Err != nil {
				if errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
					errs = append(errs, fmt.Errorf("%s: topic %s does not exist", what, topic))
				} else {
					errs = append(errs, fmt.Errorf("%s of %s/%d: %w", what, topic, p, o.Err))
				}
				continue
			}
			if out[topic] == nil {
				out[topic] = map[int32]int64{}
			}
			out[topic][p] = o.Offset
		}
	}
	for _, t := range topics {
		if _, ok := listed[t]; !ok {
			errs = append(errs, fmt.Errorf("%s: topic %s does not exist", what, t))
		}
	}
	return out, errors.Join(errs...)
}

// CommittedOffsets returns the offsets group committed on the partitions of
// topics; a partition without a commit is absent.
func (a *Admin) CommittedOffsets(ctx context.Context, group string, topics ...string) (map[string]map[int32]int64, error) {
	resp, err := a.adm.FetchOffsetsForTopics(ctx, group, topics...)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("fetch offsets of group %s: %w", group, err)
	}
	out := map[string]map[int32]int64{}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.At < 0 {
			return
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.At
	})
	return out, nil
}

// GroupMembers returns how many members group has now; 0 for a group that
// does not exist.
func (a *Admin) GroupMembers(ctx context.Context, group string) (int, error) {
	described, err := a.adm.DescribeGroups(ctx, group)
	if err != nil {
		return 0, fmt.Errorf("describe group %s: %w", group, err)
	}
	d, ok := described[group]
	if !ok {
		return 0, nil
	}
	if d.Err != nil {
		if errors.Is(d.Err, kerr.GroupIDNotFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("describe group %s: %w", group, d.Err)
	}
	return len(d.Members), nil
}

// CommitGroupOffsets sets the committed offsets of group, creating the group
// when it does not exist; partitions not given keep theirs. The group must
// have no members (the error then wraps ErrGroupActive).
func (a *Admin) CommitGroupOffsets(ctx context.Context, group string, offsets map[string]map[int32]int64) error {
	members, err := a.GroupMembers(ctx, group)
	if err != nil {
		return fmt.Errorf("commit offsets of group %s: %w", group, err)
	}
	if members > 0 {
		return fmt.Errorf("commit offsets of group %s: %w (%d): stop its consumers first", group, ErrGroupActive, members)
	}
	var os kadm.Offsets
	for topic, partitions := range offsets {
		for p, at := range partitions {
			os.Add(kadm.Offset{Topic: topic, Partition: p, At: at, LeaderEpoch: -1})
		}
	}
	if len(os) == 0 {
		return nil
	}
	resp, err := a.adm.CommitOffsets(ctx, group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		if errors.Is(err, kerr.UnknownMemberID) || errors.Is(err, kerr.IllegalGeneration) || errors.Is(err, kerr.RebalanceInProgress) {
			return fmt.Errorf("commit offsets of group %s: %w: %w", group, ErrGroupActive, err)
		}
		return fmt.Errorf("commit offsets of group %s: %w", group, err)
	}
	return nil
}

// DeleteGroups deletes consumer groups and their committed offsets. Groups
// that do not exist are no error; a group with members is (wrapping
// ErrGroupActive).
func (a *Admin) DeleteGroups(ctx context.Context, groups ...string) error {
	if len(groups) == 0 {
		return nil
	}
	resp, err := a.adm.DeleteGroups(ctx, groups...)
	if err != nil {
		return fmt.Errorf("delete groups %s: %w", strings.Join(groups, ", "), err)
	}
	var errs []error
	for _, g := range groups {
		r, ok := resp[g]
		if !ok || r.Err == nil || errors.Is(r.Err, kerr.GroupIDNotFound) {
			continue
		}
		if errors.Is(r.Err, kerr.NonEmptyGroup) {
			errs = append(errs, fmt.Errorf("delete group %s: %w: %w", g, ErrGroupActive, r.Err))
			continue
		}
		errs = append(errs, fmt.Errorf("delete group %s: %w", g, r.Err))
	}
	return errors.Join(errs...)
}

// ResetTarget says where ResetGroup moves a group's offsets. Exactly one of
// its fields is set.
type ResetTarget struct {
	// Time moves each partition to its first record at or after Time (to
	// its end when every record is older).
	Time time.Time
	// Earliest moves each partition to its oldest record; Latest to its
	// end, skipping everything not yet consumed.
	Earliest, Latest bool
	// Offsets moves the partitions it names to the given offsets; the
	// others keep theirs. Offsets outside a partition's records are
	// clamped to its start or end.
	Offsets map[int32]int64
}

// Validate reports a target that names no position or more than one kind.
func (t ResetTarget) Validate() error {
	n := 0
	for _, set := range []bool{!t.Time.IsZero(), t.Earliest, t.Latest, t.Offsets != nil} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return errors.New("reset target: none given; give a time, earliest, latest or offsets")
	case n > 1:
		return errors.New("reset target: give only one of a time, earliest, latest or offsets")
	}
	for p, o := range t.Offsets {
		if p < 0 || o < 0 {
			return fmt.Errorf("reset target: partition %d offset %d: both must be at least 0", p, o)
		}
	}
	return nil
}

// String describes the target as the millrace reset command takes it.
func (t ResetTarget) String() string {
	switch {
	case !t.Time.IsZero():
		return "time " + t.Time.UTC().Format(time.RFC3339Nano)
	case t.Earliest:
		return "earliest"
	case t.Latest:
		return "latest"
	}
	parts := make([]string, 0, len(t.Offsets))
	for _, p := range slices.Sorted(maps.Keys(t.Offsets)) {
		parts = append(parts, fmt.Sprintf("%d=%d", p, t.Offsets[p]))
	}
	return "offsets " + strings.Join(parts, ",")
}

// OffsetReset is what a reset did to one partition.
type OffsetReset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// From is where the group would have read next before the reset: its
	// committed offset, or the partition's start when it had none.
	From int64 `json:"from"`
	// To is where it reads next after the reset.
	To int64 `json:"to"`
	// Start and End are the partition's oldest record and end offset.
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// Redelivered is how many records the group will read again: From - To when
// the reset moved back, else 0.
func (r OffsetReset) Redelivered() int64 { return max(r.From-r.To, 0) }

// Skipped is how many records the group will never read: To - From when the
// reset moved forward, else 0.
func (r OffsetReset) Skipped() int64 { return max(r.To-r.From, 0) }

// ResetGroup moves the committed offsets of group on every partition of
// topic to target and reports, per partition, where the group was and where
// it now is. The group must have no members (the error then wraps
// ErrGroupActive): stop its consumers first, start them again after.
func (a *Admin) ResetGroup(ctx context.Context, group, topic string, target ResetTarget) ([]OffsetReset, error) {
	if err := target.Validate(); err != nil {
		return nil, fmt.Errorf("reset group %s on %s: %w", group, topic, err)
	}
	plan, err := a.PlanReset(ctx, group, topic, target)
	if err != nil {
		return nil, err
	}
	offsets := map[string]map[int32]int64{topic: {}}
	for _, r := range plan {
		offsets[topic][r.Partition] = r.To
	}
	if err := a.CommitGroupOffsets(ctx, group, offsets); err != nil {
		return nil, fmt.Errorf("reset group %s on %s to %s: %w", group, topic, target, err)
	}
	return plan, nil
}

// PlanReset reports what ResetGroup would do, without changing anything.
func (a *Admin) PlanReset(ctx context.Context, group, topic string, target ResetTarget) ([]OffsetReset, error) {
	if err := target.Validate(); err != nil {
		return nil, fmt.Errorf("plan reset of group %s on %s: %w", group, topic, err)
	}
	starts, err := a.StartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("plan reset of group %s: %w", group, err)
	}
	ends, err := a.EndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("plan reset of group %s: %w", group, err)
	}
	committed, err := a.CommittedOffsets(ctx, group, topic)
	if err != nil {
		return nil, fmt.Errorf("plan reset of group %s: %w", group, err)
	}
	var at map[int32]int64
	if !target.Time.IsZero() {
		byTime, err := a.OffsetsAt(ctx, target.Time, topic)
		if err != nil {
			return nil, fmt.Errorf("plan reset of group %s: %w", group, err)
		}
		at = byTime[topic]
	}
	for p := range target.Offsets {
		if _, ok := ends[topic][p]; !ok {
			return nil, fmt.Errorf("plan reset of group %s: topic %s has no partition %d", group, topic, p)
		}
	}

	plan := make([]OffsetReset, 0, len(ends[topic]))
	for _, p := range slices.Sorted(maps.Keys(ends[topic])) {
		r := OffsetReset{Topic: topic, Partition: p, Start: starts[topic][p], End: ends[topic][p]}
		r.From = r.Start
		if c, ok := committed[topic][p]; ok {
			r.From = c
		}
		switch {
		case !target.Time.IsZero():
			r.To = r.End
			if o, ok := at[p]; ok && o >= 0 {
				r.To = o
			}
		case target.Earliest:
			r.To = r.Start
		case target.Latest:
			r.To = r.End
		default:
			r.To = r.From
			if o, ok := target.Offsets[p]; ok {
				r.To = o
			}
		}
		r.To = min(max(r.To, r.Start), r.End)
		plan = append(plan, r)
	}
	return plan, nil
}
