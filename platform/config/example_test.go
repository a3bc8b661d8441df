package config_test

import (
	"fmt"

	"github.com/millrace/millrace/platform/config"
)

// A part that a feature flag switches asks the flags at the moment it
// decides; the configuration's apply function sets them.
func ExampleFlags() {
	flags, err := config.NewFlags(config.Flag{
		Name:        "gateway_prefer_wait",
		Description: "the gateway honours Prefer: wait",
		Default:     true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(flags.Enabled("gateway_prefer_wait"))

	// The features section of a new configuration:
	if err := flags.Set(map[string]bool{"gateway_prefer_wait": false}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(flags.Enabled("gateway_prefer_wait"))

	// A misspelt flag is refused, and the flags stay as they are.
	fmt.Println(flags.Set(map[string]bool{"gateway_prefer_wiat": true}))
	// Output:
	// true
	// false
	// gateway_prefer_wiat: unknown feature flag; known: gateway_prefer_wait
}

// Diff says what a change changed, setting by setting, as the history
// shows it.
func ExampleDiff() {
	old := "gateway:\n  max_in_flight: 1024\nlog_level: debug\n"
	new := "gateway:\n  max_in_flight: 64\n  timeouts: {default: 10s}\n"
	for _, line := range config.Diff(old, new) {
		fmt.Println(line)
	}
	// Output:
	// gateway.max_in_flight: 1024 -> 64
	// + gateway.timeouts.default: 10s
	// - log_level: debug
}
