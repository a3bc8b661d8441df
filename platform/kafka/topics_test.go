package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/millrace/millrace/platform/kafka"
)

func TestEnsureTopics(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	_, cfg := startBroker(t)

	declared := []kafka.Topic{
		{Name: "orders.commands", Partitions: 3},
		{Name: "orders.events", Partitions: 6, ReplicationFactor: 1},
		{Name: "users.snapshots", Partitions: 2, Compact: true},
		{Name: "audit", Partitions: 1, Retention: 36 * time.Hour},
		{Name: "broker-default"}, // the embedded default: 3
	}
	wantPartitions := map[string]int{"orders.commands": 3, "orders.events": 6, "users.snapshots": 2, "audit": 1, "broker-default": 3}
	wantConfigs := map[string]map[string]string{
		"orders.commands": {"retention.ms": "-1", "cleanup.policy": "delete"},
		"users.snapshots": {"retention.ms": "-1", "cleanup.policy": "compact"},
		"audit":           {"retention.ms": "129600000", "cleanup.policy": "delete"},
	}

	for _, round := range []string{"create", "again: idempotent"} {
		t.Run(round, func(t *testing.T) {
			if err := kafka.EnsureTopics(ctx, cfg, declared...); err != nil {
				t.Fatalf("EnsureTopics: %v", err)
			}
			assertPartitions(t, ctx, cfg, wantPartitions)
		})
	}

	t.Run("settings", func(t *testing.T) {
		adm := admin(t, cfg)
		for topic, want := range wantConfigs {
			rcs, err := adm.DescribeTopicConfigs(ctx, topic)
			if err != nil {
				t.Fatalf("describe %s configs: %v", topic, err)
			}
			rc, err := rcs.On(topic, nil)
			if err != nil {
				t.Fatalf("configs of %s: %v", topic, err)
			}
			got := make(map[string]string)
			for _, c := range rc.Configs {
				if _, ok := want[c.Key]; ok {
					got[c.Key] = c.MaybeValue()
				}
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s %s = %q, want %q", topic, k, got[k], v)
				}
			}
		}
	})

	t.Run("grows, never shrinks", func(t *testing.T) {
		err := kafka.EnsureTopics(ctx, cfg,
			kafka.Topic{Name: "orders.commands", Partitions: 5},
			kafka.Topic{Name: "orders.events", Partitions: 2},
		)
		if err != nil {
			t.Fatalf("EnsureTopics: %v", err)
		}
		assertPartitions(t, ctx, cfg, map[string]int{"orders.commands": 5, "orders.events": 6})
	})

	t.Run("reports every invalid declaration by name", func(t *testing.T) {
		err := kafka.EnsureTopics(ctx, cfg,
			kafka.Topic{Name: "bad name!", Partitions: 1},
			kafka.Topic{Name: "negative", Partitions: -2},
			kafka.Topic{Name: "twice", Partitions: 1},
			kafka.Topic{Name: "twice", Partitions: 2},
			kafka.Topic{},
		)
		if err == nil {
			t.Fatal("EnsureTopics with invalid declarations: want an error")
		}
		for _, want := range []string{`"bad name!"`, `"negative"`, `"twice"`, "name: required"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
		o, err := kafka.Inspect(ctx, cfg)
		if err != nil {
			t.Fatalf("inspect: %v", err)
		}
		if _, ok := o.Topic("twice"); ok {
			t.Error("topic twice created although the declarations were invalid")
		}
	})

	t.Run("names the topic the broker refuses", func(t *testing.T) {
		// One broker cannot hold three replicas.
		err := kafka.EnsureTopics(ctx, cfg, kafka.Topic{Name: "replicated", Partitions: 1, ReplicationFactor: 3})
		if err == nil {
			t.Fatal("EnsureTopics with replication factor 3 on one broker: want an error")
		}
		if !strings.Contains(err.Error(), "replicated") {
			t.Errorf("error %q does not name the topic", err)
		}
	})
}

func assertPartitions(t *testing.T, ctx context.Context, cfg kafka.Config, want map[string]int) {
	t.Helper()
	o, err := kafka.Inspect(ctx, cfg)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	for name, n := range want {
		ti, ok := o.Topic(name)
		if !ok {
			t.Errorf("topic %s missing", name)
			continue
		}
		if len(ti.Partitions) != n {
			t.Errorf("topic %s has %d partitions, want %d", name, len(ti.Partitions), n)
		}
	}
}

func admin(t *testing.T, cfg kafka.Config) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	adm := kadm.NewClient(cl)
	t.Cleanup(adm.Close)
	return adm
}

func TestInspect(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	_, cfg := startBroker(t)
	const (
		topic = "inspected"
		group = "inspector"
	)
	ensureTopic(t, ctx, cfg, topic, 2)
	ensureTopic(t, ctx, cfg, "empty", 1)

	pub := newPublisher(t, cfg)
	for i := range 5 {
		if err := pub.Publish(topic, event([]string{"x", "y"}[i%2], "{}")); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	ch, closeSub := subscribe(t, ctx, cfg, group, topic)
	receive(t, ctx, ch, 3)
	g := groupCommitted(t, ctx, cfg, group, topic, 3)
	if g.Members != 1 || g.State != "Stable" || g.Lag != 2 {
		t.Errorf("active group = %+v, want 1 member, Stable, lag 2", g)
	}
	closeSub()

	o, err := kafka.Inspect(ctx, cfg)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	names := make([]string, 0, len(o.Topics))
	for _, ti := range o.Topics {
		names = append(names, ti.Name)
	}
	if !slices.Equal(names, []string{"empty", topic}) {
		t.Errorf("topics = %v, want [empty %s] (sorted, no internal topics)", names, topic)
	}
	ti, _ := o.Topic(topic)
	var endSum int64
	for _, p := range ti.Partitions {
		endSum += p.End
		if p.Start != 0 {
			t.Errorf("partition %d starts at %d, want 0", p.Partition, p.Start)
		}
	}
	if ti.Messages != 5 || endSum != 5 {
		t.Errorf("topic %s: %d messages, end offsets sum %d; want 5 and 5", topic, ti.Messages, endSum)
	}

	g, ok := o.Group(group)
	if !ok {
		t.Fatalf("group %s not listed in %+v", group, o.Groups)
	}
	gt, _ := g.Topic(topic)
	if g.Members != 0 || g.State != "Empty" || g.Lag != 2 || gt.Committed != 3 || gt.End != 5 || gt.Lag != 2 {
		t.Errorf("stopped group = %+v, want no members, Empty, committed 3 of 5, lag 2", g)
	}
	for _, p := range gt.Partitions {
		from := p.Committed
		if from < 0 { // nothing committed: the group starts at the oldest record, 0 here
			from = 0
		}
		if p.Lag != p.End-from {
			t.Errorf("partition %d: lag %d, want end %d - committed %d", p.Partition, p.Lag, p.End, p.Committed)
		}
	}

	var table bytes.Buffer
	if err := o.WriteTable(&table); err != nil {
		t.Fatalf("WriteTable: %v", err)
	}
	rows := make(map[string][]string)
	for line := range strings.Lines(table.String()) {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = f
		}
	}
	for first, want := range map[string][]string{
		"TOPIC": {"TOPIC", "PARTITIONS", "MESSAGES", "END", "OFFSETS"},
		topic:   {topic, "2", "5"},
		"empty": {"empty", "1", "0", "0"},
		"GROUP": {"GROUP", "STATE", "MEMBERS", "TOPIC", "COMMITTED", "END", "LAG"},
		group:   {group, "Empty", "0", topic, "3", "5", "2"},
	} {
		if got := rows[first]; len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
			t.Errorf("table row %q = %v, want it to start with %v\n%s", first, got, want, table.String())
		}
	}
}

func ExampleOverview_WriteTable() {
	o := kafka.Overview{
		Topics: []kafka.TopicInfo{{
			Name:       "orders.events",
			Partitions: []kafka.PartitionInfo{{Partition: 0, End: 7}, {Partition: 1, Start: 2, End: 5}},
			Messages:   10,
		}},
		Groups: []kafka.GroupInfo{{
			Name: "projections.orders", State: "Stable", Members: 1, Lag: 4,
			Topics: []kafka.GroupTopic{{Topic: "orders.events", Committed: 8, End: 12, Lag: 4}},
		}},
	}
	if err := o.WriteTable(os.Stdout); err != nil {
		fmt.Println(err)
	}
	// Output:
	// TOPIC          PARTITIONS  MESSAGES  END OFFSETS
	// orders.events  2           10        7 5
	//
	// GROUP               STATE   MEMBERS  TOPIC          COMMITTED  END  LAG
	// projections.orders  Stable  1        orders.events  8          12   4
}
