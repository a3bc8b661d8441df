package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/millrace/millrace/platform/kafka"
)

// `millrace broker`: a Kafka-protocol cluster (franz-go's kfake) as a
// process of its own, for the many-machines topology on one machine
// (deploy/local/): the roles talk to it over TCP as they would to a Kafka
// cluster, and it can be stopped and started apart from them. It is not
// Kafka: one process holds every broker, nothing is replicated, and it
// listens on loopback only. Compose runs Apache Kafka instead.

// brokerConfig is the configuration of `millrace broker`.
type brokerConfig struct {
	// Brokers is how many brokers the cluster has; partitions are spread
	// over them, so clients meet leaders on several connections.
	Brokers int
	// Addr is where the first broker listens; the others listen on the
	// ports after it. Port 0 lets each broker pick a free port (and then
	// a restart cannot keep them).
	Addr string
	// DataDir holds the topics, records and committed group offsets; a
	// broker started again on it carries on where the last one stopped.
	DataDir string
	// Partitions of topics created without a count.
	Partitions int
	// SyncWrites fsyncs every batch (slower; survives a machine crash,
	// not only a process crash).
	SyncWrites bool
	LogLevel   string
	LogFormat  string
}

func (c *brokerConfig) setDefaults() {
	if c.Brokers == 0 {
		c.Brokers = 3
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:9092"
	}
	if c.DataDir == "" {
		c.DataDir = ".millrace/broker"
	}
	if c.Partitions == 0 {
		c.Partitions = 3
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

// Validate reports every problem at once.
func (c brokerConfig) Validate() error {
	var errs []error
	if c.Brokers < 1 || c.Brokers > 16 {
		errs = append(errs, fmt.Errorf("brokers %d: want 1..16", c.Brokers))
	}
	host, port, err := net.SplitHostPort(c.Addr)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("broker address %q: want host:port: %w", c.Addr, err))
	case !isLoopbackAddr(c.Addr):
		errs = append(errs, fmt.Errorf("broker address %q: host %q must be a loopback address such as 127.0.0.1: the broker has no authentication", c.Addr, host))
	default:
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p+c.Brokers-1 > 65535 {
			errs = append(errs, fmt.Errorf("broker address %q: want a port from 0 to %d for %d brokers", c.Addr, 65535-max(c.Brokers-1, 0), c.Brokers))
		}
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir: required, the brokers persist their log there"))
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		errs = append(errs, fmt.Errorf("partitions %d: want 1..1024", c.Partitions))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ports are the ports of the brokers: consecutive from Addr's, or all 0.
func (c brokerConfig) ports() (host string, ports []int) {
	host, p, _ := net.SplitHostPort(c.Addr) // checked by Validate
	first, _ := strconv.Atoi(p)
	for i := range c.Brokers {
		if first == 0 {
			ports = append(ports, 0)
			continue
		}
		ports = append(ports, first+i)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	return host, ports
}

func newBrokerCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var cfg brokerConfig
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run a Kafka-protocol cluster of several brokers as a process of its own, on loopback",
		Long: `broker runs a Kafka-protocol cluster (franz-go's kfake) in one process: --brokers brokers
on consecutive loopback ports from --addr, persisted under --data-dir. It stands in for a Kafka
cluster in the local many-machines topology (deploy/local/up.sh): the roles (millrace gateway,
worker, projector) reach it through KAFKA_BROKERS like any cluster, and it can be stopped and
started apart from them. Stop it with Ctrl-C or SIGTERM: its state is written to the data
directory, and a start on the same directory and ports carries on, committed offsets included.

It is not Kafka: one process holds every broker and nothing is replicated. Compose runs Apache
Kafka (KRaft) instead; see docs/operations.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.setDefaults()
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			logger, err := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
			if err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			return runBroker(cmd.Context(), cfg, logger, stdout)
		},
	}
	partitions, _ := strconv.Atoi(getenv("MILLRACE_PARTITIONS"))
	fs := cmd.Flags()
	fs.IntVar(&cfg.Brokers, "brokers", 3, "number of brokers in the cluster")
	fs.StringVar(&cfg.Addr, "addr", envOr(getenv, "MILLRACE_BROKER_ADDR", "127.0.0.1:9092"), "loopback address of the first broker; the others take the next ports (MILLRACE_BROKER_ADDR)")
	fs.StringVar(&cfg.DataDir, "data-dir", envOr(getenv, "MILLRACE_BROKER_DATA_DIR", ".millrace/broker"), "directory the brokers persist topics, records and group offsets to (MILLRACE_BROKER_DATA_DIR)")
	fs.IntVar(&cfg.Partitions, "partitions", partitions, "partitions of topics created without a count (MILLRACE_PARTITIONS, default 3)")
	fs.BoolVar(&cfg.SyncWrites, "sync-writes", false, "fsync every batch: survives a machine crash, about 10x slower")
	fs.StringVar(&cfg.LogLevel, "log-level", envOr(getenv, "MILLRACE_LOG_LEVEL", "info"), "debug, info, warn or error (MILLRACE_LOG_LEVEL)")
	fs.StringVar(&cfg.LogFormat, "log-format", envOr(getenv, "MILLRACE_LOG_FORMAT", "text"), "text or json (MILLRACE_LOG_FORMAT)")
	return cmd
}

// runBroker runs the cluster until ctx is cancelled, then writes its state
// to the data directory and returns.
func runBroker(ctx context.Context, cfg brokerConfig, logger *slog.Logger, stdout io.Writer) error {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data directory %s: %w", cfg.DataDir, err)
	}
	host, ports := cfg.ports()
	opts := []kfake.Opt{
		kfake.Ports(ports...),
		// kfake listens on 127.0.0.1:<port>; pin the loopback host we
		// validated, whatever kfake's default becomes.
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			_, p, err := net.SplitHostPort(address)
			if err != nil {
				return nil, fmt.Errorf("listen on %s: %w", address, err)
			}
			return net.Listen(network, net.JoinHostPort(host, p))
		}),
		kfake.DataDir(cfg.DataDir),
		kfake.DefaultNumPartitions(cfg.Partitions),
		// As the embedded broker of millrace dev: records and committed
		// offsets are kept, since projections replay from the log.
		kfake.BrokerConfigs(map[string]string{
			"log.retention.ms":          "-1",
			"offsets.retention.minutes": strconv.Itoa(10 * 365 * 24 * 60),
		}),
		kfake.WithLogger(kafka.BrokerLogger(logger.With("component", "broker"))),
	}
	if cfg.SyncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start %d brokers from %s with data in %s: %w", cfg.Brokers, cfg.Addr, cfg.DataDir, err)
	}
	addrs := cluster.ListenAddrs()
	logger.Info("brokers listening", "brokers", strings.Join(addrs, ","), "data_dir", cfg.DataDir)
	fmt.Fprintf(stdout, "millrace broker is ready\n")
	fmt.Fprintf(stdout, "  brokers   %s\n", strings.Join(addrs, ","))
	fmt.Fprintf(stdout, "  data      %s\n", cfg.DataDir)
	fmt.Fprintf(stdout, "  use       KAFKA_BROKERS=%s\n", strings.Join(addrs, ","))
	fmt.Fprintf(stdout, "Press Ctrl-C to stop.\n")

	<-ctx.Done()
	logger.Info("shutting down: writing state to the data directory")
	cluster.Close() // persists; failures reach the logger
	logger.Info("stopped")
	return nil
}
