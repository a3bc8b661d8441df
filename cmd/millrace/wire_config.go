package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/sync/errgroup"

	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/platform/auth"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/config"
	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/scheduler"
)

// rulesFile is the rules document of a running millrace process: every
// rule it changes while it runs. It is read from layers (docs/configuration.md):
// the defaults, the file --config names, the MILLRACE_RULES__* variables,
// and the Consul key millrace/<env>/<role>/rules when CONSUL_HTTP_ADDR is
// set; each overrides the ones before it. See deploy/millrace.example.yaml.
type rulesFile struct {
	// Router governs every handler and projection: retries, breakers,
	// timeouts and throttles (router.Rules).
	Router router.Rules `yaml:"router" json:"router"`
	// Gateway governs HTTP requests: rate limits, requests in flight,
	// timeouts and the read-edge breakers (gateway.Rules).
	Gateway gateway.Rules `yaml:"gateway" json:"gateway"`
	// LogLevel, when set, overrides --log-level: debug, info, warn or error.
	LogLevel string `yaml:"log_level" json:"log_level"`
	// Features turns the feature flags of featureFlags on and off.
	Features map[string]bool `yaml:"features" json:"features"`
	// Jobs are the scheduled jobs, by name (scheduler.Job; see
	// docs/scheduling.md and wire_scheduler.go).
	Jobs map[string]scheduler.Job `yaml:"jobs,omitempty" json:"jobs,omitempty"`
}

// envRulesPrefix is the prefix of the environment layer's variables:
// MILLRACE_RULES__GATEWAY__MAX_IN_FLIGHT=64.
const envRulesPrefix = "MILLRACE_RULES"

// The feature flags millrace declares: switches that change with the
// rules while the process runs.
const featurePreferWait = "gateway_prefer_wait"

// featureFlags declares every feature flag, with its default.
func featureFlags() []config.Flag {
	return []config.Flag{{
		Name:        featurePreferWait,
		Description: "the gateway honours `Prefer: wait=N` on commands (waits for the outcome); off, every command is answered 202 at once",
		Default:     true,
	}}
}

// defaultRulesFile is what the layers start from: what they leave out
// keeps these values.
func defaultRulesFile() rulesFile {
	features := map[string]bool{}
	for _, f := range featureFlags() {
		features[f.Name] = f.Default
	}
	return rulesFile{Router: router.DefaultRules(), Features: features}
}

// Validate reports every problem of the file at once, each placed at its
// key so that the loader can name its line.
func (f rulesFile) Validate() error {
	errs := []error{
		config.Within("router", f.Router.Validate()),
		config.Within("gateway", f.Gateway.Validate()),
	}
	if f.LogLevel != "" {
		if _, err := parseLevel(f.LogLevel); err != nil {
			errs = append(errs, config.Within("log_level", err))
		}
	}
	flags, err := config.NewFlags(featureFlags()...)
	if err != nil {
		return err
	}
	errs = append(errs, config.Within("features", flags.Check(f.Features)))
	if len(f.Jobs) > 0 {
		errs = append(errs, config.Within("jobs", validateJobs(f.Jobs)))
	}
	return errors.Join(errs...)
}

// liveRules are the rules of a running process, the log level and feature
// flags they set, and the history of their changes.
type liveRules struct {
	path      string // --config, or empty
	env       *config.Env
	kv        *config.ConsulKV // nil without Consul
	live      *config.Live[rulesFile]
	level     *slog.LevelVar
	baseLevel slog.Level // --log-level, in force when the rules name none
	flags     *config.Flags
	history   *config.History
	logger    *slog.Logger
}

// setupLogging builds the process logger, whose level can change while it
// runs, and loads the rules from their layers. Rules that cannot be read
// or are refused are an error that lists every problem with its place
// (file and line, variable, Consul key and line): the process does not
// start.
func setupLogging(ctx context.Context, cfg devConfig, getenv func(string) string, stderr io.Writer) (*slog.Logger, *liveRules, error) {
	base, err := parseLevel(cfg.LogLevel)
	if err != nil {
		return nil, nil, fmt.Errorf("configuration: %w", err)
	}
	// The handler lets every level through; the live level filters.
	inner, err := newLogger(stderr, slog.LevelDebug.String(), cfg.LogFormat)
	if err != nil {
		return nil, nil, fmt.Errorf("configuration: %w", err)
	}
	level := new(slog.LevelVar)
	level.Set(base)
	logger := slog.New(liveLevelHandler{Handler: inner.Handler(), level: level})

	flags, err := config.NewFlags(featureFlags()...)
	if err != nil {
		return nil, nil, err
	}
	lr := &liveRules{path: cfg.ConfigFile, level: level, baseLevel: base, flags: flags, history: config.NewHistory(),
		logger: logger.With("component", "config")}
	stack, err := lr.layers(cfg, getenv)
	if err != nil {
		return nil, nil, fmt.Errorf("configuration: %w", err)
	}
	live, err := config.New(stack, config.Options[rulesFile]{
		Defaults: defaultRulesFile,
		Validate: rulesFile.Validate,
		Logger:   lr.logger,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("configuration: %w", err)
	}
	first, err := live.Load(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("load rules from %s (nothing was started):\n%w", stack.Name(), err)
	}
	lr.live = live
	lr.setLevel(first)
	return logger, lr, nil
}

// layers builds the layers of the rules: the file (--config), the
// environment, and the Consul key when CONSUL_HTTP_ADDR is set.
func (lr *liveRules) layers(cfg devConfig, getenv func(string) string) (*config.Stack, error) {
	var layers []config.Layer
	if cfg.ConfigFile != "" {
		layers = append(layers, config.Layer{Source: config.NewFile(cfg.ConfigFile)})
	}
	// The whole environment lets a misspelt MILLRACE_RULES__ variable be
	// refused instead of ignored.
	lr.env = config.NewEnv(envRulesPrefix, getenv, defaultRulesFile(), config.EnvOptions{Environ: os.Environ()})
	layers = append(layers, config.Layer{Source: lr.env})
	if getenv(consul.EnvHTTPAddr) != "" {
		ccfg, err := consul.ConfigFromEnv(getenv)
		if err != nil {
			return nil, err
		}
		client, err := consul.NewClient(ccfg)
		if err != nil {
			return nil, err
		}
		key, err := config.KVKey(cfg.Env, cfg.Role)
		if err != nil {
			return nil, err
		}
		if lr.kv, err = config.NewConsulKV(client, key, config.KVOptions{Logger: lr.logger}); err != nil {
			return nil, err
		}
		// A key that does not exist is an empty layer: nothing overridden.
		layers = append(layers, config.Layer{Source: lr.kv, Optional: true})
	}
	return config.NewStack(layers...)
}

// current returns the rules in force.
func (lr *liveRules) current() rulesFile { return lr.live.Current() }

// describe says where the rules come from, for the ready banner.
func (lr *liveRules) describe() string {
	var parts []string
	if lr.path != "" {
		parts = append(parts, lr.path+" (watched)")
	}
	if set := lr.env.Set(); len(set) > 0 {
		parts = append(parts, strings.Join(set, ", "))
	}
	if lr.kv != nil {
		parts = append(parts, lr.kv.Name()+" (watched)")
	}
	if len(parts) == 0 {
		return "defaults (no --config file)"
	}
	writes := "read only: give --config or Consul to use millrace config set"
	if w, ok := lr.live.Writable(); ok {
		writes = "config set writes " + w.Name()
	}
	return "defaults + " + strings.Join(parts, " + ") + "; " + writes
}

// ruleHolders are the parts that hold live rules.
type ruleHolders struct {
	// gateway is nil in a process that serves no gateway (the worker and
	// projector roles, roles.go).
	gateway *gateway.Gateway
	// router is nil in a process that runs no router.
	router *router.Stack
	// scheduler is nil in a process that runs no scheduler.
	scheduler *scheduler.Scheduler
}

// holdersOf returns the parts of p that hold live rules.
func holdersOf(p *app) ruleHolders {
	return ruleHolders{gateway: p.gateway, router: p.stack}
}

// apply puts f in force on every holder. f is valid as a whole (Validate),
// so that no holder refuses its part after another took its own.
func (lr *liveRules) apply(f rulesFile, h ruleHolders) error {
	var errs []error
	if h.gateway != nil {
		if err := h.gateway.SetRules(f.Gateway); err != nil {
			errs = append(errs, config.Within("gateway", err))
		}
	}
	if h.router != nil {
		if err := h.router.SetRules(f.Router); err != nil {
			errs = append(errs, config.Within("router", err))
		}
	}
	if err := lr.flags.Set(f.Features); err != nil {
		errs = append(errs, config.Within("features", err))
	}
	if h.scheduler != nil {
		if err := h.scheduler.SetJobs(f.Jobs); err != nil {
			errs = append(errs, config.Within("jobs", err))
		}
	}
	lr.setLevel(f)
	return errors.Join(errs...)
}

// setLevel sets the log level the rules name, or --log-level when they
// name none.
func (lr *liveRules) setLevel(f rulesFile) {
	level := lr.baseLevel
	if f.LogLevel != "" {
		level, _ = parseLevel(f.LogLevel) // checked by Validate
	}
	lr.level.Set(level)
}

// start applies the rules in force to the holders, once they are built.
func (lr *liveRules) start(h ruleHolders) error {
	if lr.path != "" || lr.kv != nil {
		for _, unused := range []struct {
			section string
			absent  bool
		}{{"router", h.router == nil}, {"gateway", h.gateway == nil}} {
			if unused.absent {
				lr.logger.Warn("the "+unused.section+" section of the rules is checked but not applied: this process holds no "+unused.section+" rules",
					slog.String("source", lr.live.Status().Source))
			}
		}
	}
	if err := lr.apply(lr.current(), h); err != nil {
		return fmt.Errorf("apply rules from %s: %w", lr.describe(), err)
	}
	return nil
}

// watch applies each change of the rules until ctx ends. Losing the watch
// does not stop the process: the rules in force stay, and the loss is
// logged.
func (lr *liveRules) watch(ctx context.Context, h ruleHolders) error {
	if err := lr.live.Run(ctx, func(f rulesFile) error { return lr.apply(f, h) }); err != nil {
		lr.logger.ErrorContext(ctx, "the rules are no longer watched; the rules in force stay until restart",
			slog.String("source", lr.live.Status().Source), slog.Any("error", err))
	}
	return nil
}

// runHistory keeps the history of the rules until ctx ends: it reads the
// history topic from its beginning into lr.history (the projection behind
// GET /admin/config/history and rollbacks) and records every change of the
// writable documents on it through pub. A history that cannot be read is
// logged, and the process runs on without it.
//
// A process without a publisher (pub nil) reads the history but records
// nothing: the other processes of its role record the changes.
func (lr *liveRules) runHistory(ctx context.Context, kcfg kafka.Config, pub message.Publisher, instance string) error {
	var rec *config.Recorder
	if pub != nil {
		var err error
		rec, err = config.NewRecorder(lr.live, config.RecorderConfig{
			Publisher: pub, History: lr.history, Instance: instance, Logger: lr.logger,
		})
		if err != nil {
			return err
		}
	}
	adm, err := kafka.NewAdmin(kcfg)
	if err != nil {
		lr.logger.ErrorContext(ctx, "configuration history unavailable", slog.Any("error", err))
		return nil
	}
	ends, err := adm.EndOffsets(ctx, config.HistoryTopic)
	_ = adm.Close() // only read from
	if err != nil {
		lr.logger.ErrorContext(ctx, "configuration history unavailable: cannot find the end of its topic", slog.Any("error", err))
		return nil
	}
	// The history has caught up once every partition was read to where it
	// ended when the process started.
	pending := map[int32]int64{}
	for p, end := range ends[config.HistoryTopic] {
		if end > 0 {
			pending[p] = end - 1
		}
	}
	if len(pending) == 0 {
		lr.history.MarkCaughtUp()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := kafka.Tail(gctx, kcfg, config.HistoryTopic, kafka.TailOptions{FromBeginning: true}, func(r kafka.Record) error {
			lr.addRecord(r)
			if last, ok := pending[r.Partition]; ok && r.Offset >= last {
				delete(pending, r.Partition)
				if len(pending) == 0 {
					lr.history.MarkCaughtUp()
				}
			}
			return nil
		})
		if err != nil {
			lr.logger.ErrorContext(gctx, "configuration history: stopped reading its topic; changes are still recorded", slog.Any("error", err))
		}
		return nil
	})
	if rec != nil {
		g.Go(func() error { return rec.Run(gctx) })
	}
	return g.Wait()
}

// addRecord adds a record of the history topic to the history.
func (lr *liveRules) addRecord(r kafka.Record) {
	msg := message.NewMessage(r.Headers[cloudevents.ID], r.Value)
	for k, v := range r.Headers {
		msg.Metadata.Set(k, v)
	}
	c, err := config.ChangeFromMessage(msg)
	if err != nil {
		lr.logger.Warn("configuration history: record skipped", slog.Int("partition", int(r.Partition)),
			slog.Int64("offset", r.Offset), slog.Any("error", err))
		return
	}
	lr.history.Add(c)
}

// adminHandler serves the rules under /admin/config (the security guard
// in front requires the admin scope). The author of a change is the
// authenticated caller, with the name the client gave (--as) beside it.
func (lr *liveRules) adminHandler() http.Handler {
	return config.AdminHandler(lr.live, lr.history, config.AdminOptions{
		Logger: lr.logger,
		Who: func(r *http.Request, claimed string) string {
			p, ok := auth.FromContext(r.Context())
			switch {
			case !ok || p.Method == auth.MethodNone:
				if claimed == "" {
					return auth.AnonymousSubject
				}
				return claimed
			case claimed == "" || claimed == p.Subject:
				return p.Subject
			default:
				return p.Subject + " (as " + claimed + ")"
			}
		},
	})
}

// wrap serves the rules' admin API under /admin/config beside next, and
// puts the feature flags that act on HTTP requests in front of next.
func (lr *liveRules) wrap(next http.Handler) http.Handler {
	admin := lr.adminHandler()
	mux := http.NewServeMux()
	mux.Handle("/admin/config", admin)
	mux.Handle("/admin/config/", admin)
	mux.Handle("/", withPreferWaitFlag(lr.flags, next))
	return mux
}

// flagReader is what a switched part needs of the feature flags.
type flagReader interface{ Enabled(name string) bool }

// withPreferWaitFlag removes the wait preference from the Prefer header of
// requests while the gateway_prefer_wait flag is off: commands are then
// answered 202 at once, whatever the client prefers.
func withPreferWaitFlag(flags flagReader, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !flags.Enabled(featurePreferWait) && len(r.Header.Values("Prefer")) > 0 {
			var keep []string
			for _, v := range r.Header.Values("Prefer") {
				for _, pref := range strings.Split(v, ",") {
					name, _, _ := strings.Cut(strings.TrimSpace(pref), "=")
					if pref = strings.TrimSpace(pref); pref != "" && !strings.EqualFold(strings.TrimSpace(name), "wait") {
						keep = append(keep, pref)
					}
				}
			}
			r = r.Clone(r.Context())
			r.Header.Del("Prefer")
			if len(keep) > 0 {
				r.Header.Set("Prefer", strings.Join(keep, ", "))
			}
		}
		next.ServeHTTP(w, r)
	})
}

// instanceName names this process in history records: host and port.
func instanceName(addr string) string {
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	return host + "/" + addr + "/pid-" + strconv.Itoa(os.Getpid())
}

// parseLevel reads a log level name.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// liveLevelHandler passes on the records at or above a level that may
// change while the process runs.
type liveLevelHandler struct {
	slog.Handler
	level slog.Leveler
}

func (h liveLevelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level.Level() && h.Handler.Enabled(ctx, l)
}

func (h liveLevelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return liveLevelHandler{Handler: h.Handler.WithAttrs(attrs), level: h.level}
}

func (h liveLevelHandler) WithGroup(name string) slog.Handler {
	return liveLevelHandler{Handler: h.Handler.WithGroup(name), level: h.level}
}
