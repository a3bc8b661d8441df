package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

func newRootCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "millrace",
		Short:         "An event-driven microservice platform on Kafka, Watermill and Consul",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newDevCommand(getenv, stdout, stderr),
		newTopicsCommand(getenv, stdout),
		newTailCommand(getenv, stdout),
		newPoisonCommand(getenv, stdout),
		newReplayCommand(getenv, stdout),
		newResetCommand(getenv, stdout),
		newProjectionsCommand(getenv, stdout),
		newKeysCommand(getenv, stdout, stderr),
		newConfigCommand(getenv, stdout),
		newJobsCommand(getenv, stdout),
	)
	// The roles of the many-machines deployment and the broker process of
	// the local topology (roles.go, broker.go).
	root.AddCommand(roleCommands(getenv, stdout, stderr)...)
	return root
}

// newLogger builds the process logger: text or JSON on w at the given level.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

// envOr returns the environment value of key, or def when it is unset.
func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
