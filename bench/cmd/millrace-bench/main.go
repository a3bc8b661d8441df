// Command millrace-bench measures millrace against the ceiling of this
// machine and against what users would otherwise write, in one run, and
// writes the results to docs/benchmarks.md (see package bench).
//
//	millrace-bench                 full mode (several minutes; builds daprd once)
//	millrace-bench -quick -out -   quick mode, table on stdout
//	millrace-bench serve KIND      run one of the servers the harness measures
//	millrace-bench load -url URL   the intake load against one server, to profile it by hand
//
// Run it from the repository (make bench does).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/millrace/millrace/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "millrace-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "serve" {
		return bench.Serve(ctx, args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "load" {
		return runLoad(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("millrace-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg bench.Config
	out := fs.String("out", "docs/benchmarks.md", "Markdown file to write the results into (between its bench markers); - for stdout")
	fs.BoolVar(&cfg.Quick, "quick", false, "quick mode: seconds, no Dapr, figures not for comparison")
	fs.IntVar(&cfg.Runs, "runs", 0, "runs of each comparison (default 5, quick 1)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "measured time of each intake run (default 10s, quick 1s)")
	fs.IntVar(&cfg.Connections, "connections", 0, "intake connections (default 64)")
	fs.StringVar(&cfg.Dapr, "dapr", "", "daprd binary (default: built by scripts/dapr.sh in the full mode)")
	noDapr := fs.Bool("no-dapr", false, "leave Dapr out of the full mode")
	fs.StringVar(&cfg.Millrace, "millrace", "", "millrace binary (default: built from this repository)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this program to start its servers: %w", err)
	}
	cfg.Self = []string{self, "serve"}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))

	switch {
	case *noDapr:
		cfg.DaprError = "left out (-no-dapr)"
	case !cfg.Quick && cfg.Dapr == "":
		cfg.Dapr, cfg.DaprError = buildDapr(ctx, stderr)
	}

	res, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *out == "-" {
		return res.WriteMarkdown(stdout)
	}
	if err := res.UpdateFile(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "results written to %s\n", *out)
	return nil
}

// runLoad sends the intake load (valid orders of one made-up user) to one
// URL and prints what it measured: for profiling a server started by hand,
// e.g. `millrace gateway --pprof`, while the load runs.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("millrace-bench load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	l := bench.Load{Body: bench.OrderBody(uuid.NewString())}
	fs.StringVar(&l.URL, "url", "", "URL to POST the orders to, e.g. http://127.0.0.1:8080/v1/orders; required")
	fs.IntVar(&l.Connections, "connections", 64, "connections, each sending its next request once the last was answered")
	fs.DurationVar(&l.Warmup, "warmup", 2*time.Second, "time before measuring")
	fs.DurationVar(&l.Duration, "duration", 10*time.Second, "measured time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := l.Run(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%.0f requests/s, p50 %s, p99 %s, p99.9 %s, max %s, %d errors",
		res.RPS(), res.Latency.P50, res.Latency.P99, res.Latency.P999, res.Latency.Max, res.Errors)
	if res.FirstError != "" {
		fmt.Fprintf(stdout, " (first: %s)", res.FirstError)
	}
	fmt.Fprintln(stdout)
	return nil
}

// buildDapr returns daprd's path from scripts/dapr.sh (which builds it the
// first time), or why it could not be had, for the report.
func buildDapr(ctx context.Context, stderr io.Writer) (path, problem string) {
	script, err := filepath.Abs(filepath.Join("scripts", "dapr.sh"))
	if err != nil {
		return "", err.Error()
	}
	cmd := exec.CommandContext(ctx, script)
	cmd.Stderr = stderr
	b, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return "", fmt.Sprintf("daprd could not be built (scripts/dapr.sh exited %d; its output is above)", exit.ExitCode())
		}
		return "", fmt.Sprintf("daprd could not be built: %v", err)
	}
	return strings.TrimSpace(string(b)), ""
}
