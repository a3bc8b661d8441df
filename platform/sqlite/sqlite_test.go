package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/millrace/millrace/platform/sqlite"
)

func TestOpenConfiguresEveryConnection(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "nested", "dir", "state.db"))
	// Several connections at once, so that more than the first is checked.
	db.SetMaxIdleConns(4)
	conns := make([]*sql.Conn, 3)
	for i := range conns {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatalf("get connection %d: %v", i, err)
		}
		defer c.Close()
		conns[i] = c
	}
	cases := []struct {
		pragma string
		want   string
	}{
		{"journal_mode", "wal"},
		{"busy_timeout", "10000"},
		{"foreign_keys", "1"},
		{"synchronous", "1"}, // NORMAL
	}
	for _, tc := range cases {
		t.Run(tc.pragma, func(t *testing.T) {
			for i, c := range conns {
				var got string
				if err := c.QueryRowContext(ctx, "PRAGMA "+tc.pragma).Scan(&got); err != nil {
					t.Fatalf("read pragma %s: %v", tc.pragma, err)
				}
				if !strings.EqualFold(got, tc.want) {
					t.Errorf("connection %d: pragma %s = %q, want %q", i, tc.pragma, got, tc.want)
				}
			}
		})
	}
}

func TestOpenFailsNamingTheFile(t *testing.T) {
	dir := t.TempDir()
	notADir := filepath.Join(dir, "plain-file")
	if err := os.WriteFile(notADir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("this is not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		path string
	}{
		{"parent is a file", filepath.Join(notADir, "state.db")},
		{"path is a directory", dir},
		{"file is not a database", garbage},
		{"path with a query", filepath.Join(dir, "x.db?mode=ro")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, err := sqlite.Open(context.Background(), tc.path)
			if err == nil {
				db.Close()
				t.Fatalf("Open(%q) succeeded, want an error", tc.path)
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name the file %q", err, tc.path)
			}
		})
	}
}

// Read-modify-write transactions from two goroutines: with deferred
// transactions one of them fails with SQLITE_BUSY when it tries to upgrade its
// read lock; with BEGIN IMMEDIATE every transaction waits its turn and the
// counter ends exact.
func TestConcurrentWriteTransactionsAllSucceed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "counter.db")
	db := open(t, path)
	if _, err := db.ExecContext(ctx, `CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
		INSERT INTO counter (id, n) VALUES (1, 0)`); err != nil {
		t.Fatalf("create table: %v", err)
	}

	const writers, perWriter = 2, 100
	errs := make(chan error, writers*perWriter)
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWriter {
				errs <- increment(ctx, db)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("increment: %v", err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	reopened := open(t, path)
	var n int
	if err := reopened.QueryRowContext(ctx, "SELECT n FROM counter WHERE id = 1").Scan(&n); err != nil {
		t.Fatalf("read counter after reopening: %v", err)
	}
	if n != writers*perWriter {
		t.Errorf("counter = %d after reopening, want %d", n, writers*perWriter)
	}
}

func increment(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT n FROM counter WHERE id = 1").Scan(&n); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE counter SET n = ? WHERE id = 1", n+1); err != nil {
		return err
	}
	return tx.Commit()
}

func open(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
