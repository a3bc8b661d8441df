package projections_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/sqlite"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/projectiontest"
)

// Environment of the child process of TestRunnerExactlyOnceAcrossKill.
const (
	envChild      = "MILLRACE_TEST_CRASH_CHILD"
	envBrokers    = "MILLRACE_TEST_BROKERS"
	envDB         = "MILLRACE_TEST_DB"
	envBlockAfter = "MILLRACE_TEST_BLOCK_AFTER"
	envTotal      = "MILLRACE_TEST_TOTAL"
)

// TestRunnerExactlyOnceAcrossKill kills a consuming process with SIGKILL
// between the commit of a batch to SQLite and the commit of its offsets to
// Kafka, starts it again, and checks that the messages Kafka delivers again
// are skipped: every event is applied exactly once, also those the log
// holds twice (see logWithCopies).
//
// The consumer here starts from Kafka's committed offsets (no resume from
// SQLite positions), so the redelivery really happens and the runner's
// position check is what keeps it exactly once.
func TestRunnerExactlyOnceAcrossKill(t *testing.T) {
	if os.Getenv(envChild) != "" {
		t.Skip("running as the child process")
	}
	b := startBroker(t, 2)
	const total = 1000
	b.produce(t, logWithCopies(t, ordersPlaced("o", total))...)
	dbPath := filepath.Join(t.TempDir(), "projections.db")
	group := projections.GroupFor("ledger", 1, events.TopicOrderEvents)

	child := func(blockAfter int) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), envChild+"=1", envBrokers+"="+strings.Join(b.cfg.Brokers, ","),
			envDB+"="+dbPath, envBlockAfter+"="+strconv.Itoa(blockAfter), envTotal+"="+strconv.Itoa(total))
		cmd.Stderr = os.Stderr
		return cmd
	}

	// First run: block forever once 400 events are in SQLite, before the
	// batch is acknowledged to Kafka; then kill -9.
	first := child(400)
	out, err := first.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	blocked := make(chan struct{})
	go func() {
		// Each partition's consumer blocks, and says so, once the child
		// applied enough: close on the first.
		sc := bufio.NewScanner(out)
		closed := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "BLOCKED") && !closed {
				close(blocked)
				closed = true
			}
		}
	}()
	select {
	case <-blocked:
	case <-time.After(60 * time.Second):
		_ = first.Process.Kill()
		t.Fatal("the child never applied 400 events")
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatalf("kill -9 the child: %v", err)
	}
	_ = first.Wait()

	// SQLite is ahead of Kafka: what lies between will be delivered again.
	db, err := sqlite.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	applied := len(ledgerRows(t, db, "ledger", 1))
	committed, err := b.admin.CommittedOffsets(context.Background(), group, events.TopicOrderEvents)
	if err != nil {
		t.Fatal(err)
	}
	var acked int64
	for _, o := range committed[events.TopicOrderEvents] {
		acked += o
	}
	if int64(applied) <= acked {
		t.Fatalf("after the kill: %d applied, %d acknowledged to Kafka; want SQLite ahead of Kafka", applied, acked)
	}
	t.Logf("killed with %d events applied and %d acknowledged: %d will be delivered again", applied, acked, int64(applied)-acked)

	// Second run: consume to the end and exit.
	second := child(0)
	second.Stdout = os.Stderr
	done := make(chan error, 1)
	if err := second.Start(); err != nil {
		t.Fatalf("start child again: %v", err)
	}
	go func() { done <- second.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("second child: %v", err)
		}
	case <-time.After(90 * time.Second):
		_ = second.Process.Kill()
		t.Fatal("the second child did not finish")
	}

	rows := ledgerRows(t, db, "ledger", 1)
	got := ids(t, rows)
	if len(rows) != total || len(got) != total {
		t.Errorf("%d rows for %d distinct events, want each of the %d exactly once", len(rows), len(got), total)
	}
}

// TestCrashChild is the consuming process of TestRunnerExactlyOnceAcrossKill.
func TestCrashChild(t *testing.T) {
	if os.Getenv(envChild) == "" {
		t.Skip("only run as a child of TestRunnerExactlyOnceAcrossKill")
	}
	blockAfter, _ := strconv.Atoi(os.Getenv(envBlockAfter))
	total, _ := strconv.Atoi(os.Getenv(envTotal))
	ctx := context.Background()
	db, err := sqlite.Open(ctx, os.Getenv(envDB))
	if err != nil {
		t.Fatal(err)
	}
	r, err := projections.NewRunner(ctx, db, newLedger("ledger"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := kafka.Config{Brokers: strings.Split(os.Getenv(envBrokers), ","), ClientID: "crash-child"}
	src, err := kafka.NewBatchConsumer(cfg, kafka.BatchOptions{MaxBatch: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var handled atomic.Int64
	handle := func(ctx context.Context, batch []*message.Message) error {
		if err := r.HandleBatch(ctx, batch); err != nil {
			return err
		}
		n := handled.Add(int64(len(batch)))
		if blockAfter > 0 && n >= int64(blockAfter) {
			// Committed to SQLite, not yet acknowledged to Kafka.
			fmt.Println("BLOCKED")
			select {}
		}
		var rows int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+projections.Table("ledger", 1, "events")).Scan(&rows); err != nil {
			return err
		}
		if rows == total {
			cancel()
		}
		return nil
	}
	// No resume: start from Kafka's committed offsets, so that what SQLite
	// has and Kafka was not told is delivered again.
	if err := src.Consume(cctx, r.GroupFor(events.TopicOrderEvents), events.TopicOrderEvents, nil, handle); err != nil {
		t.Fatal(err)
	}
}

// logWithCopies returns the records of ms as a relay that loses
// acknowledgements writes them: every other event numbered by its outbox
// (ADR 0007; the others carry none, as events of other producers), and after
// every fiftieth, the last ten again, with their ids and numbers.
func logWithCopies(t *testing.T, ms []events.Message) []*kgo.Record {
	t.Helper()
	const outbox = "0195d1c0-c4a5-7000-8000-00000000c0de"
	var out, sent []*kgo.Record
	for i, m := range ms {
		opts := []projectiontest.Option{projectiontest.ID("e-" + m.Key())}
		if i%2 == 1 {
			opts = append(opts, projectiontest.Sequence(outbox, int64(i+1)))
		}
		rec := record(t, m, opts...)
		out, sent = append(out, rec), append(sent, rec)
		if (i+1)%50 == 0 {
			for _, again := range sent[len(sent)-10:] {
				c := *again
				out = append(out, &c)
			}
		}
	}
	return out
}
