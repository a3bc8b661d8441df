package gateway_test

import (
	"fmt"
	"time"

	"github.com/millrace/millrace/gateway"
)

// Rules are validated as a whole, and every problem says where it is and
// what to fix; Gateway.SetRules refuses such rules and keeps those in force.
func ExampleRules_Validate() {
	rules := gateway.Rules{
		RateLimits: []gateway.RateLimit{
			{Route: "*", PerClient: true, Rate: 50, Burst: 100},
			{Route: "POST /v1/orders", PerClient: true, Rate: 0, Burst: 0},
		},
		Timeouts: gateway.TimeoutRules{Routes: map[string]time.Duration{"GET /v1/orders/{id}": 0}},
		Breakers: gateway.BreakerRules{Edges: map[string]gateway.BreakerRule{"order": {Failures: 3}}},
	}
	fmt.Println(rules.Validate())
	// Output:
	// rate_limits[1].rate: must be a number of requests per second above 0 (0.5 is one every 2 s), got 0
	// rate_limits[1].burst: must be at least 1 request (how many may come at once), got 0
	// timeouts.routes["GET /v1/orders/{id}"]: must be a positive duration such as 2s, got 0s
	// breakers.edges.order: "order" is not a read edge; use one of commands, notifications, orders, sales
}
