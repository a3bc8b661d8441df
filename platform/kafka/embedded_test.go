package kafka_test

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/millrace/millrace/platform/kafka"
)

func TestEmbeddedConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  kafka.EmbeddedConfig
		want []string // substrings of the error; none: valid
	}{
		{name: "defaults with a data dir", cfg: kafka.EmbeddedConfig{DataDir: "/tmp/x"}},
		{name: "free port on localhost", cfg: kafka.EmbeddedConfig{Addr: "localhost:0", DataDir: "/tmp/x"}},
		{name: "ipv6 loopback", cfg: kafka.EmbeddedConfig{Addr: "[::1]:9092", DataDir: "/tmp/x"}},
		{name: "every interface refused", cfg: kafka.EmbeddedConfig{Addr: "0.0.0.0:9092", DataDir: "/tmp/x"}, want: []string{"loopback"}},
		{name: "empty host refused", cfg: kafka.EmbeddedConfig{Addr: ":9092", DataDir: "/tmp/x"}, want: []string{"loopback"}},
		{name: "lan address refused", cfg: kafka.EmbeddedConfig{Addr: "192.168.1.10:9092", DataDir: "/tmp/x"}, want: []string{"loopback"}},
		{name: "bad port", cfg: kafka.EmbeddedConfig{Addr: "127.0.0.1:http", DataDir: "/tmp/x"}, want: []string{"port"}},
		{
			name: "every problem at once",
			cfg:  kafka.EmbeddedConfig{Addr: "example.com:1", Partitions: -1},
			want: []string{"loopback", "data dir", "partitions"},
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

func TestEmbeddedListensOnLoopbackOnly(t *testing.T) {
	b, _ := startBroker(t)
	addrs := b.Addrs()
	if len(addrs) != 1 {
		t.Fatalf("Addrs() = %v, want one address", addrs)
	}
	host, port, err := net.SplitHostPort(addrs[0])
	if err != nil {
		t.Fatalf("Addrs()[0] = %q: %v", addrs[0], err)
	}
	if host != "127.0.0.1" || port == "0" {
		t.Fatalf("Addrs()[0] = %q, want 127.0.0.1 and the port picked", addrs[0])
	}

	// The port must not answer on the machine's other addresses.
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("interface addresses: %v", err)
	}
	for _, a := range ifaddrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok || ipnet.IP.IsLoopback() || ipnet.IP.To4() == nil {
			continue
		}
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(ipnet.IP.String(), port), time.Second)
		if err == nil {
			_ = conn.Close()
			t.Errorf("broker port %s answers on %s, want loopback only", port, ipnet.IP)
		}
	}
}

func TestEmbeddedRejectsBusyPort(t *testing.T) {
	b, _ := startBroker(t)
	_, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: b.Addrs()[0], DataDir: t.TempDir()})
	if err == nil {
		t.Fatal("second broker on a busy port started, want an error")
	}
	if !strings.Contains(err.Error(), b.Addrs()[0]) {
		t.Errorf("error %q does not name the address", err)
	}
}

func TestEmbeddedAutoCreatesTopicsWhenAsked(t *testing.T) {
	ctx := testContext(t, 20*time.Second)
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Partitions: 5, AutoCreateTopics: true})
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })

	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs()...), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "auto", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("produce to a new topic: %v", err)
	}

	o, err := kafka.Inspect(ctx, kafka.Config{Brokers: b.Addrs()})
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	if ti, ok := o.Topic("auto"); !ok || len(ti.Partitions) != 5 || ti.Messages != 1 {
		t.Errorf("auto-created topic = %+v, want 5 partitions and 1 message", ti)
	}
}

// TestEmbeddedRestartKeepsDataAndOffsets publishes, consumes and acks part,
// restarts the broker on the same data dir and port, and checks that every
// record is still there and the group resumes after its committed offset.
func TestEmbeddedRestartKeepsDataAndOffsets(t *testing.T) {
	ctx := testContext(t, 45*time.Second)
	dir := t.TempDir()
	const (
		topic = "durable"
		group = "durable-group"
		total = 10
		acked = 6
	)

	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	addr := b.Addrs()[0]
	cfg := kafka.Config{Brokers: []string{addr}}
	ensureTopic(t, ctx, cfg, topic, 2)

	pub := newPublisher(t, cfg)
	published := make(map[string]bool)
	for i := range total {
		msg := event([]string{"a", "b", "c"}[i%3], "{}")
		published[msg.UUID] = true
		if err := pub.Publish(topic, msg); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	if err := pub.Close(); err != nil {
		t.Fatalf("close publisher: %v", err)
	}

	ch, closeSub := subscribe(t, ctx, cfg, group, topic)
	first := receive(t, ctx, ch, acked)
	// Ack then an immediate close may leave the last offset uncommitted:
	// wait until the broker has every ack before stopping.
	groupCommitted(t, ctx, cfg, group, topic, acked)
	closeSub()
	if err := b.Close(); err != nil {
		t.Fatalf("close broker: %v", err)
	}

	b2, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: addr, DataDir: dir})
	if err != nil {
		t.Fatalf("restart broker on %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = b2.Close() })
	if got := b2.Addrs(); !slices.Equal(got, []string{addr}) {
		t.Fatalf("restarted broker listens on %v, want %s", got, addr)
	}

	o, err := kafka.Inspect(ctx, cfg)
	if err != nil {
		t.Fatalf("inspect after restart: %v", err)
	}
	if ti, ok := o.Topic(topic); !ok || ti.Messages != total || len(ti.Partitions) != 2 {
		t.Fatalf("after restart topic is %+v, want %d messages in 2 partitions", ti, total)
	}
	if g, ok := o.Group(group); !ok || g.Lag != total-acked {
		t.Fatalf("after restart group is %+v, want lag %d", g, total-acked)
	}

	ch2, _ := subscribe(t, ctx, cfg, group, topic)
	rest := receive(t, ctx, ch2, total-acked)
	seen := make(map[string]bool)
	for _, msg := range slices.Concat(first, rest) {
		if seen[msg.UUID] {
			t.Errorf("message %s delivered again after restart although acked", msg.UUID)
		}
		seen[msg.UUID] = true
		if !published[msg.UUID] {
			t.Errorf("message %s was never published", msg.UUID)
		}
	}
	if len(seen) != total {
		t.Errorf("received %d distinct messages, want %d", len(seen), total)
	}
	assertPayloads(t, rest, "{}")
}

func assertPayloads(t *testing.T, msgs []*message.Message, want string) {
	t.Helper()
	for _, msg := range msgs {
		if string(msg.Payload) != want {
			t.Errorf("message %s payload %q, want %q", msg.UUID, msg.Payload, want)
		}
	}
}
