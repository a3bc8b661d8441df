package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/cloudevents"
)

// Defaults of BatchOptions.
const (
	DefaultMaxBatch  = 1000
	DefaultLinger    = 5 * time.Millisecond
	defaultChanDepth = 1024
)

// BatchOptions tunes a BatchConsumer.
type BatchOptions struct {
	// MaxBatch is the most messages handed over at once; DefaultMaxBatch
	// when zero.
	MaxBatch int
	// Linger is how long a batch that is not full waits for more messages
	// once the ones already fetched are taken; DefaultLinger when zero, no
	// wait when negative. A longer linger makes fuller batches when
	// messages trickle in, at the cost of latency.
	Linger time.Duration
}

func (o *BatchOptions) setDefaults() {
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
}

// BatchConsumer consumes a topic in a consumer group and hands over the
// messages of each partition in batches: all that the client has fetched, up
// to MaxBatch, so that the handler can apply many messages in one database
// transaction. It is what projections rebuild with; watermill-kafka's
// subscriber hands over one message at a time per partition, waiting for
// each ack.
//
// Messages are Watermill messages made by Marshaler.Unmarshal: CloudEvents
// attributes as metadata, the record position as x-kafka-topic,
// x-kafka-partition and x-kafka-offset.
//
// A BatchConsumer holds no connection between calls; it is safe for
// concurrent use, each Consume call being its own group member.
type BatchConsumer struct {
	cfg    Config
	opts   BatchOptions
	logger *slog.Logger
}

// NewBatchConsumer returns a consumer for the cluster cfg names. A nil
// logger discards logs.
func NewBatchConsumer(cfg Config, opts BatchOptions, logger *slog.Logger) (*BatchConsumer, error) {
	cfg, err := cfg.prepare()
	if err != nil {
		return nil, fmt.Errorf("create batch consumer: %w", err)
	}
	opts.setDefaults()
	if opts.MaxBatch < 1 {
		return nil, fmt.Errorf("create batch consumer: max batch %d must be at least 1", opts.MaxBatch)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &BatchConsumer{cfg: cfg, opts: opts, logger: logger}, nil
}

// Consume joins consumer group group on topic and consumes until ctx is done
// (then it returns nil, having left the group) or handle fails (then it
// returns handle's error, having left the group; what handle did not
// acknowledge is read again by the next member).
//
// Each time partitions are assigned to this member, resume is asked where
// to start them: it returns the next offset to read per partition, and a
// partition it leaves out starts at the group's committed offset (the oldest
// record when the group committed none). This is how a consumer that stores
// its position with its effects (as projections do) avoids reading again
// what it applied but could not yet commit to Kafka.
//
// handle receives the consecutive messages of one partition, in order, and
// is never called concurrently for the same partition (different partitions
// are handled concurrently). When it returns nil the batch is acknowledged:
// its last offset + 1 is marked for the group, and committed within a second
// or when the consumer leaves the group (Kafka's committed offsets may thus
// lag what handle applied: delivery is at least once). The context handle
// receives is ctx: a
// rebalance does not cut a batch short. The batch slice is reused once handle
// returns: handle must not keep it (the messages it may keep).
func (c *BatchConsumer) Consume(ctx context.Context, group, topic string,
	resume func(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error),
	handle func(ctx context.Context, batch []*message.Message) error,
) error {
	if group == "" || topic == "" {
		return errors.New("consume batches: a consumer group and a topic are required")
	}
	sc := c.cfg.Sarama()
	// A consumer only: no idempotent producer, so requests to a broker
	// need not wait for each other (an offset commit would otherwise
	// queue behind a fetch that waits for data).
	sc.Producer.Idempotent = false
	sc.Net.MaxOpenRequests = 5
	sc.ChannelBufferSize = defaultChanDepth
	sc.Consumer.Fetch.Default = 1 << 20
	sc.Consumer.MaxWaitTime = 250 * time.Millisecond
	// Acknowledged offsets are committed in the background, every second,
	// and when the consumer leaves: a consumer that stores its position
	// with its effects resumes from there (see resume), not from Kafka.
	sc.Consumer.Offsets.AutoCommit.Enable = true
	sc.Consumer.Offsets.AutoCommit.Interval = time.Second

	cg, err := sarama.NewConsumerGroup(c.cfg.Brokers, group, sc)
	if err != nil {
		return fmt.Errorf("consume %s in group %s: join: %w", topic, group, err)
	}
	logger := c.logger.With("group", group, "topic", topic)

	h := &batchHandler{ctx: ctx, topic: topic, opts: c.opts, resume: resume, handle: handle, logger: logger}
	var wg sync.WaitGroup
	wg.Go(func() {
		for err := range cg.Errors() {
			logger.WarnContext(ctx, "kafka consumer group error", "error", err)
		}
	})

	var consumeErr error
	for ctx.Err() == nil {
		if err := cg.Consume(ctx, []string{topic}, h); err != nil {
			if errors.Is(err, sarama.ErrClosedConsumerGroup) || ctx.Err() != nil {
				break
			}
			consumeErr = fmt.Errorf("consume %s in group %s: %w", topic, group, err)
			break
		}
		if err := h.failure(); err != nil {
			consumeErr = err
			break
		}
	}
	closeErr := cg.Close()
	wg.Wait()
	if consumeErr == nil {
		consumeErr = h.failure()
	}
	if consumeErr != nil {
		return consumeErr
	}
	if closeErr != nil && ctx.Err() == nil {
		return fmt.Errorf("consume %s in group %s: leave: %w", topic, group, closeErr)
	}
	return nil
}

// batchHandler is the sarama.ConsumerGroupHandler of one Consume call.
type batchHandler struct {
	ctx    context.Context
	topic  string
	opts   BatchOptions
	resume func(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error)
	handle func(ctx context.Context, batch []*message.Message) error
	logger *slog.Logger

	mu  sync.Mutex
	err error // the first failure of handle or resume
}

func (h *batchHandler) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		h.err = err
	}
}

func (h *batchHandler) failure() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Setup moves each assigned partition to where resume says it starts.
func (h *batchHandler) Setup(sess sarama.ConsumerGroupSession) error {
	partitions := sess.Claims()[h.topic]
	if h.resume == nil || len(partitions) == 0 {
		return nil
	}
	next, err := h.resume(h.ctx, h.topic, partitions)
	if err != nil {
		err = fmt.Errorf("resume %s partitions %v: %w", h.topic, partitions, err)
		h.fail(err)
		return err
	}
	for p, offset := range next {
		if offset >= 0 {
			// Sarama's MarkOffset only moves forward and ResetOffset
			// only back: one of the two applies.
			sess.MarkOffset(h.topic, p, offset, "")
			sess.ResetOffset(h.topic, p, offset, "")
		}
	}
	return nil
}

// Cleanup commits what was marked before the partitions go.
func (h *batchHandler) Cleanup(sess sarama.ConsumerGroupSession) error {
	sess.Commit()
	return nil
}

// ConsumeClaim hands the claim's messages over in batches.
func (h *batchHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	msgs := claim.Messages()
	batch := make([]*message.Message, 0, h.opts.MaxBatch)
	var linger *time.Timer
	if h.opts.Linger > 0 {
		linger = time.NewTimer(time.Hour)
		linger.Stop()
		defer linger.Stop()
	}
	for {
		batch = batch[:0]
		// Wait for the first message of a batch.
		select {
		case rec, ok := <-msgs:
			if !ok {
				return nil
			}
			batch = append(batch, h.convert(rec))
		case <-sess.Context().Done():
			return nil
		}
		// Take what is there already, then linger for more.
		lingering := false
	fill:
		for len(batch) < h.opts.MaxBatch {
			select {
			case rec, ok := <-msgs:
				if !ok {
					break fill
				}
				batch = append(batch, h.convert(rec))
				continue
			default:
			}
			if linger == nil || lingering {
				break
			}
			lingering = true
			linger.Reset(h.opts.Linger)
			select {
			case rec, ok := <-msgs:
				if !ok {
					break fill
				}
				batch = append(batch, h.convert(rec))
			case <-linger.C:
				break fill
			case <-sess.Context().Done():
				break fill
			}
		}
		if linger != nil && lingering && !linger.Stop() {
			select {
			case <-linger.C:
			default:
			}
		}

		if err := h.handle(h.ctx, batch); err != nil {
			if h.ctx.Err() != nil {
				return nil // shutting down: the batch is read again later
			}
			err = fmt.Errorf("handle %d messages of %s/%d from offset %s: %w",
				len(batch), claim.Topic(), claim.Partition(), batch[0].Metadata.Get(cloudevents.KafkaOffset), err)
			h.fail(err)
			return err
		}
		last := batch[len(batch)-1]
		_, _, offset, _ := Position(last)
		sess.MarkOffset(claim.Topic(), claim.Partition(), offset+1, "")
	}
}

// convert turns a record into a message; Unmarshal fails for nil records
// only, which Sarama never delivers.
func (h *batchHandler) convert(rec *sarama.ConsumerMessage) *message.Message {
	msg, _ := Marshaler{}.Unmarshal(rec)
	return msg
}
