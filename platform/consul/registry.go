package consul

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/millrace/millrace/platform/discovery"
)

// RegistryConfig configures a Registry. The zero value is usable.
type RegistryConfig struct {
	// RetryInterval is how long the keeper of a registration waits after
	// failing to reach the agent before it tries again. Default 1 s.
	RetryInterval time.Duration
	// WaitTime bounds the keeper's blocking query on its registration.
	// Default 5 min.
	WaitTime time.Duration
	// Logger receives a record when a registration is lost and restored
	// and when the agent becomes unreachable. Default: discard.
	Logger *slog.Logger
}

// Registry registers instances with the local Consul agent. It implements
// discovery.Registrar and is safe for concurrent use.
//
// For every registration it runs a keeper: a blocking query on the agent's
// copy of the registration that registers it again when the agent no longer
// has it (an agent restarted without its data, a critical instance reaped).
// Such a restored registration starts critical and serves again only once
// its health check passes. Deregister stops the keeper first; Close stops
// every keeper and leaves the registrations with the agent.
type Registry struct {
	client *api.Client
	cfg    RegistryConfig

	mu      sync.Mutex
	closed  bool
	keepers map[string]*keeper
	wg      sync.WaitGroup
}

type keeper struct {
	stop context.CancelFunc
	done chan struct{}
}

// NewRegistry returns a registry on client's agent.
func NewRegistry(client *api.Client, cfg RegistryConfig) *Registry {
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.WaitTime <= 0 {
		cfg.WaitTime = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{client: client, cfg: cfg, keepers: map[string]*keeper{}}
}

// Register implements discovery.Registrar: it registers r with the agent,
// with an HTTP check of r.Check.Path that starts passing, and keeps it
// registered until Deregister or Close.
func (g *Registry) Register(ctx context.Context, r discovery.Registration) error {
	r = r.WithDefaults()
	if err := r.Validate(); err != nil {
		return fmt.Errorf("register %s with consul: %w", r.ID, err)
	}
	if err := g.register(ctx, r, api.HealthPassing); err != nil {
		return err
	}

	kctx, stop := context.WithCancel(context.Background())
	k := &keeper{stop: stop, done: make(chan struct{})}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		stop()
		return fmt.Errorf("register %s with consul: registry closed", r.ID)
	}
	old := g.keepers[r.ID]
	g.keepers[r.ID] = k
	g.wg.Add(1)
	g.mu.Unlock()
	if old != nil {
		old.stop()
		<-old.done
	}
	go func() {
		defer g.wg.Done()
		defer close(k.done)
		g.keep(kctx, r)
	}()
	return nil
}

// register sends r to the agent, its check starting in status.
func (g *Registry) register(ctx context.Context, r discovery.Registration, status string) error {
	svc := &api.AgentServiceRegistration{
		ID:      r.ID,
		Name:    r.Service,
		Address: r.Address,
		Port:    r.Port,
		Tags:    r.AllTags(),
		Meta:    r.AllMeta(),
		// Consul's own weights, for its DNS interface; millrace's clients
		// read the weight from the metadata.
		Weights: &api.AgentWeights{Passing: r.Weight, Warning: 1},
		Check: &api.AgentServiceCheck{
			CheckID:                        CheckID(r.ID),
			Name:                           "HTTP " + r.Check.Path,
			HTTP:                           r.HealthURL(),
			Method:                         "GET",
			Interval:                       r.Check.Interval.String(),
			Timeout:                        r.Check.Timeout.String(),
			DeregisterCriticalServiceAfter: r.Check.DeregisterCriticalAfter.String(),
			Status:                         status,
		},
	}
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := g.client.Agent().ServiceRegisterOpts(svc, opts); err != nil {
		return describe(fmt.Sprintf("register instance %s of service %s with consul", r.ID, r.Service),
			fmt.Sprintf("service:write on %q", r.Service), err)
	}
	return nil
}

// CheckID is the id of the health check Registry registers with instance
// id, for binding a leader session to it (LeaderConfig.ServiceID).
func CheckID(instanceID string) string { return "service:" + instanceID }

// keep re-registers r whenever the agent has lost it, until ctx is done.
func (g *Registry) keep(ctx context.Context, r discovery.Registration) {
	log := g.cfg.Logger.With("service", r.Service, "instance", r.ID)
	var (
		hash        string
		unreachable bool
	)
	for {
		q := (&api.QueryOptions{WaitHash: hash, WaitTime: g.cfg.WaitTime}).WithContext(ctx)
		_, meta, err := g.client.Agent().Service(r.ID, q)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			if unreachable {
				log.Info("consul agent reachable again; registration intact")
				unreachable = false
			}
			hash = meta.LastContentHash
			continue
		case isNotFound(err):
			log.Warn("consul agent lost the registration; registering again (critical until its check passes)")
			if err := g.register(ctx, r, api.HealthCritical); err == nil {
				unreachable = false
				hash = ""
				continue
			} else if ctx.Err() == nil {
				log.Error("register again", "error", err)
			}
		default:
			if !unreachable {
				log.Warn("consul agent unreachable; will restore the registration when it returns", "error", err)
				unreachable = true
			}
		}
		hash = ""
		select {
		case <-ctx.Done():
			return
		case <-time.After(g.cfg.RetryInterval):
		}
	}
}

// Deregister implements discovery.Registrar: it stops keeping the
// registration and removes it from the agent. An id the agent does not
// know is not an error.
func (g *Registry) Deregister(ctx context.Context, id string) error {
	g.mu.Lock()
	k := g.keepers[id]
	delete(g.keepers, id)
	g.mu.Unlock()
	if k != nil {
		k.stop()
		<-k.done
	}
	err := g.client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil && !isNotFound(err) {
		return describe(fmt.Sprintf("deregister instance %s from consul", id), "service:write on the instance's service", err)
	}
	return nil
}

// Close stops keeping every registration. It does not deregister: call
// Deregister for the instances that stop serving.
func (g *Registry) Close() error {
	g.mu.Lock()
	g.closed = true
	keepers := g.keepers
	g.keepers = map[string]*keeper{}
	g.mu.Unlock()
	for _, k := range keepers {
		k.stop()
	}
	g.wg.Wait()
	return nil
}

var _ discovery.Registrar = (*Registry)(nil)
