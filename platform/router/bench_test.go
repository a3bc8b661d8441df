package router_test

import (
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/sqlite"
)

// BenchmarkStack measures what the governance stack adds to each message
// that succeeds at once: the poison queue's look-up of the key (its
// in-memory index of blocked keys, package poison), the throttle, retry,
// breaker and timeout bookkeeping, and the metrics; with no key poisoned,
// and with 1000 other keys poisoned.
func BenchmarkStack(b *testing.B) {
	for _, poisoned := range []int{0, 1000} {
		b.Run("poisoned-keys="+strconv.Itoa(poisoned), func(b *testing.B) {
			ctx := b.Context()
			pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
			defer pubsub.Close()
			db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "poison.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			store, err := poison.New(ctx, db, poison.Config{Publisher: pubsub})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			for i := range poisoned {
				m := newMsg("bad-"+strconv.Itoa(i), "{}")
				if err := store.Poison(ctx, "unnamed", m, router.Failure{Cause: router.CausePermanent, Reason: "x", Attempts: 1}); err != nil {
					b.Fatal(err)
				}
			}
			stack, err := router.NewStack(router.Config{Poison: store})
			if err != nil {
				b.Fatal(err)
			}
			h := stack.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, nil })
			msgs := make([]*message.Message, 1024)
			for i := range msgs {
				msgs[i] = newMsg("key-"+strconv.Itoa(i), "{}")
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if _, err := h(msgs[i%len(msgs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i), "ns/msg")
		})
	}
}
