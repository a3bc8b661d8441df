package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Rules are the governance rules of every handler: the defaults, and the
// complete rules of each handler that differs from them. Rules are plain
// values; a Stack holds the current ones and SetRules swaps them while
// messages flow.
//
// Each entry of Handlers is complete on its own. When Rules are decoded from
// JSON or YAML, decoding starts from DefaultRules, the defaults section
// changes what it names, and each handler's entry starts from the decoded
// defaults and changes only what it names, so a rules file lists only what
// differs:
//
//	defaults:
//	  retry: {max_attempts: 4, initial_interval: 200ms}
//	handlers:
//	  notifications.orders.events:
//	    breaker: {open_timeout: 30s}
//	    throttle: {per_second: 50, burst: 10}
//
// Unknown fields are refused, so a misspelt rule fails instead of being
// ignored. A zero value of a field that turns a rule off (timeout "0s",
// throttle per_second 0, a breaker ratio 0) means off, not "use the default".
type Rules struct {
	Defaults HandlerRules            `json:"defaults" yaml:"defaults"`
	Handlers map[string]HandlerRules `json:"handlers,omitempty" yaml:"handlers,omitempty"`
}

// HandlerRules govern one handler.
type HandlerRules struct {
	Retry   RetryRules   `json:"retry" yaml:"retry"`
	Breaker BreakerRules `json:"breaker" yaml:"breaker"`
	// Timeout bounds each attempt at one message: the message context is
	// cancelled after it. "0s" means no timeout.
	Timeout  Duration      `json:"timeout" yaml:"timeout"`
	Throttle ThrottleRules `json:"throttle" yaml:"throttle"`
}

// RetryRules say how a transient failure is retried: exponential backoff
// with jitter, bounded by attempts and by elapsed time. Permanent failures
// are never retried.
type RetryRules struct {
	// MaxAttempts counts every attempt, the first included: 1 means no retry.
	MaxAttempts int `json:"max_attempts" yaml:"max_attempts"`
	// InitialInterval is the wait before the first retry.
	InitialInterval Duration `json:"initial_interval" yaml:"initial_interval"`
	// MaxInterval caps the wait between two attempts (before jitter).
	MaxInterval Duration `json:"max_interval" yaml:"max_interval"`
	// Multiplier grows the wait after each retry; at least 1.
	Multiplier float64 `json:"multiplier" yaml:"multiplier"`
	// Jitter spreads each wait uniformly over [wait×(1−jitter),
	// wait×(1+jitter)], so that handlers failing together do not retry in
	// lockstep. From 0 (no jitter) to 1.
	Jitter float64 `json:"jitter" yaml:"jitter"`
	// MaxElapsed bounds the time from the first attempt to the last retry.
	// Time a message spends held by an open breaker does not count.
	MaxElapsed Duration `json:"max_elapsed" yaml:"max_elapsed"`
}

// BreakerRules say when a handler's circuit breaker opens. Three rules trip
// it; each is off when its threshold is 0:
//
//   - ConsecutiveFailures transient failures in a row (the go-resiliency
//     breaker), each within OpenTimeout of the previous one;
//   - an ErrorRatio of transient failures, or
//   - a SlowRatio of calls slower than SlowCall,
//
// the two ratios measured over the last Window once it holds at least
// MinRequests calls (Sentinel's degrade rules). An open breaker holds the
// handler's messages for OpenTimeout, then lets one probe through: a
// successful probe closes it, a failed (or slow) one opens it again.
type BreakerRules struct {
	ConsecutiveFailures int      `json:"consecutive_failures" yaml:"consecutive_failures"`
	ErrorRatio          float64  `json:"error_ratio" yaml:"error_ratio"`
	SlowRatio           float64  `json:"slow_ratio" yaml:"slow_ratio"`
	SlowCall            Duration `json:"slow_call" yaml:"slow_call"`
	MinRequests         int      `json:"min_requests" yaml:"min_requests"`
	Window              Duration `json:"window" yaml:"window"`
	OpenTimeout         Duration `json:"open_timeout" yaml:"open_timeout"`
}

// ThrottleRules limit how many messages a handler starts per second, with a
// token bucket (golang.org/x/time/rate). PerSecond 0 means no limit.
type ThrottleRules struct {
	PerSecond float64 `json:"per_second" yaml:"per_second"`
	// Burst is how many messages may start at once after a quiet spell.
	Burst int `json:"burst" yaml:"burst"`
}

// enabled reports whether any rule can trip the breaker.
func (b BreakerRules) enabled() bool {
	return b.ConsecutiveFailures > 0 || b.ErrorRatio > 0 || b.SlowRatio > 0
}

// DefaultRules are the rules of a handler nobody configured: five attempts
// over at most a minute, a breaker that opens after ten failures in a row or
// half the calls failing over ten seconds, thirty seconds per attempt, no
// throttle.
func DefaultRules() Rules {
	return Rules{Defaults: HandlerRules{
		Retry: RetryRules{
			MaxAttempts:     5,
			InitialInterval: Duration(100 * time.Millisecond),
			MaxInterval:     Duration(5 * time.Second),
			Multiplier:      2,
			Jitter:          0.5,
			MaxElapsed:      Duration(time.Minute),
		},
		Breaker: BreakerRules{
			ConsecutiveFailures: 10,
			ErrorRatio:          0.5,
			SlowRatio:           0,
			SlowCall:            Duration(time.Second),
			MinRequests:         20,
			Window:              Duration(10 * time.Second),
			OpenTimeout:         Duration(5 * time.Second),
		},
		Timeout:  Duration(30 * time.Second),
		Throttle: ThrottleRules{PerSecond: 0, Burst: 1},
	}}
}

// For returns the rules of the named handler: its own entry, else the defaults.
func (r Rules) For(handler string) HandlerRules {
	if h, ok := r.Handlers[handler]; ok {
		return h
	}
	return r.Defaults
}

// isZero reports whether r is the zero value (no rules given at all).
func (r Rules) isZero() bool {
	return r.Defaults == (HandlerRules{}) && len(r.Handlers) == 0
}

// Validate reports every problem with r at once, each naming the field as it
// is spelt in a rules file and saying what would be accepted.
func (r Rules) Validate() error {
	errs := r.Defaults.validate("defaults")
	for _, name := range slices.Sorted(maps.Keys(r.Handlers)) {
		if name == "" {
			errs = append(errs, errors.New(`handlers: a handler name is empty; use the name the handler was added to the router with`))
			continue
		}
		errs = append(errs, r.Handlers[name].validate("handlers."+name)...)
	}
	return errors.Join(errs...)
}

func (h HandlerRules) validate(path string) []error {
	var errs []error
	bad := func(field string, value any, want string) {
		errs = append(errs, fmt.Errorf("%s.%s %v: %s", path, field, value, want))
	}
	rt := h.Retry
	if rt.MaxAttempts < 1 {
		bad("retry.max_attempts", rt.MaxAttempts, "want at least 1 (1 means no retries)")
	}
	if rt.InitialInterval <= 0 {
		bad("retry.initial_interval", rt.InitialInterval, `want a positive duration such as "100ms"`)
	}
	if rt.MaxInterval < rt.InitialInterval {
		bad("retry.max_interval", rt.MaxInterval, fmt.Sprintf("want at least retry.initial_interval (%s)", rt.InitialInterval))
	}
	if rt.Multiplier < 1 {
		bad("retry.multiplier", rt.Multiplier, "want at least 1 (1 keeps the wait constant, 2 doubles it)")
	}
	if rt.Jitter < 0 || rt.Jitter > 1 {
		bad("retry.jitter", rt.Jitter, "want a fraction from 0 (no jitter) to 1")
	}
	if rt.MaxElapsed <= 0 {
		bad("retry.max_elapsed", rt.MaxElapsed, `want a positive duration such as "1m"`)
	}

	br := h.Breaker
	if br.ConsecutiveFailures < 0 {
		bad("breaker.consecutive_failures", br.ConsecutiveFailures, "want 0 (off) or more")
	}
	if br.ConsecutiveFailures > 0 && br.ConsecutiveFailures <= rt.MaxAttempts {
		bad("breaker.consecutive_failures", br.ConsecutiveFailures, fmt.Sprintf(
			"want 0 (off) or more than retry.max_attempts (%d): otherwise one message that keeps failing opens the breaker on its own and is held instead of poisoned",
			rt.MaxAttempts))
	}
	if br.ErrorRatio < 0 || br.ErrorRatio > 1 {
		bad("breaker.error_ratio", br.ErrorRatio, "want a fraction from 0 (off) to 1")
	}
	if br.SlowRatio < 0 || br.SlowRatio > 1 {
		bad("breaker.slow_ratio", br.SlowRatio, "want a fraction from 0 (off) to 1")
	}
	if br.SlowRatio > 0 && br.SlowCall <= 0 {
		bad("breaker.slow_call", br.SlowCall, `want a positive duration such as "500ms": a call slower than it counts as slow for slow_ratio`)
	}
	if br.SlowCall < 0 {
		bad("breaker.slow_call", br.SlowCall, "must not be negative")
	}
	if br.ErrorRatio > 0 || br.SlowRatio > 0 {
		if br.MinRequests < 1 {
			bad("breaker.min_requests", br.MinRequests, "want at least 1 when error_ratio or slow_ratio is set")
		}
		if br.Window <= 0 {
			bad("breaker.window", br.Window, `want a positive duration such as "10s" when error_ratio or slow_ratio is set`)
		}
	}
	if br.enabled() && br.OpenTimeout <= 0 {
		bad("breaker.open_timeout", br.OpenTimeout, `want a positive duration such as "5s": how long the breaker stays open before a probe`)
	}

	if h.Timeout < 0 {
		bad("timeout", h.Timeout, `want "0s" (no timeout) or a positive duration`)
	}
	if h.Throttle.PerSecond < 0 {
		bad("throttle.per_second", h.Throttle.PerSecond, "want 0 (no limit) or a positive rate")
	}
	if h.Throttle.PerSecond > 0 && h.Throttle.Burst < 1 {
		bad("throttle.burst", h.Throttle.Burst, "want at least 1 when per_second is set")
	}
	return errs
}

// UnmarshalJSON decodes rules as the Rules documentation describes: from
// DefaultRules, field by field, refusing unknown fields.
func (r *Rules) UnmarshalJSON(b []byte) error {
	var raw struct {
		Defaults json.RawMessage            `json:"defaults"`
		Handlers map[string]json.RawMessage `json:"handlers"`
	}
	if err := decodeJSONStrict(b, &raw); err != nil {
		return fmt.Errorf("decode rules: %w", err)
	}
	out := DefaultRules()
	var errs []error
	if len(raw.Defaults) > 0 {
		if err := decodeJSONStrict(raw.Defaults, &out.Defaults); err != nil {
			errs = append(errs, fmt.Errorf("defaults: %w", err))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(raw.Handlers)) {
		h := out.Defaults
		if err := decodeJSONStrict(raw.Handlers[name], &h); err != nil {
			errs = append(errs, fmt.Errorf("handlers.%s: %w", name, err))
			continue
		}
		if out.Handlers == nil {
			out.Handlers = make(map[string]HandlerRules)
		}
		out.Handlers[name] = h
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("decode rules: %w", err)
	}
	*r = out
	return nil
}

func decodeJSONStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// UnmarshalYAML decodes rules as the Rules documentation describes: from
// DefaultRules, field by field, refusing unknown fields (with their line).
func (r *Rules) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind != yaml.MappingNode {
		return fmt.Errorf("decode rules (line %d): want a mapping with defaults and handlers", node.Line)
	}
	out := DefaultRules()
	var errs []error
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, val := node.Content[i], node.Content[i+1]
		switch key.Value {
		case "defaults":
			errs = append(errs, decodeYAMLStrict(val, "defaults", &out.Defaults)...)
		case "handlers":
			if val.Kind != yaml.MappingNode {
				errs = append(errs, fmt.Errorf("handlers (line %d): want a mapping from handler name to rules", val.Line))
				continue
			}
			// Handlers are decoded after the defaults, wherever they appear.
		default:
			errs = append(errs, fmt.Errorf("%s (line %d): unknown field; known: defaults, handlers", key.Value, key.Line))
		}
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		if key, val := node.Content[i], node.Content[i+1]; key.Value == "handlers" && val.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(val.Content); j += 2 {
				name := val.Content[j].Value
				h := out.Defaults
				if e := decodeYAMLStrict(val.Content[j+1], "handlers."+name, &h); len(e) > 0 {
					errs = append(errs, e...)
					continue
				}
				if out.Handlers == nil {
					out.Handlers = make(map[string]HandlerRules)
				}
				out.Handlers[name] = h
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("decode rules: %w", err)
	}
	*r = out
	return nil
}

// decodeYAMLStrict decodes node onto v (keeping the fields node does not
// name) after checking that node names only fields v has.
func decodeYAMLStrict(node *yaml.Node, path string, v *HandlerRules) []error {
	if errs := checkYAMLFields(node, path, handlerYAMLFields()); len(errs) > 0 {
		return errs
	}
	if err := node.Decode(v); err != nil {
		return []error{fmt.Errorf("%s (line %d): %w", path, node.Line, err)}
	}
	return nil
}

// yamlFields describes the field names of a rules mapping, and those of
// its nested mappings.
type yamlFields map[string]yamlFields

// handlerYAMLFields lists the fields of HandlerRules as a rules file spells them.
func handlerYAMLFields() yamlFields {
	return yamlFields{
		"retry":    {"max_attempts": nil, "initial_interval": nil, "max_interval": nil, "multiplier": nil, "jitter": nil, "max_elapsed": nil},
		"breaker":  {"consecutive_failures": nil, "error_ratio": nil, "slow_ratio": nil, "slow_call": nil, "min_requests": nil, "window": nil, "open_timeout": nil},
		"timeout":  nil,
		"throttle": {"per_second": nil, "burst": nil},
	}
}

func checkYAMLFields(node *yaml.Node, path string, fields yamlFields) []error {
	if node.Kind != yaml.MappingNode {
		if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
			return nil
		}
		return []error{fmt.Errorf("%s (line %d): want a mapping of %s", path, node.Line, knownFields(fields))}
	}
	var errs []error
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, val := node.Content[i], node.Content[i+1]
		sub, ok := fields[key.Value]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s.%s (line %d): unknown field; known: %s", path, key.Value, key.Line, knownFields(fields)))
		case sub != nil:
			errs = append(errs, checkYAMLFields(val, path+"."+key.Value, sub)...)
		}
	}
	return errs
}

func knownFields(f yamlFields) string {
	return strings.Join(slices.Sorted(maps.Keys(f)), ", ")
}
