package router

import (
	"fmt"
	"time"
)

// Duration is a time.Duration written as a Go duration string ("250ms",
// "5s", "1m30s") in JSON and YAML rules, so that a rules file says what it
// means instead of counting nanoseconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String returns d as a Go duration string.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as a Go duration string, e.g. "250ms".
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a Go duration string such as "250ms" or "1m30s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, like \"250ms\", \"5s\" or \"1m30s\"", b)
	}
	*d = Duration(v)
	return nil
}
