package router_test

import (
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/sqlite"
)

// BenchmarkRouterChain measures messages per second through a running
// Watermill router (gochannel, one subscriber, ack per message) to a no-op
// handler: bare, and behind the whole governance stack as router.New builds
// it. The difference is what the middleware chain costs a consumer.
func BenchmarkRouterChain(b *testing.B) {
	for _, stacked := range []bool{false, true} {
		name := "bare"
		if stacked {
			name = "stack"
		}
		b.Run(name, func(b *testing.B) {
			ctx := b.Context()
			pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, watermill.NopLogger{})
			defer pubsub.Close()
			var r *message.Router
			if stacked {
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
				if r, _, err = router.New(router.Config{Poison: store, Registerer: prometheus.NewRegistry()}); err != nil {
					b.Fatal(err)
				}
			} else {
				var err error
				if r, err = message.NewRouter(message.RouterConfig{}, watermill.NopLogger{}); err != nil {
					b.Fatal(err)
				}
			}
			var handled atomic.Int64
			done := make(chan struct{})
			want := int64(b.N)
			r.AddNoPublisherHandler("bench", "bench", pubsub, func(*message.Message) error {
				if handled.Add(1) == want {
					close(done)
				}
				return nil
			})
			runErr := make(chan error, 1)
			go func() { runErr <- r.Run(ctx) }()
			<-r.Running()
			msgs := make([]*message.Message, b.N)
			for i := range msgs {
				msgs[i] = newMsg("key-"+strconv.Itoa(i%1000), "{}")
			}
			b.ResetTimer()
			start := time.Now()
			go func() {
				for _, m := range msgs {
					if err := pubsub.Publish("bench", m); err != nil {
						b.Error(err)
						return
					}
				}
			}()
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				b.Fatalf("handled %d of %d messages", handled.Load(), b.N)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			b.StopTimer()
			if err := r.Close(); err != nil {
				b.Fatal(err)
			}
			if err := <-runErr; err != nil {
				b.Fatal(err)
			}
		})
	}
}
