package kafka_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
)

// kcat returns the path of kcat, a Kafka client we did not write
// (librdkafka). The interop tests need it: they fail rather than skip.
func kcat(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is not installed (%v): run the project's test command (make test), which installs it", err)
	}
	return path
}

func runKcat(t *testing.T, ctx context.Context, stdin string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, kcat(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// kcatRecord is one line of kcat -J output.
type kcatRecord struct {
	Topic     string   `json:"topic"`
	Partition int32    `json:"partition"`
	Offset    int64    `json:"offset"`
	Key       *string  `json:"key"`
	Payload   *string  `json:"payload"`
	Headers   []string `json:"headers"` // name, value, name, value, …
}

func (r kcatRecord) header(name string) string {
	for i := 0; i+1 < len(r.Headers); i += 2 {
		if r.Headers[i] == name {
			return r.Headers[i+1]
		}
	}
	return ""
}

func TestKcatReadsOurHeaders(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	_, cfg := startBroker(t)
	const topic = "to-kcat"
	ensureTopic(t, ctx, cfg, topic, 2)

	msg := event("order-9", `{"orderId":"order-9"}`)
	if err := newPublisher(t, cfg).Publish(topic, msg); err != nil {
		t.Fatalf("publish: %v", err)
	}

	out := runKcat(t, ctx, "", "-b", cfg.Brokers[0], "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q")
	var recs []kcatRecord
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r kcatRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("kcat line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 1 {
		t.Fatalf("kcat read %d records, want 1:\n%s", len(recs), out)
	}
	r := recs[0]
	if r.Key == nil || *r.Key != "order-9" {
		t.Errorf("kcat key = %v, want order-9", r.Key)
	}
	if r.Payload == nil || *r.Payload != string(msg.Payload) {
		t.Errorf("kcat payload = %v, want %s", r.Payload, msg.Payload)
	}
	want := map[string]string{cloudevents.ID: msg.UUID}
	for _, k := range []string{cloudevents.Type, cloudevents.Source, cloudevents.SpecVersion, cloudevents.Time, cloudevents.Subject, cloudevents.PartitionKey, cloudevents.ContentType} {
		want[k] = msg.Metadata.Get(k)
	}
	for k, v := range want {
		if got := r.header(k); got != v {
			t.Errorf("kcat header %s = %q, want %q (headers %v)", k, got, v, r.Headers)
		}
	}
	for _, k := range cloudevents.TransportKeys() {
		if r.header(k) != "" {
			t.Errorf("transport key %s written as a header", k)
		}
	}
}

func TestSubscriberReadsKcatRecords(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	_, cfg := startBroker(t)
	const topic = "from-kcat"
	ensureTopic(t, ctx, cfg, topic, 2)

	id := uuid.NewString()
	runKcat(t, ctx, `user-3:{"userId":"user-3"}`+"\n",
		"-P", "-b", cfg.Brokers[0], "-t", topic, "-K:",
		"-H", "ce_type=users.user-registered.v1",
		"-H", "ce_id="+id,
		"-H", "ce_source=/java/users",
		"-H", "ce_specversion=1.0",
	)
	// A record with no CloudEvents headers at all.
	runKcat(t, ctx, `plain:hello`+"\n", "-P", "-b", cfg.Brokers[0], "-t", topic, "-K:")

	ch, _ := subscribe(t, ctx, cfg, "kcat-readers", topic)
	got := receive(t, ctx, ch, 2)
	byKey := make(map[string]int)
	for i, msg := range got {
		byKey[msg.Metadata.Get(cloudevents.PartitionKey)] = i
	}

	t.Run("CloudEvents headers become metadata", func(t *testing.T) {
		i, ok := byKey["user-3"]
		if !ok {
			t.Fatalf("no message with ce_partitionkey user-3 among %d", len(got))
		}
		msg := got[i]
		if msg.UUID != id {
			t.Errorf("UUID = %q, want ce_id %q", msg.UUID, id)
		}
		if string(msg.Payload) != `{"userId":"user-3"}` {
			t.Errorf("payload = %q", msg.Payload)
		}
		for k, v := range map[string]string{
			cloudevents.Type:        "users.user-registered.v1",
			cloudevents.ID:          id,
			cloudevents.Source:      "/java/users",
			cloudevents.SpecVersion: "1.0",
		} {
			if msg.Metadata.Get(k) != v {
				t.Errorf("metadata %s = %q, want %q", k, msg.Metadata.Get(k), v)
			}
		}
	})

	t.Run("a record without ce_id keeps a stable id", func(t *testing.T) {
		i, ok := byKey["plain"]
		if !ok {
			t.Fatalf("no message with ce_partitionkey plain among %d", len(got))
		}
		msg := got[i]
		if _, err := uuid.Parse(msg.UUID); err != nil {
			t.Fatalf("UUID %q: %v", msg.UUID, err)
		}
		// Read again by another group: same record, same id.
		ch2, _ := subscribe(t, ctx, cfg, "kcat-readers-again", topic)
		for _, again := range receive(t, ctx, ch2, 2) {
			if again.Metadata.Get(cloudevents.PartitionKey) == "plain" && again.UUID != msg.UUID {
				t.Errorf("redelivered record has UUID %s, first delivery had %s", again.UUID, msg.UUID)
			}
		}
	})

	// Our own reading of positions agrees with the broker's.
	for _, msg := range got {
		if topicGot, _, _, ok := kafka.Position(msg); !ok || topicGot != topic {
			t.Errorf("message %s has no position on %s", msg.UUID, topic)
		}
	}
}
