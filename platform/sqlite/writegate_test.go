package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/sqlite"
)

// setupCounter creates the counter table (one row, n = 0) and a log table.
func setupCounter(t testing.TB, db *sql.DB) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), `CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
		INSERT INTO counter (id, n) VALUES (1, 0);
		CREATE TABLE entries (writer INTEGER NOT NULL, i INTEGER NOT NULL, PRIMARY KEY (writer, i))`); err != nil {
		t.Fatalf("create tables: %v", err)
	}
}

func counter(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), "SELECT n FROM counter WHERE id = 1").Scan(&n); err != nil {
		t.Fatalf("read counter: %v", err)
	}
	return n
}

// Many writers of every kind at once, through two pools on one file (as two
// processes would be): transactions that read, then write; autocommit
// inserts; prepared statements run outside a transaction; and readers
// meanwhile. None fails, none is lost.
func TestManyWritersNothingLost(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "many.db")
	db := open(t, path)
	other := open(t, path) // a second pool: its writers meet db's in SQLite's busy handler
	setupCounter(t, db)
	insert, err := db.PrepareContext(ctx, "INSERT INTO entries (writer, i) VALUES (?, ?)")
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	defer insert.Close()

	const (
		txWriters, perTx         = 24, 20
		execWriters, perExec     = 8, 30
		preparedWriters, perPrep = 8, 30
		readers, perReader       = 4, 50
	)
	var wg sync.WaitGroup
	errs := make(chan error, txWriters*perTx+execWriters*perExec+preparedWriters*perPrep+readers*perReader)
	for w := range txWriters {
		pool := db
		if w%4 == 0 {
			pool = other
		}
		wg.Go(func() {
			for range perTx {
				errs <- increment(ctx, pool)
			}
		})
	}
	for w := range execWriters {
		wg.Go(func() {
			for i := range perExec {
				_, err := db.ExecContext(ctx, "INSERT INTO entries (writer, i) VALUES (?, ?)", 1000+w, i)
				errs <- err
			}
		})
	}
	for w := range preparedWriters {
		wg.Go(func() {
			for i := range perPrep {
				_, err := insert.ExecContext(ctx, 2000+w, i)
				errs <- err
			}
		})
	}
	for range readers {
		wg.Go(func() {
			for range perReader {
				var n int
				errs <- db.QueryRowContext(ctx, "SELECT count(*) FROM entries").Scan(&n)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a write or read failed: %v", err)
		}
	}
	if got, want := counter(t, db), txWriters*perTx; got != want {
		t.Errorf("counter = %d, want %d", got, want)
	}
	var entries int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM entries").Scan(&entries); err != nil {
		t.Fatal(err)
	}
	if want := execWriters*perExec + preparedWriters*perPrep; entries != want {
		t.Errorf("entries = %d, want %d", entries, want)
	}
}

// waitInUse polls until the pool has n connections in use: a writer started
// in a goroutine has its connection and is at the gate.
func waitInUse(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for db.Stats().InUse < n {
		if time.Now().After(deadline) {
			t.Fatalf("connections in use = %d, want %d", db.Stats().InUse, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A write waits for the gate while another write transaction is open, and
// gives up when its context ends, with the context's error. The gate is not
// lost: the open transaction commits, and the next write gets in.
func TestWriteWaitingForTheGateEndsWithItsContext(t *testing.T) {
	writes := []struct {
		name string
		// prepare returns the write, before it starts.
		prepare func(t *testing.T, db *sql.DB) func(ctx context.Context) error
	}{
		{"write transaction", func(_ *testing.T, db *sql.DB) func(context.Context) error {
			return func(ctx context.Context) error {
				tx, err := db.BeginTx(ctx, nil)
				if err == nil {
					_ = tx.Rollback()
				}
				return err
			}
		}},
		{"autocommit exec", func(_ *testing.T, db *sql.DB) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := db.ExecContext(ctx, "UPDATE counter SET n = n + 100 WHERE id = 1")
				return err
			}
		}},
		{"prepared statement", func(t *testing.T, db *sql.DB) func(context.Context) error {
			st, err := db.PrepareContext(context.Background(), "UPDATE counter SET n = n + 100 WHERE id = 1")
			if err != nil {
				t.Fatalf("prepare: %v", err)
			}
			t.Cleanup(func() { st.Close() })
			return func(ctx context.Context) error {
				_, err := st.ExecContext(ctx)
				return err
			}
		}},
	}
	ends := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"canceled", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded},
	}
	for _, w := range writes {
		for _, end := range ends {
			t.Run(w.name+" "+end.name, func(t *testing.T) {
				ctx := context.Background()
				db := open(t, filepath.Join(t.TempDir(), "gate.db"))
				setupCounter(t, db)
				holder, err := db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := holder.ExecContext(ctx, "UPDATE counter SET n = n + 1 WHERE id = 1"); err != nil {
					t.Fatal(err)
				}

				write := w.prepare(t, db)
				wctx, cancel := end.ctx()
				defer cancel()
				done := make(chan error, 1)
				go func() { done <- write(wctx) }()
				if end.want == context.Canceled {
					waitInUse(t, db, 2)
					cancel()
				}
				err = <-done
				if !errors.Is(err, end.want) {
					t.Fatalf("waiting write ended with %v, want %v", err, end.want)
				}
				// Canceled once it had its connection: it was at the gate.
				if end.want == context.Canceled && !strings.Contains(err.Error(), "write gate") {
					t.Errorf("error %q does not say it waited for the write gate", err)
				}

				if err := holder.Commit(); err != nil {
					t.Fatalf("commit the open transaction: %v", err)
				}
				if err := increment(ctx, db); err != nil {
					t.Fatalf("write after the gate was given up: %v", err)
				}
				if n := counter(t, db); n != 2 {
					t.Errorf("counter = %d, want 2: the waiting write must not have run", n)
				}
			})
		}
	}
}

// Reads never take the gate: while a write transaction is open, read-only
// transactions and queries answer (with the last committed state).
func TestReadsDoNotWaitForTheGate(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "reads.db"))
	setupCounter(t, db)
	holder, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	if _, err := holder.ExecContext(ctx, "UPDATE counter SET n = 7 WHERE id = 1"); err != nil {
		t.Fatal(err)
	}

	// Half the busy timeout: a read that waited for the gate would fail.
	rctx, cancel := context.WithTimeout(ctx, sqlite.BusyTimeoutMillis*time.Millisecond/2)
	defer cancel()
	reads := []struct {
		name string
		read func() (int, error)
	}{
		{"query", func() (int, error) {
			var n int
			err := db.QueryRowContext(rctx, "SELECT n FROM counter WHERE id = 1").Scan(&n)
			return n, err
		}},
		{"read-only transaction", func() (int, error) {
			tx, err := db.BeginTx(rctx, &sql.TxOptions{ReadOnly: true})
			if err != nil {
				return 0, err
			}
			defer tx.Rollback()
			var n int
			err = tx.QueryRowContext(rctx, "SELECT n FROM counter WHERE id = 1").Scan(&n)
			return n, err
		}},
	}
	for _, r := range reads {
		t.Run(r.name, func(t *testing.T) {
			n, err := r.read()
			if err != nil {
				t.Fatalf("read while a write transaction is open: %v", err)
			}
			if n != 0 {
				t.Errorf("read %d, want the committed 0", n)
			}
		})
	}
}

// Writers queued behind an open transaction all get in once it ends, and
// each sees what the one before it committed.
func TestQueuedWritersGetInOnceTheHolderEnds(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "queue.db"))
	setupCounter(t, db)
	holder, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.ExecContext(ctx, "UPDATE counter SET n = n + 1 WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	const queued = 8
	errs := make(chan error, queued)
	var wg sync.WaitGroup
	for range queued {
		wg.Go(func() { errs <- increment(ctx, db) })
	}
	waitInUse(t, db, 1+queued)
	if err := holder.Commit(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("queued writer: %v", err)
		}
	}
	if n := counter(t, db); n != 1+queued {
		t.Errorf("counter = %d, want %d", n, 1+queued)
	}
}

// Whichever way a write transaction ends, the gate comes free: a failed
// commit, a rollback, the transaction's context ending while it is open.
func TestTransactionEndsFreeTheGate(t *testing.T) {
	ends := []struct {
		name string
		end  func(t *testing.T, db *sql.DB)
	}{
		{"rollback", func(t *testing.T, db *sql.DB) {
			tx, err := db.BeginTx(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
		}},
		{"failed commit", func(t *testing.T, db *sql.DB) {
			ctx := context.Background()
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			// A deferred foreign key is checked at COMMIT, which fails.
			if _, err := tx.ExecContext(ctx, "INSERT INTO child (parent) VALUES (42)"); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err == nil {
				t.Fatal("commit of a dangling foreign key succeeded, want a failure")
			}
		}},
		{"context ends mid-transaction", func(t *testing.T, db *sql.DB) {
			ctx, cancel := context.WithCancel(context.Background())
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, "UPDATE counter SET n = n + 100 WHERE id = 1"); err != nil {
				t.Fatal(err)
			}
			cancel() // database/sql rolls the transaction back
		}},
	}
	for _, tc := range ends {
		t.Run(tc.name, func(t *testing.T) {
			db := open(t, filepath.Join(t.TempDir(), "ends.db"))
			setupCounter(t, db)
			if _, err := db.ExecContext(context.Background(), `CREATE TABLE parent (id INTEGER PRIMARY KEY);
				CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)`); err != nil {
				t.Fatal(err)
			}
			tc.end(t, db)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := increment(ctx, db); err != nil {
				t.Fatalf("write after the transaction ended: %v", err)
			}
			if n := counter(t, db); n != 1 {
				t.Errorf("counter = %d, want 1", n)
			}
		})
	}
}

// BenchmarkConcurrentWrites: 64 goroutines, one small write transaction
// each per operation, against a pool behind the gate (sqlite.Open) and a
// pool configured the same way without it, whose writers wait in SQLite's
// busy handler.
func BenchmarkConcurrentWrites(b *testing.B) {
	pools := []struct {
		name string
		open func(b *testing.B, path string) *sql.DB
	}{
		{"gated", func(b *testing.B, path string) *sql.DB {
			db, err := sqlite.Open(context.Background(), path)
			if err != nil {
				b.Fatal(err)
			}
			return db
		}},
		{"busy-handler", func(b *testing.B, path string) *sql.DB {
			db, err := sql.Open(sqlite.DriverName, path+"?_txlock=immediate&_pragma=busy_timeout(10000)"+
				"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)")
			if err != nil {
				b.Fatal(err)
			}
			return db
		}},
	}
	for _, p := range pools {
		b.Run(p.name, func(b *testing.B) {
			db := p.open(b, filepath.Join(b.TempDir(), "bench.db"))
			defer db.Close()
			db.SetMaxIdleConns(64)
			setupCounter(b, db)
			b.SetParallelism(32) // 64 goroutines on 2 cores
			var (
				mu        sync.Mutex
				latencies []time.Duration
			)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				var mine []time.Duration
				for pb.Next() {
					start := time.Now()
					if err := increment(ctx, db); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(start))
				}
				mu.Lock()
				latencies = append(latencies, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
			slices.Sort(latencies)
			if n := len(latencies); n > 0 {
				b.ReportMetric(float64(latencies[n/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(latencies[n*99/100].Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(latencies[n-1].Microseconds())/1000, "max-ms")
			}
		})
	}
}
