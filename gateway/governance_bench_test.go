package gateway_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/millrace/millrace/gateway"
)

// BenchmarkGovernedRequest measures a request that does no I/O (a sales
// report with a bad date: 400) through the governance layers, with the
// default rules and with three rate limits for 10 000 clients, so that
// what governance costs is not lost in a store's time.
func BenchmarkGovernedRequest(b *testing.B) {
	for _, tc := range []struct {
		name  string
		rules gateway.Rules
	}{
		{"defaults", gateway.Rules{}},
		{"three limits, 10k clients", gateway.Rules{RateLimits: []gateway.RateLimit{
			{Route: gateway.AllRoutes, PerClient: true, Rate: 1e6, Burst: 1e6},
			{Route: "GET /v1/reports/sales", PerClient: true, Rate: 1e6, Burst: 1e6},
			{Route: "GET /v1/reports/sales", Rate: 1e9, Burst: 1e9},
		}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e, _ := newGoverned(b, tc.rules, nil)
			addrs := make([]string, 10_000)
			for i := range addrs {
				addrs[i] = "10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250) + ":40000"
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				req := httptest.NewRequest(http.MethodGet, "/v1/reports/sales?date=yesterday", nil)
				req.RemoteAddr = addrs[i%len(addrs)]
				rec := httptest.NewRecorder()
				e.handler.ServeHTTP(rec, req)
				if rec.Code != http.StatusBadRequest {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}
