package main

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/millrace/millrace/platform/config"
	"github.com/millrace/millrace/platform/kafka"
)

// devConfig is the configuration of `millrace dev`. Flags win over
// environment variables, which win over defaults.
type devConfig struct {
	// DataDir holds the broker log, the SQLite files and everything else
	// that must survive a restart.
	DataDir string
	// HTTPAddr is where the gateway listens.
	HTTPAddr string
	// KafkaBrokers, when set, points millrace at an external Kafka cluster
	// instead of the embedded broker.
	KafkaBrokers []string
	// KafkaAddr is where the embedded broker listens.
	KafkaAddr string
	// KafkaPartitioner is how millrace's producers hash record keys to
	// partitions; the producers of other services sharing the topics must
	// hash the same way (docs/adr/0006-key-partitioning.md).
	KafkaPartitioner kafka.Partitioner
	// Partitions of every topic millrace creates.
	Partitions int
	// MaxBodyBytes bounds request bodies at the gateway.
	MaxBodyBytes int64
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout time.Duration
	LogLevel        string
	LogFormat       string
	// ConfigFile names the rules file (YAML or JSON: router and gateway
	// rules, log level), loaded at start and watched for changes. Empty
	// runs with the default rules. See wire_config.go.
	ConfigFile string
	// Env and Role name the rules document in Consul KV,
	// millrace/<env>/<role>/rules, read when CONSUL_HTTP_ADDR is set.
	Env  string
	Role string
	// Security: authentication (--auth-file, MILLRACE_JWT_*), the HTTP
	// server's abuse limits, SASL and TLS towards Kafka. See
	// wire_security.go.
	Security securityConfig
	// Pprof serves Go's profiles under /debug/pprof/ (--pprof; pprof.go).
	Pprof bool
}

func (c *devConfig) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = ".millrace"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8080"
	}
	if c.KafkaAddr == "" {
		c.KafkaAddr = "127.0.0.1:9092"
	}
	if c.Partitions == 0 {
		c.Partitions = 3
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Env == "" {
		c.Env = defaultEnv
	}
	if c.Role == "" {
		c.Role = defaultRole
	}
	c.Security.setDefaults()
}

// Validate reports every problem at once.
func (c devConfig) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("http address %q: %w", c.HTTPAddr, err))
	}
	if len(c.KafkaBrokers) == 0 {
		if _, _, err := net.SplitHostPort(c.KafkaAddr); err != nil {
			errs = append(errs, fmt.Errorf("embedded kafka address %q: %w", c.KafkaAddr, err))
		}
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		errs = append(errs, fmt.Errorf("partitions %d: want 1..1024", c.Partitions))
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("max body bytes %d: want at least 1024", c.MaxBodyBytes))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout %s: must be positive", c.ShutdownTimeout))
	}
	if _, err := config.KVKey(c.Env, c.Role); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.KafkaPartitioner.Validate())
	errs = append(errs, c.Security.validate(len(c.KafkaBrokers) > 0))
	return errors.Join(errs...)
}

func (c devConfig) path(name string) string { return filepath.Join(c.DataDir, name) }

// bindDevFlags registers the flags of `millrace dev`, with environment
// variables as their defaults.
func bindDevFlags(fs *pflag.FlagSet, c *devConfig, getenv func(string) string) {
	partitions, _ := strconv.Atoi(getenv("MILLRACE_PARTITIONS"))
	fs.StringVar(&c.DataDir, "data-dir", envOr(getenv, "MILLRACE_DATA_DIR", ".millrace"), "directory for the broker log and SQLite files (MILLRACE_DATA_DIR)")
	fs.StringVar(&c.HTTPAddr, "http-addr", envOr(getenv, "MILLRACE_HTTP_ADDR", "127.0.0.1:8080"), "gateway listen address (MILLRACE_HTTP_ADDR)")
	fs.StringVar(&c.KafkaAddr, "kafka-addr", envOr(getenv, "MILLRACE_KAFKA_ADDR", "127.0.0.1:9092"), "embedded broker listen address (MILLRACE_KAFKA_ADDR)")
	fs.StringSliceVar(&c.KafkaBrokers, "kafka-brokers", splitList(getenv("KAFKA_BROKERS")), "external Kafka brokers; empty runs the embedded broker (KAFKA_BROKERS)")
	bindPartitionerFlag(fs, &c.KafkaPartitioner, getenv)
	fs.IntVar(&c.Partitions, "partitions", partitions, "partitions of each topic millrace creates (MILLRACE_PARTITIONS, default 3)")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", 1<<20, "largest request body the gateway accepts")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long a graceful shutdown may take")
	fs.StringVar(&c.LogLevel, "log-level", envOr(getenv, "MILLRACE_LOG_LEVEL", "info"), "debug, info, warn or error (MILLRACE_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", envOr(getenv, "MILLRACE_LOG_FORMAT", "text"), "text or json (MILLRACE_LOG_FORMAT)")
	fs.StringVar(&c.ConfigFile, "config", getenv("MILLRACE_CONFIG"), "rules file, .yaml or .json, applied live when it changes; see docs/configuration.md (MILLRACE_CONFIG)")
	bindRulesKeyFlags(fs, &c.Env, &c.Role, getenv)
	bindSecurityFlags(fs, &c.Security, getenv)
}

// The environment and role of a process by default: the Consul key of its
// rules is millrace/dev/all/rules.
const (
	defaultEnv  = "dev"
	defaultRole = "all"
)

// bindRulesKeyFlags registers --env and --role, which name the Consul key
// of the rules: millrace/<env>/<role>/rules.
func bindRulesKeyFlags(fs *pflag.FlagSet, env, role *string, getenv func(string) string) {
	fs.StringVar(env, "env", envOr(getenv, "MILLRACE_ENV", defaultEnv), "environment this process belongs to; names its rules in Consul KV, millrace/<env>/<role>/rules (MILLRACE_ENV)")
	fs.StringVar(role, "role", envOr(getenv, "MILLRACE_ROLE", defaultRole), "role of this process; names its rules in Consul KV (MILLRACE_ROLE)")
}

// bindPartitionerFlag registers --kafka-partitioner, shared by dev and the
// roles: every process that produces to the topics.
func bindPartitionerFlag(fs *pflag.FlagSet, p *kafka.Partitioner, getenv func(string) string) {
	names := make([]string, 0, len(kafka.Partitioners()))
	for _, n := range kafka.Partitioners() {
		names = append(names, string(n))
	}
	fs.StringVar((*string)(p), "kafka-partitioner", envOr(getenv, "KAFKA_PARTITIONER", string(kafka.DefaultPartitioner)),
		"how record keys are hashed to partitions: "+strings.Join(names, ", ")+"; murmur2 for topics shared with Java producers (KAFKA_PARTITIONER)")
}

// kafkaFlags are the flags shared by the commands that only talk to a broker.
type kafkaFlags struct {
	Brokers []string
	// Security is SASL and TLS towards the brokers (wire_security.go).
	Security kafkaSecurity
}

func bindKafkaFlags(fs *pflag.FlagSet, k *kafkaFlags, getenv func(string) string) {
	def := splitList(getenv("KAFKA_BROKERS"))
	if len(def) == 0 {
		def = []string{"127.0.0.1:9092"}
	}
	fs.StringSliceVarP(&k.Brokers, "brokers", "b", def, "Kafka brokers (KAFKA_BROKERS; default the embedded broker of millrace dev)")
	bindKafkaSecurityFlags(fs, &k.Security, getenv)
}
