package upstream

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/eapache/go-resiliency/breaker"

	"github.com/millrace/millrace/platform/discovery"
)

// pool is what the client knows of its service's instances: the last
// answer of the resolver, each instance with its breaker and its share of
// smooth weighted round robin. It is safe for concurrent use.
type pool struct {
	service    string
	ejectAfter int
	coolDown   time.Duration

	mu       sync.Mutex
	eps      []*endpoint // by id
	resolved chan struct{}
	answered bool // the resolver answered at least once
	failing  bool // the last query of the resolver failed
	stale    bool
	reason   string // why stale, or why unresolved
	since    time.Time
	updated  time.Time
}

// endpoint is one instance as the client uses it.
type endpoint struct {
	inst    discovery.Instance
	base    string // http://host:port
	brk     *breaker.Breaker
	current int // smooth weighted round robin state, under pool.mu
}

func newPool(service string, ejectAfter int, coolDown time.Duration) *pool {
	return &pool{service: service, ejectAfter: ejectAfter, coolDown: coolDown, resolved: make(chan struct{})}
}

// update applies an answer of the resolver. An empty answer never replaces
// known instances: the client keeps them, marked stale, since routing to
// instances that may have recovered beats failing every request at once.
func (p *pool) update(list []discovery.Instance, now time.Time) (changed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.answered {
		p.answered = true
		close(p.resolved)
	}
	p.updated = now
	p.failing = false
	if len(list) == 0 && len(p.eps) > 0 {
		p.markStaleLocked(fmt.Sprintf("the registry reports no healthy instance of %s; keeping the %d last known", p.service, len(p.eps)), now)
		return false
	}
	p.stale, p.reason, p.since = false, "", time.Time{}

	old := make(map[string]*endpoint, len(p.eps))
	for _, ep := range p.eps {
		old[ep.inst.ID] = ep
	}
	eps := make([]*endpoint, 0, len(list))
	for _, in := range list {
		base := (&url.URL{Scheme: "http", Host: in.HostPort()}).String()
		if ep, ok := old[in.ID]; ok && ep.base == base {
			changed = changed || ep.inst.Weight != in.Weight
			ep.inst = in
			eps = append(eps, ep)
			delete(old, in.ID)
			continue
		}
		changed = true
		eps = append(eps, &endpoint{inst: in, base: base, brk: breaker.New(p.ejectAfter, 1, p.coolDown)})
	}
	slices.SortFunc(eps, func(a, b *endpoint) int { return strings.Compare(a.inst.ID, b.inst.ID) })
	p.eps = eps
	return changed || len(old) > 0
}

// failed records that the resolver could not be asked: the known
// instances stay in use, marked stale. It reports whether this is the
// first failure since the last answer.
func (p *pool) failed(err error, now time.Time) (first bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.failing
	p.failing = true
	if !p.answered {
		// Not stale: there is nothing to be stale about yet.
		p.reason = fmt.Sprintf("the registry is unreachable (%v); no instances known yet", err)
		return !was
	}
	p.markStaleLocked(fmt.Sprintf("the registry is unreachable (%v); serving from the %d last known instances", err, len(p.eps)), now)
	return !was
}

func (p *pool) markStaleLocked(reason string, now time.Time) {
	if !p.stale {
		p.since = now
	}
	p.stale, p.reason = true, reason
}

// waitResolved waits until the resolver answered once, ctx is done or
// timeout passes.
func (p *pool) waitResolved(ctx context.Context, timeout time.Duration) error {
	select {
	case <-p.resolved:
		return nil
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.resolved:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		p.mu.Lock()
		reason := p.reason
		p.mu.Unlock()
		if reason == "" {
			reason = "no answer yet"
		}
		return fmt.Errorf("%w: instances of %s not known after %s: %s", ErrUnavailable, p.service, timeout, reason)
	}
}

// pick chooses the next instance by smooth weighted round robin among those
// not in tried and not ejected by their breaker, or nil when none is left.
// Over any run of requests each eligible instance gets its weight's share,
// spread out rather than in bursts (the algorithm of nginx's upstreams).
func (p *pool) pick(tried map[string]bool) *endpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	var (
		best  *endpoint
		total int
	)
	for _, ep := range p.eps {
		if tried[ep.inst.ID] || ep.brk.GetState() == breaker.Open {
			continue
		}
		ep.current += ep.inst.Weight
		total += ep.inst.Weight
		if best == nil || ep.current > best.current {
			best = ep
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}

// size reports how many instances are known and how many are ejected.
func (p *pool) size() (known, ejected int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ep := range p.eps {
		if ep.brk.GetState() == breaker.Open {
			ejected++
		}
	}
	return len(p.eps), ejected
}

func (p *pool) status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{Service: p.service, Resolved: p.answered, Stale: p.stale, Reason: p.reason, Instances: []InstanceStatus{}}
	if !p.since.IsZero() {
		t := p.since
		s.StaleSince = &t
	}
	if !p.updated.IsZero() {
		t := p.updated
		s.UpdatedAt = &t
	}
	if !p.answered && s.Reason == "" {
		s.Reason = "waiting for the registry's first answer"
	}
	for _, ep := range p.eps {
		s.Instances = append(s.Instances, InstanceStatus{
			ID: ep.inst.ID, Address: ep.inst.HostPort(), Weight: ep.inst.Weight, Zone: ep.inst.Zone,
			Version: ep.inst.Version, Ejected: ep.brk.GetState() == breaker.Open,
		})
	}
	return s
}

// Status is what the client knows of its service, for health endpoints and
// the ops console.
type Status struct {
	Service string `json:"service"`
	// Resolved is false until the registry answered once.
	Resolved bool `json:"resolved"`
	// Stale is true while the client serves from instances the registry
	// has not confirmed: the registry is unreachable, or reported no
	// healthy instance at all. Reason says which.
	Stale      bool       `json:"stale"`
	Reason     string     `json:"reason,omitempty"`
	StaleSince *time.Time `json:"stale_since,omitempty"`
	// UpdatedAt is when the registry last answered.
	UpdatedAt *time.Time       `json:"updated_at,omitempty"`
	Instances []InstanceStatus `json:"instances"`
}

// InstanceStatus is one known instance.
type InstanceStatus struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Weight  int    `json:"weight"`
	Zone    string `json:"zone,omitempty"`
	Version string `json:"version,omitempty"`
	// Ejected is true while the instance's breaker is open: it failed too
	// often and gets no requests until its cool-down has passed.
	Ejected bool `json:"ejected"`
}

// Serving reports whether requests can be sent: some instance is known
// and not ejected.
func (s Status) Serving() bool {
	for _, in := range s.Instances {
		if !in.Ejected {
			return true
		}
	}
	return false
}
