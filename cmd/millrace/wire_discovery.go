package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/millrace/millrace/gateway/upstream"
	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/discovery"
	"github.com/millrace/millrace/platform/leader"
	"github.com/millrace/millrace/projections/queryapi"
)

// Service names the HTTP edges register as. `millrace dev` serves both on
// its one port: the gateway, and the projections' query edge under
// /query/v1/ (which the gateway of another process reads through
// gateway/upstream, with upstream.DefaultService).
const (
	serviceGateway = "millrace-gateway"
	serviceQuery   = upstream.DefaultService
)

// version is the version tag every registration carries.
const version = "dev"

// discoveryWiring is how this process announces its HTTP edge and finds
// the others, and where it gets leader locks: Consul when CONSUL_HTTP_ADDR
// is set (with the other CONSUL_* variables), else the in-process registry
// and locks. Either way the code that uses them holds only the ports
// (discovery.Registrar, discovery.Resolver, leader.Runner).
type discoveryWiring struct {
	registrar discovery.Registrar
	// resolver finds instances for the roles whose gateway reads remote
	// query edges: upstream.New(upstream.Config{Resolver: resolver, …}).
	resolver discovery.Resolver
	// leaders returns the leader lock of a piece of work that must run
	// once per cluster (the scheduler).
	leaders func(key string) (leader.Runner, error)
	desc    string
	logger  *slog.Logger
	closers []func() error

	// advertise, weight and zone describe this instance in registrations.
	advertise string
	weight    int
	zone      string

	mu        sync.Mutex
	withdrawn bool
	ids       []string // registered instance ids
}

// discoveryFromEnv builds the discovery wiring from CONSUL_* and the
// MILLRACE_ADVERTISE_ADDR, MILLRACE_WEIGHT and MILLRACE_ZONE variables
// getenv reads.
func discoveryFromEnv(getenv func(string) string, logger *slog.Logger) (*discoveryWiring, error) {
	d := &discoveryWiring{
		logger:    logger.With("component", "discovery"),
		advertise: strings.TrimSpace(getenv("MILLRACE_ADVERTISE_ADDR")),
		zone:      strings.TrimSpace(getenv("MILLRACE_ZONE")),
		weight:    discovery.DefaultWeight,
	}
	var errs []error
	if w := getenv("MILLRACE_WEIGHT"); w != "" {
		n, err := strconv.Atoi(w)
		if err != nil || n < 1 || n > discovery.MaxWeight {
			errs = append(errs, fmt.Errorf("MILLRACE_WEIGHT=%q: want a whole number 1..%d", w, discovery.MaxWeight))
		}
		d.weight = n
	}
	if getenv(consul.EnvHTTPAddr) == "" {
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		mem := discovery.NewMemory(discovery.MemoryConfig{Logger: d.logger})
		locks := leader.NewLocal(d.logger)
		d.registrar, d.resolver = mem, mem
		d.leaders = func(key string) (leader.Runner, error) { return locks.Lock(key), nil }
		d.closers = append(d.closers, mem.Close)
		d.desc = "in-process (set CONSUL_HTTP_ADDR to use Consul)"
		return d, nil
	}

	cfg, err := consul.ConfigFromEnv(getenv)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	client, err := consul.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	reg := consul.NewRegistry(client, consul.RegistryConfig{Logger: d.logger})
	d.registrar = reg
	d.resolver = consul.NewResolver(client, consul.ResolverConfig{})
	d.leaders = func(key string) (leader.Runner, error) {
		return consul.NewLeaderLock(client, consul.LeaderConfig{Key: "millrace/leader/" + key, Logger: d.logger})
	}
	d.closers = append(d.closers, reg.Close)
	d.desc = cfg.String()
	return d, nil
}

// announce registers the HTTP edge listening at addr as the gateway and as
// a query edge. It does nothing once withdraw has run.
func (d *discoveryWiring) announce(ctx context.Context, addr net.Addr) error {
	return d.announceAs(ctx, addr, edgeService{serviceGateway, "gateway"}, edgeService{serviceQuery, "query"})
}

// edgeService is a service an HTTP port registers as, with its role tag.
type edgeService struct{ service, role string }

// announceAs registers the HTTP edge listening at addr as each of services
// (the roles register theirs, roles.go). It does nothing once withdraw has
// run.
func (d *discoveryWiring) announceAs(ctx context.Context, addr net.Addr, services ...edgeService) error {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("announce %s: not a TCP address", addr)
	}
	host := d.advertise
	if host == "" {
		host = tcp.IP.String()
		if tcp.IP.IsUnspecified() {
			// Listening everywhere: announce the name others know us by.
			name, err := os.Hostname()
			if err != nil {
				return fmt.Errorf("announce %s: find the host name to announce (or set MILLRACE_ADVERTISE_ADDR): %w", addr, err)
			}
			host = name
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.withdrawn {
		return nil
	}
	for _, s := range services {
		r := discovery.Registration{
			ID: discovery.NewID(s.service, host, tcp.Port), Service: s.service,
			Address: host, Port: tcp.Port, Role: s.role, Version: version,
			Weight: d.weight, Zone: d.zone,
			Check: discovery.Check{Path: "/healthz"},
		}
		if err := d.registrar.Register(ctx, r); err != nil {
			return fmt.Errorf("announce the %s edge: %w", s.role, err)
		}
		d.ids = append(d.ids, r.ID)
		d.logger.Info("registered", "service", s.service, "instance", r.ID, "address", r.Address, "port", r.Port)
	}
	return nil
}

// withdraw deregisters what announce registered. Run it before the HTTP
// server's shutdown, so that clients stop choosing this instance first.
func (d *discoveryWiring) withdraw(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.withdrawn = true
	var errs []error
	for _, id := range d.ids {
		if err := d.registrar.Deregister(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		d.logger.Info("deregistered", "instance", id)
	}
	d.ids = nil
	return errors.Join(errs...)
}

// Close releases the registry (the keepers of Consul registrations, or the
// in-process registry's health checks).
func (d *discoveryWiring) Close() error {
	var errs []error
	for i := len(d.closers) - 1; i >= 0; i-- {
		errs = append(errs, d.closers[i]())
	}
	d.closers = nil
	return errors.Join(errs...)
}

// withdrawTimeout bounds deregistration at shutdown: a registry that does
// not answer must not hold the shutdown up (its health check removes the
// instance anyway).
const withdrawTimeout = 5 * time.Second

// withQueryEdge serves the projections' query edge under /query/v1/ beside
// next.
func withQueryEdge(edge, next http.Handler) http.Handler {
	if edge == nil {
		return next
	}
	mux := http.NewServeMux()
	mux.Handle(queryapi.Prefix, edge)
	mux.Handle("/", next)
	return mux
}
