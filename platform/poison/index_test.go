package poison_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/sqlite"
)

// openStore opens a Store on the SQLite file at path through a pool of its
// own, as another process sharing poison.db would (ADR 0005).
func openStore(t *testing.T, path string) *poison.Store { return openStoreB(t, path) }

func openStoreB(t testing.TB, path string) *poison.Store {
	t.Helper()
	ctx := t.Context()
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = pubsub.Close() })
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s, err := poison.New(ctx, db, poison.Config{Publisher: pubsub})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// admit asks s about msg for handler and returns its answer.
func admit(t *testing.T, s *poison.Store, handler string, key string, offset int) router.Admission {
	t.Helper()
	adm, err := s.Admit(context.Background(), handler, consumed("orders", key, `{}`, offset))
	if err != nil {
		t.Fatalf("Admit: %v", err)
	}
	return adm
}

// dropKey drops every open entry of handler's key through s.
func dropKey(t *testing.T, s *poison.Store, handler, key string) {
	t.Helper()
	entries, err := s.List(context.Background(), poison.Filter{Handler: handler, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Status.Open() {
			continue
		}
		if _, err := s.Drop(context.Background(), e.ID, "test"); err != nil {
			t.Fatalf("drop entry %d: %v", e.ID, err)
		}
	}
}

// The poison queue's answer for a key must follow what was committed to
// poison.db before the question, whoever committed it: this process's store,
// or another process's on the same file (a partition moved between two
// workers). The index of blocked keys in front of the table must never
// answer from before such a commit.
func TestAdmitFollowsCommitsOfEveryStoreOnTheFile(t *testing.T) {
	const handler = "orders"
	cases := []struct {
		name string
		// another: the writer is a second Store on the same file.
		another bool
		// gap is how soon the reader's index may load again; -1 keeps the
		// default.
		gap time.Duration
	}{
		{"same store, index reloads at once", false, 0},
		{"same store, default reload gap", false, -1},
		{"another store on the file, index reloads at once", true, 0},
		{"another store on the file, default reload gap", true, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "poison.db")
			reader := openStore(t, path)
			writer := reader
			if tc.another {
				writer = openStore(t, path)
			}
			if tc.gap >= 0 {
				poison.SetIndexReloadGap(reader, tc.gap)
			}
			offset := 0
			next := func() int { offset++; return offset }
			for round := range 5 {
				key := "o-" + strconv.Itoa(round)
				// The reader knows the key as free.
				if adm := admit(t, reader, handler, key, next()); adm != router.Handle {
					t.Fatalf("round %d: free key admitted as %v, want Handle", round, adm)
				}
				// The writer poisons a message of it.
				m := consumed("orders", key, `{}`, next())
				if adm := arrive(t, writer, handler, m, true); adm != router.Handle {
					t.Fatalf("round %d: writer admitted the failing message as %v, want Handle", round, adm)
				}
				// The reader's next message of the key parks behind it,
				// at once; other keys and other handlers flow.
				if adm := admit(t, reader, handler, key, next()); adm != router.Park {
					t.Fatalf("round %d: message after the poisoned one admitted as %v, want Park", round, adm)
				}
				if adm := admit(t, reader, handler, "other-"+key, next()); adm != router.Handle {
					t.Errorf("round %d: another key admitted as %v, want Handle", round, adm)
				}
				if adm := admit(t, reader, "projection.orders", key, next()); adm != router.Handle {
					t.Errorf("round %d: the key for another handler admitted as %v, want Handle", round, adm)
				}
				// Once the writer dropped the key's entries, it flows again.
				dropKey(t, writer, handler, key)
				if adm := admit(t, reader, handler, key, next()); adm != router.Handle {
					t.Fatalf("round %d: message after the drop admitted as %v, want Handle", round, adm)
				}
			}
		})
	}
}

// While poison.db does not change, the index answers for free keys and for
// blocked ones without asking the table.
func TestIndexAnswersWhileNothingChanges(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "poison.db"))
	poison.SetIndexReloadGap(s, 0)
	arrive(t, s, "orders", consumed("orders", "bad", `{}`, 1), true)
	admit(t, s, "orders", "warm-up", 2) // loads the index after the poisoning

	before := poison.IndexAnswered(s)
	for i := range 100 {
		if adm := admit(t, s, "orders", "free-"+strconv.Itoa(i), 10+i); adm != router.Handle {
			t.Fatalf("free key admitted as %v, want Handle", adm)
		}
	}
	if got := poison.IndexAnswered(s) - before; got != 100 {
		t.Errorf("the index answered %d of 100 look-ups of free keys, want all", got)
	}
}
