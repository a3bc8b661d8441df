package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/millrace/millrace/platform/cloudevents"
)

// Defaults of BatchPublisherOptions.
const (
	DefaultDeliveryTimeout    = 30 * time.Second
	DefaultMaxBufferedRecords = 10000
)

// ErrPublisherClosed is returned by Publish once Close was called.
var ErrPublisherClosed = errors.New("publisher is closed")

// BatchPublisherOptions tunes a BatchPublisher. The zero value takes every
// default.
type BatchPublisherOptions struct {
	// DeliveryTimeout bounds how long a message may wait for the broker's
	// acknowledgement, retries included, before Publish fails it;
	// DefaultDeliveryTimeout when zero.
	DeliveryTimeout time.Duration
	// Linger is how long a partition's pending messages wait for more
	// before they are sent. Zero (the default) sends as soon as the
	// connection can take a request: under load, messages still gather
	// into shared batches while earlier requests are in flight, so a
	// linger only adds latency to a lone Publish.
	Linger time.Duration
	// MaxBufferedRecords bounds the messages waiting to be sent or acked;
	// Publish blocks while the bound is reached.
	// DefaultMaxBufferedRecords when zero.
	MaxBufferedRecords int
}

func (o *BatchPublisherOptions) setDefaults() {
	if o.DeliveryTimeout == 0 {
		o.DeliveryTimeout = DefaultDeliveryTimeout
	}
	if o.MaxBufferedRecords == 0 {
		o.MaxBufferedRecords = DefaultMaxBufferedRecords
	}
}

// Validate reports every problem with o at once.
func (o BatchPublisherOptions) Validate() error {
	var errs []error
	if o.DeliveryTimeout < 0 {
		errs = append(errs, fmt.Errorf("delivery timeout %s: must not be negative", o.DeliveryTimeout))
	}
	if o.Linger < 0 {
		errs = append(errs, fmt.Errorf("linger %s: must not be negative", o.Linger))
	}
	if o.MaxBufferedRecords < 0 {
		errs = append(errs, fmt.Errorf("max buffered records %d: must not be negative", o.MaxBufferedRecords))
	}
	return errors.Join(errs...)
}

// BatchPublisher is a Watermill publisher for many concurrent callers, such
// as the gateway's request handlers. Like NewPublisher's, its Publish
// returns only once the broker has acknowledged every message it was given
// (or failed them); unlike it, concurrent Publish calls share produce
// requests: while one request to a broker is in flight, the messages of all
// other callers gather into the next one, per partition. The watermill-kafka
// publisher sends one message per round trip, so its callers queue behind
// each other; here a round trip carries everything that arrived meanwhile.
//
// Records are the same as NewPublisher's: Marshaler turns each message into
// a CloudEvents binary-mode record, and the record key (ce_partitionkey) is
// hashed to a partition by cfg.Partitioner exactly as NewPublisher's Sarama
// producer does, so one aggregate lands in the same partition whichever
// millrace publisher wrote it. Writes are idempotent with acks from all in-sync replicas: a
// retried produce neither duplicates nor reorders records, so the messages of
// one key keep the order in which they were published: the order within one
// Publish call, and the order of calls that follow each other.
//
// Publish ignores the messages' contexts for cancellation: a message joins a
// batch shared with other callers, and the client fails whole batches, never
// one message of them. DeliveryTimeout bounds the wait instead. Errors are
// per message: when some messages of a call fail, Publish returns an error
// naming each of them, and the others were written.
//
// It is safe for concurrent use. The caller owns it and must Close it.
type BatchPublisher struct {
	client *kgo.Client
	opts   BatchPublisherOptions

	mu       sync.Mutex // guards closed and the Add of inflight
	closed   bool
	inflight sync.WaitGroup
}

var _ message.Publisher = (*BatchPublisher)(nil)

// NewBatchPublisher returns a publisher to the cluster cfg names. Topics
// must exist (see EnsureTopics): publishing to a missing topic fails after a
// few metadata retries. A nil logger logs nothing.
func NewBatchPublisher(cfg Config, opts BatchPublisherOptions, logger *slog.Logger) (*BatchPublisher, error) {
	cfg, err := cfg.prepare()
	opts.setDefaults()
	if err = errors.Join(err, opts.Validate()); err != nil {
		return nil, fmt.Errorf("create batch publisher: %w", err)
	}
	kopts := cfg.kgoOptions(
		kgo.RequiredAcks(kgo.AllISRAcks()), // the default, stated: idempotence needs it
		kgo.RecordPartitioner(cfg.Partitioner.kgo()),
		kgo.ProducerBatchCompression(kgo.NoCompression()), // as the Sarama publisher
		kgo.ProducerLinger(opts.Linger),
		kgo.RecordDeliveryTimeout(opts.DeliveryTimeout),
		kgo.MaxBufferedRecords(opts.MaxBufferedRecords),
	)
	if logger != nil {
		kopts = append(kopts, kgo.WithLogger(kgoLogger{logger.With("component", "kafka-producer")}))
	}
	client, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("create batch publisher for %v: %w", cfg.Brokers, err)
	}
	return &BatchPublisher{client: client, opts: opts}, nil
}

// Publish writes msgs to topic and returns once the broker acknowledged each
// of them, or failed it. Every message is marshalled before any is sent: a
// message that cannot be marshalled fails the call with nothing written.
func (p *BatchPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fmt.Errorf("publish to %s: %w", topic, ErrPublisherClosed)
	}
	p.inflight.Add(1)
	p.mu.Unlock()
	defer p.inflight.Done()

	if len(msgs) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, len(msgs))
	for i, msg := range msgs {
		rec, err := recordOf(topic, msg)
		if err != nil {
			return err // names the topic and the fault
		}
		recs[i] = rec
	}

	// Not a message context: see the type's documentation.
	results := p.client.ProduceSync(context.Background(), recs...)
	var errs []error
	for _, res := range results {
		if res.Err != nil {
			// Results come in completion order: find the message by its record.
			id := msgs[slices.Index(recs, res.Record)].UUID
			errs = append(errs, fmt.Errorf("publish message %s to %s: %w", id, topic, res.Err))
		}
	}
	return errors.Join(errs...)
}

// Close refuses new messages, waits for the Publish calls in progress to
// have their acknowledgements (each at most DeliveryTimeout), flushes and
// closes the connections. Closing twice is harmless.
func (p *BatchPublisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()

	p.inflight.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.DeliveryTimeout)
	defer cancel()
	err := p.client.Flush(ctx) // nothing is left once the calls returned; kept as a safeguard
	p.client.Close()
	if err != nil {
		return fmt.Errorf("close batch publisher: flush: %w", err)
	}
	return nil
}

// recordOf turns msg into a franz-go record for topic: the record
// Marshaler.Marshal makes, built directly rather than as a Sarama record
// first and copied (which cost two allocations per header on the intake's
// path). TestBatchPublisherWritesWhatThePublisherWrites holds the two to the
// same records.
func recordOf(topic string, msg *message.Message) (*kgo.Record, error) {
	hs, err := planHeaders(topic, msg)
	if err != nil {
		return nil, err
	}
	// The header values are copied into one buffer, sized up front.
	n, size := hs.size()
	values := make([]byte, 0, size)
	headers := make([]kgo.RecordHeader, 0, n)
	hs.each(func(k, v string) {
		start := len(values)
		values = append(values, v...)
		headers = append(headers, kgo.RecordHeader{Key: k, Value: values[start:len(values):len(values)]})
	})

	rec := &kgo.Record{Topic: topic, Headers: headers}
	if msg.Payload != nil {
		rec.Value = msg.Payload
	}
	if key := msg.Metadata.Get(cloudevents.PartitionKey); key != "" {
		rec.Key = []byte(key)
	}
	return rec, nil
}

// kgoLogger bridges franz-go's logger to slog.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel {
	ctx := context.Background()
	switch {
	case k.l.Enabled(ctx, slog.LevelDebug-4):
		return kgo.LogLevelDebug
	case k.l.Enabled(ctx, slog.LevelDebug):
		return kgo.LogLevelInfo // logged at debug, see Log
	case k.l.Enabled(ctx, slog.LevelWarn):
		return kgo.LogLevelWarn
	default:
		return kgo.LogLevelError
	}
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var sl slog.Level
	switch level {
	case kgo.LogLevelError:
		sl = slog.LevelError
	case kgo.LogLevelWarn:
		sl = slog.LevelWarn
	case kgo.LogLevelInfo:
		sl = slog.LevelDebug // franz-go logs every connection at info
	default:
		sl = slog.LevelDebug - 4
	}
	k.l.Log(context.Background(), sl, msg, keyvals...)
}
