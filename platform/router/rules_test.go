package router_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"gopkg.in/yaml.v3"

	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
)

func TestRulesValidate(t *testing.T) {
	cases := []struct {
		name string
		mut  func(*router.Rules)
		want []string // every one must be reported
	}{
		{name: "defaults are valid", mut: func(*router.Rules) {}},
		{
			name: "every problem at once",
			mut: func(r *router.Rules) {
				r.Defaults.Retry.MaxAttempts = 0
				r.Defaults.Retry.Jitter = 1.5
				r.Defaults.Breaker.ErrorRatio = 2
				r.Defaults.Timeout = router.Duration(-time.Second)
				r.Handlers = map[string]router.HandlerRules{"orders": r.Defaults, "": r.Defaults}
				h := r.Handlers["orders"]
				h.Throttle = router.ThrottleRules{PerSecond: 10, Burst: 0}
				r.Handlers["orders"] = h
			},
			want: []string{
				"defaults.retry.max_attempts 0: want at least 1 (1 means no retries)",
				"defaults.retry.jitter 1.5: want a fraction from 0 (no jitter) to 1",
				"defaults.breaker.error_ratio 2: want a fraction from 0 (off) to 1",
				`defaults.timeout -1s: want "0s" (no timeout) or a positive duration`,
				"handlers: a handler name is empty",
				"handlers.orders.throttle.burst 0: want at least 1 when per_second is set",
				"handlers.orders.retry.max_attempts 0",
			},
		},
		{
			name: "a breaker that one message could open alone",
			mut:  func(r *router.Rules) { r.Defaults.Breaker.ConsecutiveFailures = 3 },
			want: []string{"defaults.breaker.consecutive_failures 3: want 0 (off) or more than retry.max_attempts (5)"},
		},
		{
			name: "ratio rules need a window and a minimum",
			mut: func(r *router.Rules) {
				r.Defaults.Breaker.SlowRatio = 0.5
				r.Defaults.Breaker.SlowCall = 0
				r.Defaults.Breaker.Window = 0
				r.Defaults.Breaker.MinRequests = 0
			},
			want: []string{"breaker.slow_call 0s", "breaker.window 0s", "breaker.min_requests 0"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := router.DefaultRules()
			tc.mut(&r)
			err := r.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate = nil, want problems")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate does not report %q; it says:\n%v", w, err)
				}
			}
		})
	}
}

func TestRulesDecode(t *testing.T) {
	const doc = `
defaults:
  retry: {max_attempts: 3, initial_interval: 250ms}
  timeout: 0s
handlers:
  notifications:
    breaker: {open_timeout: 30s, error_ratio: 0}
    throttle: {per_second: 50, burst: 10}
`
	jsonDoc := `{"defaults": {"retry": {"max_attempts": 3, "initial_interval": "250ms"}, "timeout": "0s"},
		"handlers": {"notifications": {"breaker": {"open_timeout": "30s", "error_ratio": 0},
		"throttle": {"per_second": 50, "burst": 10}}}}`
	decoders := map[string]func(*router.Rules) error{
		"yaml": func(r *router.Rules) error { return yaml.Unmarshal([]byte(doc), r) },
		"json": func(r *router.Rules) error { return json.Unmarshal([]byte(jsonDoc), r) },
	}
	for name, decode := range decoders {
		t.Run(name, func(t *testing.T) {
			var r router.Rules
			if err := decode(&r); err != nil {
				t.Fatal(err)
			}
			if err := r.Validate(); err != nil {
				t.Fatalf("decoded rules invalid: %v", err)
			}
			def := router.DefaultRules().Defaults
			d := r.Defaults
			if d.Retry.MaxAttempts != 3 || d.Retry.InitialInterval.D() != 250*time.Millisecond {
				t.Errorf("defaults.retry = %+v, want max_attempts 3 and initial_interval 250ms", d.Retry)
			}
			if d.Retry.MaxInterval != def.Retry.MaxInterval || d.Breaker != def.Breaker {
				t.Error("fields the document does not name must keep the built-in defaults")
			}
			if d.Timeout != 0 {
				t.Errorf("defaults.timeout = %s, want 0s (off): zero is a value, not a missing field", d.Timeout)
			}
			h := r.For("notifications")
			if h.Retry != d.Retry {
				t.Errorf("handler retry = %+v, want the decoded defaults %+v", h.Retry, d.Retry)
			}
			if h.Breaker.OpenTimeout.D() != 30*time.Second || h.Breaker.ErrorRatio != 0 ||
				h.Breaker.ConsecutiveFailures != def.Breaker.ConsecutiveFailures {
				t.Errorf("handler breaker = %+v, want open_timeout 30s, error_ratio 0, the rest default", h.Breaker)
			}
			if h.Throttle != (router.ThrottleRules{PerSecond: 50, Burst: 10}) {
				t.Errorf("handler throttle = %+v", h.Throttle)
			}
			if r.For("other") != d {
				t.Error("a handler without an entry must get the defaults")
			}
		})
	}

	bad := []struct {
		name, doc string
		want      []string
	}{
		{"misspelt field, with its line", "defaults:\n  breaker:\n    eror_ratio: 0.3\n",
			[]string{"defaults.breaker.eror_ratio (line 3): unknown field; known: consecutive_failures, error_ratio"}},
		{"duration without unit", "defaults:\n  timeout: 250\n", []string{`duration "250": want a number with a unit`}},
		{"unknown top-level field", "default:\n  timeout: 1s\n", []string{"default (line 1): unknown field; known: defaults, handlers"}},
		{"every problem at once", "defaults:\n  retri: {}\nhandlers:\n  a: {timeout: 1s, breaker: {x: 1}}\n",
			[]string{"defaults.retri (line 2)", "handlers.a.breaker.x (line 4)"}},
	}
	for _, tc := range bad {
		t.Run("yaml "+tc.name, func(t *testing.T) {
			var r router.Rules
			err := yaml.Unmarshal([]byte(tc.doc), &r)
			if err == nil {
				t.Fatal("decode succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
	t.Run("json misspelt field", func(t *testing.T) {
		var r router.Rules
		err := json.Unmarshal([]byte(`{"handlers": {"a": {"retry": {"max_atempts": 2}}}}`), &r)
		if err == nil || !strings.Contains(err.Error(), `handlers.a: json: unknown field "max_atempts"`) {
			t.Errorf("decode = %v, want the unknown field named with its handler", err)
		}
	})
	t.Run("round trip", func(t *testing.T) {
		want := router.DefaultRules()
		want.Handlers = map[string]router.HandlerRules{"x": want.Defaults}
		b, err := yaml.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "initial_interval: 100ms") {
			t.Errorf("durations must be written as strings:\n%s", b)
		}
		var got router.Rules
		if err := yaml.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.Defaults != want.Defaults || got.For("x") != want.Defaults {
			t.Errorf("round trip changed the rules:\n%s", b)
		}
	})
}

// TestSetRules: new rules apply to the next message; invalid rules are
// refused with every problem and the rules in force stay; an open breaker
// stays open when its thresholds change.
func TestSetRules(t *testing.T) {
	e := newEnv(t, router.Config{Rules: fastRules(func(h *router.HandlerRules) {
		h.Retry.MaxAttempts = 2
		h.Breaker = router.BreakerRules{}
	})})
	var c calls
	e.handle("h", "in", func(msg *message.Message) error { c.add(msg.UUID); return errTransient })
	e.run()

	first := newMsg("a", "{}")
	e.publish("in", first)

	bad := e.stack.Rules()
	bad.Defaults.Retry.MaxAttempts = 0
	bad.Defaults.Retry.Multiplier = 0.5
	err := e.stack.SetRules(bad)
	if err == nil || !strings.Contains(err.Error(), "retry.max_attempts 0") || !strings.Contains(err.Error(), "retry.multiplier 0.5") {
		t.Fatalf("SetRules(invalid) = %v, want both problems reported", err)
	}
	if e.stack.Rules().Defaults.Retry.MaxAttempts != 2 {
		t.Fatal("refused rules replaced the rules in force")
	}

	good := e.stack.Rules()
	good.Handlers = map[string]router.HandlerRules{"h": good.Defaults}
	hr := good.Handlers["h"]
	hr.Retry.MaxAttempts = 4
	good.Handlers["h"] = hr
	if err := e.stack.SetRules(good); err != nil {
		t.Fatal(err)
	}
	second := newMsg("b", "{}")
	e.publish("in", second)

	if a, b := c.get(first.UUID), c.get(second.UUID); a != 2 || b != 4 {
		t.Errorf("attempts = %d then %d, want 2 under the first rules and 4 after SetRules", a, b)
	}
	for _, pe := range e.entries(poison.Filter{}) {
		if want := map[string]int{first.UUID: 2, second.UUID: 4}[pe.MessageID]; pe.Attempts != want {
			t.Errorf("entry of %s records %d attempts, want %d", pe.MessageID, pe.Attempts, want)
		}
	}
}

func TestSetRulesKeepsBreakerState(t *testing.T) {
	e := newEnv(t, router.Config{Rules: consecutiveRules(time.Hour)})
	e.handle("h", "in", func(*message.Message) error { return errTransient })
	e.run()
	e.publish("in", newMsg("a", "{}"))
	e.publishAsync("in", newMsg("b", "{}"))
	waitFor(t, 10*time.Second, "the breaker to open", func() bool { return e.stack.BreakerState("h") == router.Open })

	r := e.stack.Rules()
	r.Defaults.Breaker.ConsecutiveFailures = 8
	r.Defaults.Breaker.ErrorRatio = 0.9
	r.Defaults.Breaker.MinRequests = 10
	r.Defaults.Breaker.Window = router.Duration(time.Second)
	if err := e.stack.SetRules(r); err != nil {
		t.Fatal(err)
	}
	if s := e.stack.BreakerState("h"); s != router.Open {
		t.Errorf("breaker %s after SetRules, want still open", s)
	}
	if err := e.close(); err != nil {
		t.Fatal(err)
	}
}
