package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/millrace/millrace/platform/kafka"
)

// Intake targets, in the order the report lists them. TargetGateway is the
// one issue 6's intake targets are measured on: like the baselines, a
// process that only publishes, to a broker nothing consumes from.
// TargetMillrace is informational: the all-in-one dev process, whose
// consumers handle what it accepts on the same cores.
const (
	TargetCeiling   = "net/http 202 (ceiling)"
	TargetGateway   = "millrace gateway → millrace broker"
	TargetWatermill = "gorilla/mux + watermill-kafka Publisher"
	TargetDapr      = "Dapr publish API (pubsub.kafka)"
	TargetMillrace  = "millrace dev, all-in-one (informational)"
)

// intakeTarget is one server the intake load runs against.
type intakeTarget struct {
	name string
	load Load
	proc *proc
}

// measureIntake starts the servers it compares: `millrace gateway`, the
// hand-written baseline and Dapr, all publishing to one `millrace broker`
// that nothing consumes from; the HTTP ceiling; and `millrace dev` with its
// embedded broker and every consumer. It runs the intake load against each
// in turn, cfg.Runs times, rotating the order. Then it runs the end-to-end
// measurement on the same millrace dev.
func measureIntake(ctx context.Context, cfg Config, res *Results) (err error) {
	var stops []func() error
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			err = errors.Join(err, stops[i]())
		}
	}()

	m, err := startMillrace(cfg, "millrace")
	if err != nil {
		return err
	}
	stops = append(stops, func() error { return m.stop(30 * time.Second) })
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	_, _, err = m.waitLine(rctx, "millrace dev is ready")
	cancel()
	if err != nil {
		return err
	}
	userID, err := m.registerUser(ctx)
	if err != nil {
		return err
	}
	body := OrderBody(userID)

	// The production intake shape and the baselines publish to one broker
	// of their own, which nothing consumes from; the baselines to topics
	// of their own.
	broker, err := startBroker(ctx, cfg, "broker")
	if err != nil {
		return err
	}
	stops = append(stops, func() error { return broker.stop(30 * time.Second) })
	kcfg := kafka.Config{Brokers: []string{broker.addr}, ClientID: "millrace-bench"}
	if err := kafka.EnsureTopics(ctx, kcfg,
		kafka.Topic{Name: "bench.orders", Partitions: 3},
		kafka.Topic{Name: "bench.dapr", Partitions: 3},
	); err != nil {
		return fmt.Errorf("create the baselines' topics: %w", err)
	}

	base := Load{Body: body, Connections: cfg.Connections, Warmup: cfg.Warmup, Duration: cfg.Duration}
	with := func(url string) Load { l := base; l.URL = url; return l }
	targets := []*intakeTarget{{name: TargetMillrace, load: with(m.base + "/v1/orders"), proc: m.proc}}
	// Processes the targets share: idle before every run, as the targets.
	shared := []*proc{broker.proc}

	if agent, err := startConsul(cfg); err != nil {
		res.GatewayNote = "not measured: " + err.Error()
	} else {
		stops = append(stops, agent.Stop)
		gw, base, err := startGateway(ctx, cfg, "gateway", broker.addr, agent.Addr())
		if err != nil {
			return err
		}
		stops = append(stops, func() error { return gw.stop(30 * time.Second) })
		targets = append(targets, &intakeTarget{name: TargetGateway, load: with(base + "/v1/orders"), proc: gw})
	}

	bare, addr, err := startSelf(ctx, cfg, "bare", "bare")
	if err != nil {
		return err
	}
	stops = append(stops, func() error { return bare.stop(10 * time.Second) })
	targets = append(targets, &intakeTarget{name: TargetCeiling, load: with("http://" + addr + "/v1/orders"), proc: bare})

	wm, addr, err := startSelf(ctx, cfg, "watermill", "watermill", "-brokers", broker.addr, "-topic", "bench.orders")
	if err != nil {
		return err
	}
	stops = append(stops, func() error { return wm.stop(10 * time.Second) })
	targets = append(targets, &intakeTarget{name: TargetWatermill, load: with("http://" + addr + "/v1/orders"), proc: wm})

	switch {
	case cfg.DaprError != "":
		res.DaprNote = cfg.DaprError
	case cfg.Dapr == "":
		res.DaprNote = "left out in the quick mode"
	default:
		d, url, err := startDapr(ctx, cfg, broker.addr, "bench.dapr")
		if err != nil {
			res.DaprNote = err.Error()
			break
		}
		stops = append(stops, func() error { return d.stop(15 * time.Second) })
		targets = append(targets, &intakeTarget{name: TargetDapr, load: with(url), proc: d})
	}

	for run := range cfg.Runs {
		for i := range targets {
			t := targets[(i+run)%len(targets)]
			// What the previous run left (commands millrace still
			// handles) must not slow this one down.
			for _, o := range targets {
				if _, err := o.proc.waitIdle(ctx, cfg.idleLimit()); err != nil {
					return err
				}
			}
			for _, p := range shared {
				if _, err := p.waitIdle(ctx, cfg.idleLimit()); err != nil {
					return err
				}
			}
			cfg.Logger.Info("intake", "run", run+1, "target", t.name)
			sampler := sampleRSS(t.proc, 100*time.Millisecond)
			cpu := measureCPU(t.proc, t.load.Warmup)
			r, err := t.load.Run(ctx)
			peak := sampler.stop()
			used := cpu.stop()
			if err != nil {
				return fmt.Errorf("load %s: %w", t.name, err)
			}
			res.addIntake(t.name, r, peak, used)
		}
	}

	cfg.Logger.Info("end to end", "rate", cfg.E2ERate, "duration", cfg.E2EDuration)
	for run := range cfg.Runs {
		if _, err := m.waitIdle(ctx, cfg.idleLimit()); err != nil {
			return err
		}
		cfg.Logger.Info("end to end", "run", run+1)
		sampler := sampleRSS(m.proc, 100*time.Millisecond)
		e, err := endToEnd(ctx, m.base, body, cfg.E2ERate, cfg.E2EDuration)
		peak := sampler.stop()
		if err != nil {
			return fmt.Errorf("end to end: %w", err)
		}
		e.PeakRSS = peak
		res.E2E = append(res.E2E, e)
	}
	return nil
}

// startDapr runs daprd standalone, with a pubsub.kafka component on broker,
// and returns it with the URL that publishes to topic.
func startDapr(ctx context.Context, cfg Config, broker, topic string) (*proc, string, error) {
	resources := filepath.Join(cfg.WorkDir, "dapr-resources")
	if err := os.MkdirAll(resources, 0o755); err != nil {
		return nil, "", fmt.Errorf("start dapr: %w", err)
	}
	component := strings.Join([]string{
		"apiVersion: dapr.io/v1alpha1",
		"kind: Component",
		"metadata:",
		"  name: orders",
		"spec:",
		"  type: pubsub.kafka",
		"  version: v1",
		"  metadata:",
		"    - name: brokers",
		"      value: \"" + broker + "\"",
		"    - name: authType",
		"      value: \"none\"",
		"    - name: disableTls",
		"      value: \"true\"",
		"    - name: consumerGroup",
		"      value: \"bench-dapr\"",
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(resources, "pubsub.yaml"), []byte(component), 0o644); err != nil {
		return nil, "", fmt.Errorf("start dapr: write component: %w", err)
	}
	ports := make([]string, 4)
	for i := range ports {
		addr, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		ports[i] = addr[strings.LastIndexByte(addr, ':')+1:]
	}
	p, err := startProc("daprd", cfg.WorkDir, cfg.Dapr, []string{
		"--app-id", "bench", "--mode", "standalone", "--resources-path", resources,
		"--dapr-listen-addresses", "127.0.0.1",
		"--dapr-http-port", ports[0], "--dapr-grpc-port", ports[1],
		"--dapr-internal-grpc-port", ports[2], "--dapr-internal-grpc-listen-address", "127.0.0.1",
		"--metrics-port", ports[3], "--metrics-listen-address", "127.0.0.1",
		"--log-level", "warn",
	}, nil)
	if err != nil {
		return nil, "", err
	}
	base := "http://127.0.0.1:" + ports[0]
	client := newClient(1)
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	for {
		status, _ := do(ctx, client, http.MethodGet, base+"/v1.0/healthz", "", nil)
		if status == http.StatusNoContent {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.stop(10 * time.Second)
			return nil, "", fmt.Errorf("daprd not healthy after 60 s (last status %d): %s", status, p.tail())
		}
		select {
		case <-p.done:
			return nil, "", fmt.Errorf("daprd exited: %s", p.tail())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return p, base + "/v1.0/publish/orders/" + topic, nil
}
