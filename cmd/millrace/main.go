// Command millrace is the one binary of the millrace platform. Its
// subcommands run the platform (`millrace dev`) and look at what flows
// through it (`millrace topics`, `millrace tail`).
//
// This package is the only place that knows every other package: it reads
// flags and environment, builds the parts in order and tears them down in
// reverse order.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "millrace:", err)
		os.Exit(1)
	}
}

// run executes one millrace command line. It returns when the command is
// done or ctx is cancelled and everything it started has stopped.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	root := newRootCommand(getenv, stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
