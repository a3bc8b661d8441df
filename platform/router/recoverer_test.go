package router_test

import (
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
)

// TestRecovererPoisonsPanics: a panicking handler does not crash the
// process; the message is poisoned at once with the panic value and the
// stack in the reason, and the next message is handled.
func TestRecovererPoisonsPanics(t *testing.T) {
	e := newEnv(t, router.Config{Rules: fastRules(nil)})
	var c calls
	e.handle("h", "in", func(msg *message.Message) error {
		c.add(msg.UUID)
		if string(msg.Payload) == "boom" {
			var m map[string]int
			m["nil map"]++ // panics: assignment to entry in nil map
		}
		return nil
	})
	e.run()

	bad, good := newMsg("k", "boom"), newMsg("other", "fine")
	e.publish("in", bad, good)

	if n := c.get(bad.UUID); n != 1 {
		t.Errorf("panicking message tried %d times, want 1: a panic is permanent", n)
	}
	if n := c.get(good.UUID); n != 1 {
		t.Errorf("next message handled %d times, want 1", n)
	}
	entries := e.entries(poison.Filter{})
	if len(entries) != 1 {
		t.Fatalf("%d poison entries, want 1", len(entries))
	}
	got := entries[0]
	if got.Cause != router.CausePanic || got.MessageID != bad.UUID {
		t.Errorf("entry cause %s for %s, want panic for %s", got.Cause, got.MessageID, bad.UUID)
	}
	for _, want := range []string{
		"handler panicked: assignment to entry in nil map",
		"goroutine ",                  // the stack follows
		"TestRecovererPoisonsPanics.", // with the handler's frame
	} {
		if !strings.Contains(got.Reason, want) {
			t.Errorf("reason does not contain %q:\n%s", want, got.Reason)
		}
	}
	if n := metric(t, e.reg, "millrace_handler_poisoned_total", "handler=h", "cause=panic"); n != 1 {
		t.Errorf("poisoned{cause=panic} = %v, want 1", n)
	}
}
