package replay_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/sqlite"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/orders"
)

// eventsToReplay is how many events the benchmark seeds: 1,000,000, or
// MILLRACE_REPLAY_EVENTS.
func eventsToReplay(b *testing.B) int {
	n := 1_000_000
	if v := os.Getenv("MILLRACE_REPLAY_EVENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 3 {
			b.Fatalf("MILLRACE_REPLAY_EVENTS=%q: want a number of at least 3", v)
		}
	}
	return n
}

const partitions = 3

// compression is how the seeded record batches are compressed:
// MILLRACE_REPLAY_COMPRESSION, "none" by default, as millrace's publishers
// write them; "snappy", "lz4" or "zstd" for logs written by other
// producers (franz-go's and librdkafka's default is snappy, the Java
// client's none). Every reader pays for decompression, the raw consumer
// too, but a compressed fetch carries three to four times more events.
func compression(b *testing.B) kgo.CompressionCodec {
	switch v := os.Getenv("MILLRACE_REPLAY_COMPRESSION"); v {
	case "", "none":
		return kgo.NoCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	default:
		b.Fatalf("MILLRACE_REPLAY_COMPRESSION=%q: want none, snappy, lz4 or zstd", v)
		return kgo.NoCompression()
	}
}

// maxBatch is the most messages per batch (and per transaction) of the
// rebuild's consumer: MILLRACE_REPLAY_MAX_BATCH, or 0 for the default
// (kafka.DefaultMaxBatch), as millrace runs it.
func maxBatch(b *testing.B) int {
	v := os.Getenv("MILLRACE_REPLAY_MAX_BATCH")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("MILLRACE_REPLAY_MAX_BATCH=%q: want a number of at least 1", v)
	}
	return n
}

// BenchmarkRebuild seeds the orders topic of an embedded broker with the
// lives of orders (placed v1 or v2, paid, shipped), lets version 1 of the
// orders projection catch up, then measures, in one run:
//
//   - a raw Sarama consumer group reading every event (best of two reads,
//     one before and one after the rebuild), which is the ceiling;
//   - a rebuild of the orders projection into version 2, from the first
//     event until it applied the last one, and until it was swapped in;
//   - the process's RSS and Go heap before, at the peak during, and after
//     the rebuild.
func BenchmarkRebuild(b *testing.B) {
	n := eventsToReplay(b)
	for range b.N {
		r := runRebuild(b, n)
		b.ReportMetric(r.rebuildRate, "events/s")
		b.ReportMetric(r.rawRate, "raw-events/s")
		b.ReportMetric(r.rebuildRate/r.rawRate, "ratio")
		b.ReportMetric(float64(r.rebuildCPU.Nanoseconds())/1e3, "cpu-µs/event")
		b.ReportMetric(float64(min(r.rawCPU1, r.rawCPU2).Nanoseconds())/1e3, "raw-cpu-µs/event")
		b.ReportMetric(r.rssBefore, "rss-before-MB")
		b.ReportMetric(r.rssPeak, "rss-peak-MB")
		b.ReportMetric(r.rssAfter, "rss-after-MB")
		b.ReportMetric(r.heapBefore, "heap-before-MB")
		b.ReportMetric(r.heapPeak, "heap-peak-MB")
		b.ReportMetric(r.heapAfter, "heap-after-MB")
		b.Logf("events %d | seed %.0f/s | raw Sarama %.0f/s (reads %.0f, %.0f) | rebuild %.0f/s applied in %s (first event after %s), swapped in after %s | ratio %.2f",
			n, r.seedRate, r.rawRate, r.raw1, r.raw2, r.rebuildRate, r.applied.Round(time.Millisecond), r.first.Round(time.Millisecond),
			r.swapped.Round(time.Millisecond), r.rebuildRate/r.rawRate)
		b.Logf("CPU time of the process per event: rebuild %s, raw reads %s and %s (the embedded broker included in both)",
			r.rebuildCPU, r.rawCPU1, r.rawCPU2)
		b.Logf("RSS MB before %.0f, peak %.0f, after %.0f | heap MB before %.0f, peak %.0f, after %.0f | raw read peaks: RSS %.0f MB, heap %.0f MB | sqlite file %.0f MB",
			r.rssBefore, r.rssPeak, r.rssAfter, r.heapBefore, r.heapPeak, r.heapAfter, r.rawRSSPeak, r.rawHeapPeak, r.dbMB)
	}
}

type result struct {
	seedRate, raw1, raw2, rawRate, rebuildRate float64
	first, applied, swapped                    time.Duration
	rebuildCPU, rawCPU1, rawCPU2               time.Duration // CPU time of the process per event
	rssBefore, rssPeak, rssAfter               float64
	heapBefore, heapPeak, heapAfter            float64
	rawRSSPeak, rawHeapPeak                    float64
	dbMB                                       float64
}

func runRebuild(b *testing.B, n int) result {
	ctx := context.Background()
	dir := b.TempDir()
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0", DataDir: filepath.Join(dir, "kafka"), Partitions: partitions})
	if err != nil {
		b.Fatalf("start broker: %v", err)
	}
	defer broker.Close()
	cfg := kafka.Config{Brokers: broker.Addrs(), ClientID: "replay-bench"}
	if err := kafka.EnsureTopics(ctx, cfg,
		kafka.Topic{Name: events.TopicOrderEvents, Partitions: partitions},
		kafka.Topic{Name: events.TopicUserEvents, Partitions: partitions}); err != nil {
		b.Fatalf("create topics: %v", err)
	}

	var r result
	r.seedRate = seed(b, cfg, n)
	r.raw1, r.rawCPU1 = rawSarama(b, cfg, n, "raw-1")

	db, err := sqlite.Open(ctx, filepath.Join(dir, "projections.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	adm, err := kafka.NewAdmin(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer adm.Close()
	src, err := kafka.NewBatchConsumer(cfg, kafka.BatchOptions{MaxBatch: maxBatch(b)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	m, err := projections.NewManager(ctx, projections.Config{
		DB: db, Projections: []projections.Projection{orders.New(db)}, Source: src, Offsets: adm, Groups: adm,
		PollInterval: 100 * time.Millisecond,
	})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			b.Errorf("manager: %v", err)
		}
	}()
	// Version 1 is live and caught up, as it would be in production.
	waitStatus(b, m, 30*time.Minute, func(s projections.Status) bool { return s.Lag == 0 && s.Version == 1 })

	runtime.GC()
	r.rssBefore, r.heapBefore = memory()
	samples := startSampler()

	stopProfile := profileRebuild(b)
	began, cpuBegan := time.Now(), cpuTime()
	if _, err := m.Rebuild(ctx, "orders", projections.From{}); err != nil {
		b.Fatalf("rebuild: %v", err)
	}
	waitStatus(b, m, 30*time.Minute, func(s projections.Status) bool {
		rb := s.Rebuild
		if rb != nil && r.first == 0 && rb.Applied > 0 {
			r.first = time.Since(began)
		}
		if rb != nil && r.applied == 0 && (rb.State != projections.RebuildBuilding || rb.Applied >= rb.Total) {
			r.applied = time.Since(began)
			r.rebuildCPU = perEvent(cpuTime()-cpuBegan, n)
		}
		return s.Version == 2 && rb != nil && rb.State == projections.RebuildDone
	})
	r.swapped = time.Since(began)
	stopProfile()
	r.rssPeak, r.heapPeak = samples.peaks()
	runtime.GC()
	r.rssAfter, r.heapAfter = memory()
	r.rebuildRate = float64(n) / r.applied.Seconds()

	rawSamples := startSampler()
	r.raw2, r.rawCPU2 = rawSarama(b, cfg, n, "raw-2")
	r.rawRSSPeak, r.rawHeapPeak = rawSamples.peaks()
	r.rawRate = max(r.raw1, r.raw2)
	if fi, err := os.Stat(filepath.Join(dir, "projections.db")); err == nil {
		r.dbMB = float64(fi.Size()) / 1e6
	}
	return r
}

// profileRebuild writes a CPU profile of the rebuild alone (not of the
// seeding and the raw reads around it) to the file MILLRACE_REPLAY_CPUPROFILE
// names, and an execution trace (go tool trace: where goroutines wait) to
// the file MILLRACE_REPLAY_TRACE names, when they are set; it returns the
// function that stops them.
func profileRebuild(b *testing.B) (stop func()) {
	var stops []func()
	for _, p := range []struct {
		env, what   string
		start       func(io.Writer) error
		stopProfile func()
	}{
		{"MILLRACE_REPLAY_CPUPROFILE", "cpu profile", pprof.StartCPUProfile, pprof.StopCPUProfile},
		{"MILLRACE_REPLAY_TRACE", "execution trace", trace.Start, trace.Stop},
	} {
		path := os.Getenv(p.env)
		if path == "" {
			continue
		}
		f, err := os.Create(path)
		if err != nil {
			b.Fatalf("create %s: %v", p.what, err)
		}
		if err := p.start(f); err != nil {
			_ = f.Close()
			b.Fatalf("start %s (is it asked for on the command line too?): %v", p.what, err)
		}
		stops = append(stops, func() {
			p.stopProfile()
			if err := f.Close(); err != nil {
				b.Errorf("write %s: %v", p.what, err)
			}
		})
	}
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// seed writes n events to orders.events with a raw franz-go producer: the
// lives of n/3 orders, each placed (v1 for the first half, v2 after),
// paid and shipped, with the headers millrace's outbox relay writes (an
// outbox id and sequence included), in batches compressed as compression
// says.
func seed(b *testing.B, cfg kafka.Config, n int) float64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(100_000), kgo.ProducerBatchCompression(compression(b)))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	marshaler := cloudevents.Marshaler{Source: events.SourceOrders}
	const outboxID = "0195d1c0-0000-7000-8000-00000000a11c"
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		failed  error
	)
	began := time.Now()
	for i := range n {
		id := fmt.Sprintf("%08x-0000-4000-8000-%012d", i/3, i/3)
		at := start.Add(time.Duration(i) * time.Millisecond)
		marshaler.Now = func() time.Time { return at }
		var e events.Message
		lines := []events.PricedLine{{SKU: "tea", Quantity: 5, UnitPriceCents: 500, LineTotalCents: 2500}}
		switch {
		case i%3 == 0 && i < n/2:
			e = events.OrderPlaced{OrderID: id, UserID: "u-1", Currency: "EUR", TotalCents: 2500, PlacedAt: at, Lines: lines}
		case i%3 == 0:
			e = events.OrderPlacedV2{OrderID: id, UserID: "u-1", Currency: "EUR", TotalCents: 2500, ItemCount: 5, PlacedAt: at, Lines: lines}
		case i%3 == 1:
			e = events.OrderPaid{OrderID: id, UserID: "u-1", AmountCents: 2500, Currency: "EUR", PaymentRef: "pay", PaidAt: at}
		default:
			e = events.OrderShipped{OrderID: id, UserID: "u-1", Carrier: "DHL", ShippedAt: at}
		}
		msg, err := marshaler.Marshal(e)
		if err != nil {
			b.Fatal(err)
		}
		// As the orders service's outbox relay numbers them (ADR 0007).
		msg.Metadata.Set(cloudevents.OutboxID, outboxID)
		msg.Metadata.Set(cloudevents.Sequence, strconv.Itoa(i+1))
		rec := &kgo.Record{Topic: events.TopicOrderEvents, Key: []byte(id), Value: msg.Payload}
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: cloudevents.ID, Value: []byte(msg.UUID)})
		for k, v := range msg.Metadata {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		wg.Add(1)
		cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				errOnce.Do(func() { failed = err })
			}
		})
	}
	wg.Wait()
	if failed != nil {
		b.Fatalf("seed: %v", failed)
	}
	return float64(n) / time.Since(began).Seconds()
}

// rawSarama reads the n events of orders.events with a Sarama consumer
// group that does nothing with them but mark them consumed, and returns the
// rate from joining the group to the last event. It uses the same client
// settings as millrace's batch consumer.
func rawSarama(b *testing.B, cfg kafka.Config, n int, group string) (rate float64, cpu time.Duration) {
	sc := cfg.Sarama()
	sc.ChannelBufferSize = 1024
	sc.Consumer.Fetch.Default = 1 << 20
	sc.Consumer.MaxWaitTime = 250 * time.Millisecond
	cg, err := sarama.NewConsumerGroup(cfg.Brokers, group, sc)
	if err != nil {
		b.Fatal(err)
	}
	defer cg.Close()
	h := &counter{want: int64(n), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	began, cpuBegan := time.Now(), cpuTime()
	go func() {
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{events.TopicOrderEvents}, h); err != nil && !errors.Is(err, context.Canceled) {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	select {
	case <-h.done:
	case err := <-errc:
		b.Fatalf("raw consumer: %v", err)
	case <-time.After(30 * time.Minute):
		b.Fatal("raw consumer did not read every event")
	}
	secs := time.Since(began).Seconds()
	cpu = perEvent(cpuTime()-cpuBegan, n)
	cancel()
	<-errc
	return float64(n) / secs, cpu
}

// perEvent is d divided among n events.
func perEvent(d time.Duration, n int) time.Duration { return d / time.Duration(n) }

// counter is a consumer group handler that counts messages.
type counter struct {
	want int64
	seen atomic.Int64
	done chan struct{}
	once sync.Once
}

func (*counter) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (*counter) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (c *counter) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		sess.MarkMessage(msg, "")
		if c.seen.Add(1) == c.want {
			c.once.Do(func() { close(c.done) })
		}
	}
	return nil
}

func waitStatus(b *testing.B, m *projections.Manager, d time.Duration, ok func(projections.Status) bool) {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		s, err := m.Status(context.Background(), "orders")
		if err != nil {
			b.Fatal(err)
		}
		if ok(s) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("status still %+v after %s", s, d)
		}
	}
}

// memory returns the process's RSS (from /proc/self/status) and Go heap in
// use, in MB.
func memory() (rss, heap float64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap = float64(ms.HeapInuse) / 1e6
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, heap
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			rss = kb * 1024 / 1e6
		}
	}
	return rss, heap
}

// sampler records the peak RSS and heap while it runs.
type sampler struct {
	rss, heap atomic.Uint64
	stop      context.CancelFunc
	wg        sync.WaitGroup
}

func startSampler() *sampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sampler{stop: cancel}
	s.wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			rss, heap := memory()
			maxTo(&s.rss, rss)
			maxTo(&s.heap, heap)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	return s
}

// peaks stops the sampler and returns the peaks in MB.
func (s *sampler) peaks() (rss, heap float64) {
	s.stop()
	s.wg.Wait()
	return float64(s.rss.Load()) / 1e6, float64(s.heap.Load()) / 1e6
}

func maxTo(a *atomic.Uint64, mb float64) {
	v := uint64(mb * 1e6)
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}
