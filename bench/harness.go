package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Config says what a Run measures and how long. Zero fields take the
// defaults of the mode (Quick or full).
type Config struct {
	// Quick runs every comparison except Dapr in seconds, for the test
	// suite; the full mode takes several minutes (plus building daprd once).
	Quick bool
	// Runs is how many times each comparison runs, alternating; the report
	// shows medians. Full 5, quick 1.
	Runs int
	// Duration and Warmup of each intake load run. Full 10 s and 2 s,
	// quick 1 s and 200 ms.
	Duration, Warmup time.Duration
	// Connections of the intake load; 64.
	Connections int
	// PipelineEvents is how many events each pipeline run consumes. Full
	// 200,000, quick 3,000.
	PipelineEvents int
	// E2ERate (commands/s) and E2EDuration of the end-to-end run. Full
	// 1,000/s for 10 s, quick 100/s for 1 s.
	E2ERate     int
	E2EDuration time.Duration
	// ColdStarts is how many times `millrace dev` is started on an empty
	// data directory for the footprint. Full 5, quick 1.
	ColdStarts int

	// Self is the command that runs Serve with the arguments that follow
	// it, e.g. {"/path/millrace-bench", "serve"}; SelfEnv is added to its
	// environment. Required.
	Self    []string
	SelfEnv []string
	// ModuleRoot is the millrace module's directory; found with `go env
	// GOMOD` when empty.
	ModuleRoot string
	// Millrace is the millrace binary; built from ModuleRoot when empty.
	Millrace string
	// Dapr is the daprd binary. Empty: the quick mode leaves Dapr out, the
	// full mode builds it with scripts/dapr.sh (cached after the first
	// time). DaprError, when set, is reported instead of running Dapr.
	Dapr      string
	DaprError string
	// WorkDir holds data directories and server logs; a new temporary
	// directory (removed afterwards) when empty.
	WorkDir string
	// Logger reports progress; nothing when nil.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, full, quick time.Duration) {
		if *d == 0 {
			*d = full
			if c.Quick {
				*d = quick
			}
		}
	}
	defInt := func(n *int, full, quick int) {
		if *n == 0 {
			*n = full
			if c.Quick {
				*n = quick
			}
		}
	}
	defInt(&c.Runs, 5, 1)
	def(&c.Duration, 10*time.Second, time.Second)
	def(&c.Warmup, 2*time.Second, 200*time.Millisecond)
	defInt(&c.Connections, 64, 64)
	defInt(&c.PipelineEvents, 200_000, 3_000)
	defInt(&c.E2ERate, 1000, 100)
	def(&c.E2EDuration, 10*time.Second, time.Second)
	defInt(&c.ColdStarts, 5, 1)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// idleLimit bounds how long a server may take to become idle between runs.
func (c Config) idleLimit() time.Duration {
	if c.Quick {
		return 20 * time.Second
	}
	return 3 * time.Minute
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Self) == 0 {
		errs = append(errs, errors.New("self: required, the command that runs bench.Serve"))
	}
	if c.Runs < 1 || c.Connections < 1 || c.PipelineEvents < 1 || c.E2ERate < 1 || c.ColdStarts < 1 {
		errs = append(errs, errors.New("runs, connections, pipeline events, end-to-end rate and cold starts must be positive"))
	}
	if c.Duration <= 0 || c.Warmup < 0 || c.E2EDuration <= 0 {
		errs = append(errs, errors.New("durations must be positive (warmup may be zero)"))
	}
	return errors.Join(errs...)
}

// Run measures everything Config names and returns the results; write them
// with Results.WriteMarkdown. A comparison that cannot run (Dapr not built)
// is reported as such in the results, not as an error; an error means the
// harness itself could not measure.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("benchmark config: %w", err)
	}
	if cfg.WorkDir == "" {
		dir, err := os.MkdirTemp("", "millrace-bench-")
		if err != nil {
			return nil, fmt.Errorf("create work directory: %w", err)
		}
		defer os.RemoveAll(dir)
		cfg.WorkDir = dir
	}
	if cfg.ModuleRoot == "" {
		root, err := moduleRoot(ctx)
		if err != nil {
			return nil, err
		}
		cfg.ModuleRoot = root
	}
	res := newResults(cfg)
	if cfg.Millrace == "" {
		cfg.Logger.Info("building millrace")
		bin := filepath.Join(cfg.WorkDir, "millrace")
		if err := goBuild(ctx, cfg.ModuleRoot, bin, "./cmd/millrace"); err != nil {
			return nil, err
		}
		cfg.Millrace = bin
	}
	res.Versions = versions(ctx, cfg)

	cfg.Logger.Info("footprint: cold starts", "n", cfg.ColdStarts)
	if err := measureColdStarts(ctx, cfg, res); err != nil {
		return nil, fmt.Errorf("footprint: %w", err)
	}
	cfg.Logger.Info("command intake and end to end")
	if err := measureIntake(ctx, cfg, res); err != nil {
		return nil, fmt.Errorf("command intake: %w", err)
	}
	cfg.Logger.Info("event pipeline", "events", cfg.PipelineEvents)
	if err := measurePipeline(ctx, cfg, res); err != nil {
		return nil, fmt.Errorf("event pipeline: %w", err)
	}
	res.Finished = time.Now()
	return res, nil
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the millrace module: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("find the millrace module: not inside a Go module, run from the repository or set ModuleRoot")
	}
	return filepath.Dir(gomod), nil
}

// goBuild builds pkg of the module at root into out.
func goBuild(ctx context.Context, root, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, b)
	}
	return nil
}

// startSelf starts a server of the harness's own (see Serve) and returns it with
// the address it listens on.
func startSelf(ctx context.Context, cfg Config, name string, args ...string) (*proc, string, error) {
	argv := append(slices.Clone(cfg.Self[1:]), args...)
	p, err := startProc(name, cfg.WorkDir, cfg.Self[0], argv, cfg.SelfEnv)
	if err != nil {
		return nil, "", err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	line, _, err := p.waitLine(wctx, listeningMarker)
	if err != nil {
		_ = p.stop(5 * time.Second)
		return nil, "", err
	}
	return p, strings.TrimPrefix(line, listeningMarker), nil
}
