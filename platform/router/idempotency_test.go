package router_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/sqlite"
)

// TestIdempotency: a message a handler completed is skipped when it comes
// again, on another instance sharing the file or after a restart; a failed
// message is not marked, so its redelivery runs the handler again.
func TestIdempotency(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reactor.db")
	var effects calls

	// instance opens the shared file as a separate process would, and runs
	// the reactor behind the idempotency middleware.
	instance := func(t *testing.T) *env {
		db, err := sqlite.Open(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		idem, err := router.NewIdempotency(t.Context(), db)
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, router.Config{Rules: fastRules(func(h *router.HandlerRules) { h.Retry.MaxAttempts = 1 })})
		e.handle("reactor", "in", func(msg *message.Message) error {
			effects.add(msg.UUID)
			if string(msg.Payload) == "fail" {
				return router.Permanent(errors.New("cannot send"))
			}
			return nil
		}).AddMiddleware(idem.Middleware)
		e.run()
		return e
	}

	ok, failing := newMsg("", "ok"), newMsg("", "fail")
	a := instance(t)
	a.publish("in", ok, failing)

	b := instance(t) // another instance on the same file
	b.publish("in", ok.Copy(), failing.Copy())
	if err := a.close(); err != nil {
		t.Fatal(err)
	}
	c := instance(t) // after a restart
	c.publish("in", ok.Copy())

	if n := effects.get(ok.UUID); n != 1 {
		t.Errorf("completed message handled %d times, want 1", n)
	}
	if n := effects.get(failing.UUID); n != 2 {
		t.Errorf("failed message handled %d times, want 2: a failure is not marked completed", n)
	}

	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	idem, err := router.NewIdempotency(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{ok.UUID: true, failing.UUID: false} {
		if got, err := idem.Completed(context.Background(), "reactor", id); err != nil || got != want {
			t.Errorf("Completed(%s) = %v, %v; want %v", id, got, err, want)
		}
	}
}
