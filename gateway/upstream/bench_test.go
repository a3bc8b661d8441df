package upstream_test

import (
	"context"
	"sync"
	"testing"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway/upstream"
	"github.com/millrace/millrace/platform/discovery"
	"github.com/millrace/millrace/projections/queryapi/queryapitest"
)

// BenchmarkOrder reads one order in-process and through the client (one
// query edge over loopback HTTP, found by the in-process registry), to
// show what the network hop costs.
func BenchmarkOrder(b *testing.B) {
	m := queryapitest.NewReadModels(b)
	m.Feed(b, events.UserRegistered{UserID: someUser, Email: "ada@example.com", FullName: "Ada", RegisteredAt: someDay})
	m.Feed(b, events.OrderPlaced{OrderID: someOrder, UserID: someUser, Currency: "EUR", TotalCents: 2500, PlacedAt: someDay,
		Lines: []events.PricedLine{{SKU: "BOOK-1", Quantity: 2, UnitPriceCents: 1250, LineTotalCents: 2500}}})

	b.Run("in-process", func(b *testing.B) {
		for b.Loop() {
			if _, err := m.Orders.Order(context.Background(), someOrder); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("upstream", func(b *testing.B) {
		reg := discovery.NewMemory(discovery.MemoryConfig{})
		b.Cleanup(func() { _ = reg.Close() })
		edge := queryapitest.StartEdge(b, m)
		if err := reg.Register(context.Background(), discovery.Registration{
			ID: "bench", Service: upstream.DefaultService, Address: "127.0.0.1", Port: edge.Port,
		}); err != nil {
			b.Fatal(err)
		}
		c, err := upstream.New(upstream.Config{Resolver: reg})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Run(ctx)
		}()
		b.Cleanup(func() {
			cancel()
			wg.Wait()
		})
		for b.Loop() {
			if _, err := c.Order(context.Background(), someOrder); err != nil {
				b.Fatal(err)
			}
		}
	})
}
