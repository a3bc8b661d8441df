package router_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/router"
)

// TestThrottle: with a bucket of 2 tokens refilled 5 per second, a burst
// of 6 messages has at least 3 wait for a token; after SetRules lifts the
// limit, none waits.
func TestThrottle(t *testing.T) {
	e := newEnv(t, router.Config{Rules: fastRules(func(h *router.HandlerRules) {
		h.Throttle = router.ThrottleRules{PerSecond: 5, Burst: 2}
	})})
	var c calls
	e.handle("h", "in", func(msg *message.Message) error { c.add("all"); return nil })
	e.run()

	for range 6 {
		e.publish("in", newMsg("", "{}"))
	}
	waited := metric(t, e.reg, "millrace_handler_throttled_total", "handler=h")
	if waited < 3 {
		t.Errorf("%v of 6 messages waited for a token, want at least 3 (burst 2, 5/s)", waited)
	}
	if n := c.get("all"); n != 6 {
		t.Errorf("handled %d, want 6: throttled messages wait, they are not dropped", n)
	}

	r := e.stack.Rules()
	r.Defaults.Throttle.PerSecond = 0
	if err := e.stack.SetRules(r); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		e.publish("in", newMsg("", "{}"))
	}
	if got := metric(t, e.reg, "millrace_handler_throttled_total", "handler=h"); got != waited {
		t.Errorf("throttled grew from %v to %v after the limit was lifted", waited, got)
	}
}
