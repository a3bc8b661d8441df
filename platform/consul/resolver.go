package consul

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/millrace/millrace/platform/discovery"
)

// ResolverConfig configures a Resolver. The zero value is usable.
type ResolverConfig struct {
	// WaitTime is the longest a blocking query waits before Consul answers
	// with an unchanged result. Default 5 min; Consul caps it at 10 min.
	WaitTime time.Duration
	// Consistent makes every query go through the leader of the Consul
	// servers. Default false: any server answers (AllowStale), which is
	// how Consul recommends reading the catalog at scale; answers lag the
	// leader by at most a few milliseconds in a healthy cluster.
	Consistent bool
}

// Resolver finds healthy instances through Consul's health endpoint. It
// implements discovery.Resolver and is safe for concurrent use.
type Resolver struct {
	client *api.Client
	cfg    ResolverConfig
}

// NewResolver returns a resolver on client's agent.
func NewResolver(client *api.Client, cfg ResolverConfig) *Resolver {
	if cfg.WaitTime <= 0 {
		cfg.WaitTime = 5 * time.Minute
	}
	return &Resolver{client: client, cfg: cfg}
}

// Healthy implements discovery.Resolver with a blocking query
// (GET /v1/health/service/<service>?passing&index=<index>): the instances
// whose checks, and whose node's checks, all pass. When Consul left out
// instances because the token may not read them, Healthy fails with
// ErrPermissionDenied instead of answering with fewer instances.
func (r *Resolver) Healthy(ctx context.Context, service string, index uint64) ([]discovery.Instance, uint64, error) {
	q := (&api.QueryOptions{
		WaitIndex:         index,
		WaitTime:          r.cfg.WaitTime,
		AllowStale:        !r.cfg.Consistent,
		RequireConsistent: r.cfg.Consistent,
	}).WithContext(ctx)
	entries, meta, err := r.client.Health().Service(service, "", true, q)
	if err != nil {
		return nil, 0, describe(fmt.Sprintf("resolve service %s in consul", service),
			fmt.Sprintf("service:read on %q and node:read", service), err)
	}
	if meta.ResultsFilteredByACLs {
		// Consul answers a token that may not read some instances with
		// fewer instances, not with a 403. Say so rather than route to a
		// silently smaller set.
		return nil, 0, fmt.Errorf("resolve service %s in consul: consul left out instances the token may not read: %w; the token in %s needs service:read on %q and node:read",
			service, ErrPermissionDenied, EnvHTTPToken, service)
	}
	list := make([]discovery.Instance, 0, len(entries))
	for _, e := range entries {
		s := e.Service
		addr := s.Address
		if addr == "" && e.Node != nil {
			addr = e.Node.Address
		}
		list = append(list, discovery.NewInstance(s.ID, s.Service, addr, s.Port, s.Tags, s.Meta))
	}
	slices.SortFunc(list, func(a, b discovery.Instance) int { return strings.Compare(a.ID, b.ID) })
	next := meta.LastIndex
	if next == 0 {
		// Consul's advice: never block on index 0, which answers at once.
		next = 1
	}
	return list, next, nil
}

var _ discovery.Resolver = (*Resolver)(nil)
