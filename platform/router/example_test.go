package router_test

import (
	"errors"
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/millrace/millrace/platform/router"
)

// A handler marks a failure that retrying cannot fix as permanent: the
// stack poisons the message at once instead of retrying it.
func ExamplePermanent() {
	errBadVersion := errors.New("unknown schema version 9")
	err := fmt.Errorf("decode order o-1: %w", router.Permanent(errBadVersion))

	fmt.Println(router.IsPermanent(err), errors.Is(err, errBadVersion))
	fmt.Println(router.IsPermanent(errors.New("database is locked")))
	// Output:
	// true true
	// false
}

// Rules read from YAML start from the defaults; a handler's entry changes
// only what it names. Validate reports every problem at once.
func ExampleRules() {
	var r router.Rules
	err := yaml.Unmarshal([]byte(`
handlers:
  notifications.orders.events:
    retry: {max_attempts: 3}
    throttle: {per_second: 50, burst: 10}
`), &r)
	if err != nil {
		fmt.Println(err)
		return
	}
	h := r.For("notifications.orders.events")
	fmt.Println(h.Retry.MaxAttempts, h.Retry.InitialInterval, h.Throttle.PerSecond, h.Timeout)

	h.Retry.Jitter = 2
	h.Breaker.OpenTimeout = 0
	r.Handlers["notifications.orders.events"] = h
	fmt.Println(r.Validate())
	// Output:
	// 3 100ms 50 30s
	// handlers.notifications.orders.events.retry.jitter 2: want a fraction from 0 (no jitter) to 1
	// handlers.notifications.orders.events.breaker.open_timeout 0s: want a positive duration such as "5s": how long the breaker stays open before a probe
}
