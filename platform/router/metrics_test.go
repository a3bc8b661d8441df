package router_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/millrace/millrace/platform/router"
)

// TestMetrics: every metric the stack promises is exposed, with the
// handler label, and lints clean.
func TestMetrics(t *testing.T) {
	e := newEnv(t, router.Config{Rules: fastRules(func(h *router.HandlerRules) {
		h.Timeout = router.Duration(20 * time.Millisecond)
		h.Throttle = router.ThrottleRules{PerSecond: 20, Burst: 1}
	})})
	var c calls
	e.handle("h", "in", func(msg *message.Message) error {
		switch string(msg.Payload) {
		case "permanent":
			return router.Permanent(errors.New("bad"))
		case "slow":
			if c.add(msg.UUID) == 1 {
				<-msg.Context().Done()
				return msg.Context().Err()
			}
		}
		return nil
	})
	e.run()
	// A poisoned key, a parked message behind it, a timeout then success,
	// and two messages in a row to wait for the throttle.
	e.publish("in", newMsg("k", "permanent"), newMsg("k", "ok"), newMsg("j", "slow"), newMsg("", "ok"))

	for _, name := range []string{
		"millrace_handler_messages_total",
		"millrace_handler_duration_seconds",
		"millrace_handler_retries_total",
		"millrace_handler_poisoned_total",
		"millrace_handler_parked_total",
		"millrace_handler_throttled_total",
		"millrace_handler_timeouts_total",
		"millrace_handler_breaker_state",
	} {
		if n := series(t, e.reg, name); n == 0 {
			t.Errorf("metric %s: no series, want at least one", name)
		}
	}
	for _, outcome := range []string{router.OutcomeSuccess, router.OutcomePoisoned, router.OutcomeParked} {
		if n := metric(t, e.reg, "millrace_handler_messages_total", "handler=h", "outcome="+outcome); n < 1 {
			t.Errorf("messages{outcome=%s} = %v, want at least 1", outcome, n)
		}
	}
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

// TestMetricsNeverUseTheDefaultRegisterer: two stacks on their own
// registries coexist, and a stack without a registerer registers nothing
// globally.
func TestMetricsNeverUseTheDefaultRegisterer(t *testing.T) {
	before, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	newEnv(t, router.Config{})
	newEnv(t, router.Config{})
	after, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("default registry grew from %d to %d metric families", len(before), len(after))
	}
}

// series counts the series of the metric family name.
func series(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}
