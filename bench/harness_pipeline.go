package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/sqlite"
)

// Pipeline targets.
const (
	PipelineRaw      = "raw Sarama consumer group"
	PipelineMillrace = "Watermill router + governance stack"
	// PipelineBare is the same router and subscriber without millrace's
	// middleware: what Watermill itself allows, shown for reference.
	PipelineBare = "Watermill router, no middleware (reference)"
)

// pipelineTopic holds the events every pipeline run consumes from the start.
const pipelineTopic = "bench.pipeline"

// measurePipeline writes cfg.PipelineEvents events to a broker in a
// process of its own, then consumes them all, cfg.Runs times, alternating:
// with a raw Sarama consumer group, and through a Watermill router with the
// governance stack millrace runs every handler behind (poison queue in
// SQLite, throttle, retry, breaker, timeout, metrics). Each run is a new
// consumer group reading from the oldest record; the rate is from the first
// event received to the last.
func measurePipeline(ctx context.Context, cfg Config, res *Results) (err error) {
	broker, addr, err := startSelf(ctx, cfg, "pipeline-broker", "broker", "-data-dir", filepath.Join(cfg.WorkDir, "pipeline-broker"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, broker.stop(30*time.Second)) }()
	kcfg := kafka.Config{Brokers: []string{addr}, ClientID: "millrace-bench"}
	if err := kafka.EnsureTopics(ctx, kcfg,
		kafka.Topic{Name: pipelineTopic, Partitions: 3},
		kafka.Topic{Name: router.DefaultPoisonTopic, Partitions: 3},
	); err != nil {
		return err
	}
	if err := fillPipeline(ctx, kcfg, cfg.PipelineEvents); err != nil {
		return err
	}

	runs := []struct {
		name string
		run  func(ctx context.Context, group string) (time.Duration, error)
	}{
		{PipelineRaw, func(ctx context.Context, group string) (time.Duration, error) {
			return consumeRaw(ctx, kcfg, group, cfg.PipelineEvents)
		}},
		{PipelineMillrace, func(ctx context.Context, group string) (time.Duration, error) {
			return consumeRouted(ctx, kcfg, group, cfg.PipelineEvents, filepath.Join(cfg.WorkDir, "poison-"+group+".db"))
		}},
		{PipelineBare, func(ctx context.Context, group string) (time.Duration, error) {
			return consumeBare(ctx, kcfg, group, cfg.PipelineEvents)
		}},
	}
	for run := range cfg.Runs {
		for i := range runs {
			r := runs[(i+run)%len(runs)]
			cfg.Logger.Info("pipeline", "run", run+1, "target", r.name)
			rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			took, err := r.run(rctx, "bench-"+strconv.Itoa(run)+"-"+strconv.Itoa(i))
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			res.addPipeline(r.name, float64(cfg.PipelineEvents-1)/took.Seconds())
		}
	}
	return nil
}

// fillPipeline writes n CloudEvents of about 200 bytes over 1,000 keys.
func fillPipeline(ctx context.Context, kcfg kafka.Config, n int) error {
	pub, err := kafka.NewBatchPublisher(kcfg, kafka.BatchPublisherOptions{}, nil)
	if err != nil {
		return err
	}
	defer pub.Close()
	const chunk = 500
	for i := 0; i < n; i += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		msgs := make([]*message.Message, 0, chunk)
		for j := i; j < min(i+chunk, n); j++ {
			key := "order-" + strconv.Itoa(j%1000)
			msg := message.NewMessage(uuid.NewString(), []byte(`{"order_id":"`+key+`","user_id":"5d1c1e0c-3f6b-4c1e-9a51-3a4b8f0c2d17","amount_cents":`+strconv.Itoa(j)+`,"currency":"EUR","payment_ref":"bench-payment-reference"}`))
			msg.Metadata.Set(cloudevents.Type, "orders.order-paid.v1")
			msg.Metadata.Set(cloudevents.Source, "/millrace/bench")
			msg.Metadata.Set(cloudevents.Time, time.Now().UTC().Format(time.RFC3339Nano))
			msg.Metadata.Set(cloudevents.ContentType, cloudevents.JSON)
			msg.Metadata.Set(cloudevents.Subject, key)
			msg.Metadata.Set(cloudevents.PartitionKey, key)
			msgs = append(msgs, msg)
		}
		if err := pub.Publish(pipelineTopic, msgs...); err != nil {
			return fmt.Errorf("fill %s: %w", pipelineTopic, err)
		}
	}
	return nil
}

// firstToLast times from the first event counted to the n-th.
type firstToLast struct {
	n, seen atomic.Int64
	first   atomic.Int64 // unix nanoseconds
	done    chan struct{}
	once    sync.Once
	last    time.Time
}

func newFirstToLast(n int) *firstToLast {
	f := &firstToLast{done: make(chan struct{})}
	f.n.Store(int64(n))
	return f
}

func (f *firstToLast) count() {
	now := time.Now()
	f.first.CompareAndSwap(0, now.UnixNano())
	if f.seen.Add(1) == f.n.Load() {
		f.once.Do(func() { f.last = now; close(f.done) })
	}
}

func (f *firstToLast) wait(ctx context.Context) (time.Duration, error) {
	select {
	case <-f.done:
		return f.last.Sub(time.Unix(0, f.first.Load())), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("consumed %d of %d events: %w", f.seen.Load(), f.n.Load(), ctx.Err())
	}
}

// rawHandler is a sarama.ConsumerGroupHandler that only counts and marks.
type rawHandler struct{ f *firstToLast }

func (rawHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (rawHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h rawHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		h.f.count()
		sess.MarkMessage(msg, "")
	}
	return nil
}

// consumeRaw reads n events with a plain Sarama consumer group, millrace's
// Sarama configuration.
func consumeRaw(ctx context.Context, kcfg kafka.Config, group string, n int) (time.Duration, error) {
	cg, err := sarama.NewConsumerGroup(kcfg.Brokers, group, kcfg.Sarama())
	if err != nil {
		return 0, fmt.Errorf("join group %s: %w", group, err)
	}
	f := newFirstToLast(n)
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for cctx.Err() == nil {
			if err := cg.Consume(cctx, []string{pipelineTopic}, rawHandler{f}); err != nil {
				return
			}
		}
	})
	took, err := f.wait(ctx)
	cancel()
	wg.Wait()
	return took, errors.Join(err, cg.Close())
}

// consumeBare reads n events through a Watermill router without middleware,
// on the watermill-kafka subscriber millrace dev uses.
func consumeBare(ctx context.Context, kcfg kafka.Config, group string, n int) (time.Duration, error) {
	r, err := message.NewRouter(message.RouterConfig{}, nil)
	if err != nil {
		return 0, err
	}
	return runRouter(ctx, kcfg, group, n, r)
}

// consumeRouted reads n events through a Watermill router with millrace's
// governance stack and the watermill-kafka subscriber millrace dev uses.
func consumeRouted(ctx context.Context, kcfg kafka.Config, group string, n int, poisonDB string) (_ time.Duration, err error) {
	db, err := sqlite.Open(ctx, poisonDB)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	pub, err := kafka.NewPublisher(kcfg, nil)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, pub.Close()) }()
	store, err := poison.New(ctx, db, poison.Config{Publisher: pub})
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	r, _, err := router.New(router.Config{Poison: store, Registerer: prometheus.NewRegistry()})
	if err != nil {
		return 0, err
	}
	return runRouter(ctx, kcfg, group, n, r)
}

// runRouter consumes n events of the pipeline topic through r, with a
// handler that only counts, and times them.
func runRouter(ctx context.Context, kcfg kafka.Config, group string, n int, r *message.Router) (time.Duration, error) {
	sub, err := kafka.NewSubscriber(kcfg, group, nil)
	if err != nil {
		return 0, err
	}
	f := newFirstToLast(n)
	r.AddNoPublisherHandler("bench", pipelineTopic, sub, func(*message.Message) error {
		f.count()
		return nil
	})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(rctx) }()
	took, err := f.wait(ctx)
	cancel()
	return took, errors.Join(err, <-runErr, r.Close())
}
