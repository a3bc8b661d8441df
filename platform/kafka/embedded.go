package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultEmbeddedAddr is where the embedded broker listens unless told otherwise.
const DefaultEmbeddedAddr = "127.0.0.1:9092"

// DefaultEmbeddedPartitions is the partition count of topics the embedded
// broker creates without being told how many (a topic declared with zero
// partitions, or an auto-created one).
const DefaultEmbeddedPartitions = 3

// EmbeddedConfig configures an EmbeddedBroker.
type EmbeddedConfig struct {
	// Addr is the loopback host:port to listen on; DefaultEmbeddedAddr when
	// empty. Port 0 picks a free port (see EmbeddedBroker.Addrs). The host
	// must be a loopback address (127.0.0.0/8, ::1 or localhost): the
	// embedded broker has no authentication and never listens beyond this
	// machine.
	Addr string
	// DataDir is the directory the broker persists its topics, records and
	// committed group offsets to. Required. A broker started again on the
	// same directory carries on where the previous one stopped.
	DataDir string
	// Partitions is the partition count of topics created without one;
	// DefaultEmbeddedPartitions when zero.
	Partitions int
	// AutoCreateTopics lets clients that ask for it (kcat, other Kafka
	// clients) create topics by producing to or fetching metadata of a topic
	// that does not exist, as Kafka's auto.create.topics.enable does. Off by
	// default: millrace declares its topics with EnsureTopics.
	AutoCreateTopics bool
	// Logger receives the broker's warnings and errors (and its request log
	// at debug level); nothing is logged when nil.
	Logger *slog.Logger
}

func (c *EmbeddedConfig) setDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultEmbeddedAddr
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultEmbeddedPartitions
	}
}

// Validate reports every problem with c at once.
func (c EmbeddedConfig) Validate() error {
	var errs []error
	if c.Addr != "" {
		if _, _, err := loopbackHostPort(c.Addr); err != nil {
			errs = append(errs, err)
		}
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("embedded kafka data dir: required, the broker persists its log there"))
	}
	if c.Partitions < 0 {
		errs = append(errs, fmt.Errorf("embedded kafka partitions %d: must not be negative", c.Partitions))
	}
	return errors.Join(errs...)
}

// loopbackHostPort splits addr and checks that its host is a loopback address.
func loopbackHostPort(addr string) (host string, port int, err error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("embedded kafka addr %q: want host:port: %w", addr, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("embedded kafka addr %q: port %q is not a number from 0 to 65535", addr, p)
	}
	if h == "localhost" {
		return "127.0.0.1", port, nil
	}
	ip := net.ParseIP(h)
	if ip == nil || !ip.IsLoopback() {
		return "", 0, fmt.Errorf("embedded kafka addr %q: host must be a loopback address such as 127.0.0.1", addr)
	}
	return ip.String(), port, nil
}

// EmbeddedBroker is a single Kafka-protocol broker running inside this
// process (franz-go's kfake), listening on one loopback TCP address and
// persisting to a data directory. Real Kafka clients (Sarama, franz-go,
// librdkafka/kcat) talk to it over TCP, so the rest of millrace uses it
// exactly as it uses a Kafka cluster.
//
// Retention is off by default (log.retention.ms=-1) and committed group
// offsets are kept for ten years instead of Kafka's seven days, so a
// development machine left alone for a week loses nothing; topics declared
// with a Retention keep their own setting.
//
// An EmbeddedBroker is safe for concurrent use. The caller owns it and must
// Close it; Close flushes its state to DataDir.
type EmbeddedBroker struct {
	cluster *kfake.Cluster
	addrs   []string
}

// tenYearsInMinutes is how long the embedded broker keeps committed offsets
// of groups that stopped consuming.
const tenYearsInMinutes = 10 * 365 * 24 * 60

// StartEmbedded starts a broker listening on cfg.Addr and loads what a
// previous broker left in cfg.DataDir. It returns once the broker accepts
// connections.
func StartEmbedded(cfg EmbeddedConfig) (*EmbeddedBroker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("start embedded kafka: %w", err)
	}
	host, port, err := loopbackHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka: %w", err)
	}

	opts := []kfake.Opt{
		kfake.Ports(port), // one broker, on this port (0: any free one)
		// kfake listens on 127.0.0.1:<port>; pin the host we validated
		// so that stays true whatever kfake's default becomes.
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			_, p, err := net.SplitHostPort(address)
			if err != nil {
				return nil, fmt.Errorf("listen on %s: %w", address, err)
			}
			return net.Listen(network, net.JoinHostPort(host, p))
		}),
		kfake.DataDir(cfg.DataDir),
		kfake.DefaultNumPartitions(cfg.Partitions),
		kfake.BrokerConfigs(map[string]string{
			"log.retention.ms":          "-1",
			"offsets.retention.minutes": strconv.Itoa(tenYearsInMinutes),
		}),
	}
	if cfg.AutoCreateTopics {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	if cfg.Logger != nil {
		opts = append(opts, kfake.WithLogger(BrokerLogger(cfg.Logger.With("component", "embedded-kafka"))))
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka on %s with data in %s: %w", net.JoinHostPort(host, strconv.Itoa(port)), cfg.DataDir, err)
	}
	return &EmbeddedBroker{cluster: cluster, addrs: cluster.ListenAddrs()}, nil
}

// Addrs returns the host:port addresses the broker listens on, for
// Config.Brokers.
func (b *EmbeddedBroker) Addrs() []string {
	return append([]string(nil), b.addrs...)
}

// Close stops the broker: it stops accepting connections, writes its state
// to the data directory and returns. Clients still connected see their
// connections closed. Closing twice is harmless. kfake reports a failure to
// persist only through the Logger.
func (b *EmbeddedBroker) Close() error {
	b.cluster.Close()
	return nil
}

// BrokerLogger bridges kfake's printf-style logger to l: its errors and
// warnings as such, its per-request info records at debug.
func BrokerLogger(l *slog.Logger) kfake.Logger { return kfakeLogger{l} }

type kfakeLogger struct{ l *slog.Logger }

func (k kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	var sl slog.Level
	switch level {
	case kfake.LogLevelError:
		sl = slog.LevelError
	case kfake.LogLevelWarn:
		sl = slog.LevelWarn
	case kfake.LogLevelInfo:
		sl = slog.LevelDebug // kfake logs every request at info
	default:
		sl = slog.LevelDebug - 4
	}
	ctx := context.Background()
	if !k.l.Enabled(ctx, sl) {
		return
	}
	k.l.Log(ctx, sl, fmt.Sprintf(format, args...))
}
