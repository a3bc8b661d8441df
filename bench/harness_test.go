package bench_test

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/bench"
)

// serveEnv, set in the environment of this test binary, makes it run
// bench.Serve with its arguments instead of the tests: the harness starts
// its servers by starting itself again.
const serveEnv = "MILLRACE_BENCH_SERVE"

func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := bench.Serve(ctx, os.Args[1:], os.Stdout)
		stop()
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestQuickMode runs the whole harness in its quick mode, so that it cannot
// rot: every comparison but Dapr runs, produces figures, and lands in the
// report without disturbing the rest of the page.
func TestQuickMode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts millrace dev")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	res, err := bench.Run(ctx, bench.Config{
		Quick:   true,
		Self:    []string{os.Args[0]},
		SelfEnv: []string{serveEnv + "=1"},
		WorkDir: t.TempDir(),
	})
	if err != nil {
		t.Fatalf("quick run: %v", err)
	}

	for _, target := range []string{bench.TargetCeiling, bench.TargetGateway, bench.TargetWatermill, bench.TargetMillrace} {
		s, ok := res.IntakeOf(target)
		switch {
		case !ok && target == bench.TargetGateway:
			t.Errorf("intake %s: did not run: %s", target, res.GatewayNote)
		case !ok:
			t.Errorf("intake %s: did not run", target)
		case s.RPS <= 0 || s.P99 <= 0:
			t.Errorf("intake %s: %.0f requests/s, p99 %s; first error %q", target, s.RPS, s.P99, s.FirstError)
		case s.Errors > 0:
			t.Errorf("intake %s: %d errors, the first: %s", target, s.Errors, s.FirstError)
		}
	}
	if _, ok := res.IntakeOf(bench.TargetDapr); ok {
		t.Errorf("the quick mode ran Dapr")
	}
	for _, p := range []string{bench.PipelineRaw, bench.PipelineMillrace} {
		if res.PipelineOf(p) <= 0 {
			t.Errorf("pipeline %s: no rate", p)
		}
	}
	if e := res.E2EOf(); e.P50 <= 0 || e.Failed > 0 {
		t.Errorf("end to end: p50 %s, %d failed, first: %s", e.P50, e.Failed, e.First)
	}
	if len(res.ColdStart) != 1 || res.ColdStart[0] <= 0 || len(res.IdleRSS) != 1 || res.IdleRSS[0] <= 0 {
		t.Errorf("footprint: cold starts %v, idle RSS %v", res.ColdStart, res.IdleRSS)
	}
	taken := 0
	for _, tg := range res.Targets() {
		if tg.Taken {
			taken++
		}
	}
	if want := 7; taken != want { // all but Dapr
		t.Errorf("%d targets evaluated, want %d: %+v", taken, want, res.Targets())
	}

	// The report replaces its own part of the page and keeps the rest.
	page := filepath.Join(t.TempDir(), "benchmarks.md")
	const kept = "## Replay\n\nwritten by hand\n"
	if err := os.WriteFile(page, []byte("# Benchmarks\n\nintro\n\n"+kept), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second update replaces the first
		if err := res.UpdateFile(page); err != nil {
			t.Fatalf("update page: %v", err)
		}
	}
	data, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{"intro", kept, "#### Targets", bench.TargetGateway, bench.TargetMillrace, bench.PipelineRaw, "cold start", "left out in the quick mode"} {
		if !strings.Contains(text, want) {
			t.Errorf("page lacks %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "#### Targets"); n != 1 {
		t.Errorf("page has %d target tables after two updates, want 1", n)
	}
}
