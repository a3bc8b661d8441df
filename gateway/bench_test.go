package gateway_test

import (
	"net/http"
	"testing"
)

// BenchmarkPlaceOrder measures the command intake: content type, body,
// schema validation, publish (an in-process gochannel) and the record of
// recently accepted commands. Kafka's ack is not part of it, and nothing is
// written to SQLite.
func BenchmarkPlaceOrder(b *testing.B) {
	e := newEnv(b)
	body := `{"user_id":"` + someUser + `","lines":[{"sku":"BOOK-1","quantity":2,"unit_price_cents":1250}]}`
	b.ReportAllocs()
	for b.Loop() {
		if rec := e.post("/v1/orders", body); rec.Code != http.StatusAccepted {
			b.Fatalf("status = %d; body: %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
