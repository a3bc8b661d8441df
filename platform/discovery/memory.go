package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"
)

// ErrClosed is returned by a Memory registry after Close.
var ErrClosed = errors.New("registry closed")

// DefaultMaxWait is the longest a blocking query of Memory waits before it
// answers with an unchanged result, as Consul's default wait.
const DefaultMaxWait = 5 * time.Minute

// MemoryConfig configures a Memory registry. The zero value is usable.
type MemoryConfig struct {
	// HTTPClient performs the health checks. Default: a client of its own
	// (each check is bounded by its registration's timeout).
	HTTPClient *http.Client
	// MaxWait bounds a blocking query. Default 5 min.
	MaxWait time.Duration
	// Logger receives a record whenever an instance's health changes.
	// Default: discard.
	Logger *slog.Logger
	// Now tells the time for DeregisterCriticalAfter. Default time.Now.
	Now func() time.Time
}

// Memory is the in-process registry: a Registrar and a Resolver in one, for
// `millrace dev` and for tests. It checks the health of every instance it
// holds over HTTP, on the registration's interval, as a Consul agent does,
// and answers blocking queries as soon as the healthy set of a service
// changes.
//
// It is safe for concurrent use. It owns one goroutine per registration,
// which Deregister and Close stop and wait for; Close it when done.
type Memory struct {
	cfg MemoryConfig

	mu      sync.Mutex
	closed  bool
	index   uint64               // grows with every change
	changed chan struct{}        // closed and replaced at every change
	entries map[string]*memEntry // by instance id
	svcIdx  map[string]uint64    // index of the last change of each service
	wg      sync.WaitGroup
}

type memEntry struct {
	reg     Registration
	inst    Instance
	passing bool
	// criticalSince is when the instance last turned critical.
	criticalSince time.Time
	stop          context.CancelFunc
	done          chan struct{}
}

// NewMemory returns an empty in-process registry.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Memory{
		cfg:     cfg,
		index:   1,
		changed: make(chan struct{}),
		entries: map[string]*memEntry{},
		svcIdx:  map[string]uint64{},
	}
}

// Register implements Registrar. It starts checking the instance's health
// on its interval; the instance counts as healthy until a check fails.
func (m *Memory) Register(ctx context.Context, r Registration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("register %s: %w", r.ID, err)
	}
	r = r.WithDefaults()
	if err := r.Validate(); err != nil {
		return fmt.Errorf("register %s: %w", r.ID, err)
	}
	r.Tags, r.Meta = r.AllTags(), r.AllMeta()
	e := &memEntry{
		reg:     r,
		inst:    NewInstance(r.ID, r.Service, r.Address, r.Port, r.Tags, r.Meta),
		passing: true,
		done:    make(chan struct{}),
	}
	checkCtx, stop := context.WithCancel(context.Background())
	e.stop = stop

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		stop()
		return fmt.Errorf("register %s: %w", r.ID, ErrClosed)
	}
	old := m.entries[r.ID]
	m.entries[r.ID] = e
	if old != nil {
		m.touchLocked(old.reg.Service)
	}
	m.touchLocked(r.Service)
	m.wg.Add(1)
	m.mu.Unlock()

	if old != nil {
		old.stop()
		<-old.done
	}
	go func() {
		defer m.wg.Done()
		defer close(e.done)
		m.check(checkCtx, e)
	}()
	return nil
}

// Deregister implements Registrar.
func (m *Memory) Deregister(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("deregister %s: %w", id, err)
	}
	m.mu.Lock()
	e := m.entries[id]
	if e != nil {
		delete(m.entries, id)
		m.touchLocked(e.reg.Service)
	}
	m.mu.Unlock()
	if e != nil {
		e.stop()
		<-e.done
	}
	return nil
}

// Healthy implements Resolver. Its longest wait is MemoryConfig.MaxWait.
func (m *Memory) Healthy(ctx context.Context, service string, index uint64) ([]Instance, uint64, error) {
	var timeout <-chan time.Time
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, 0, fmt.Errorf("resolve %s: %w", service, ErrClosed)
		}
		at := m.svcIdx[service]
		if at == 0 {
			// Never seen: answer with the registry's index, so that a
			// blocking query wakes when the service first appears.
			at = m.index
		}
		if index == 0 || at != index {
			list := m.healthyLocked(service)
			m.mu.Unlock()
			return list, at, nil
		}
		changed := m.changed
		m.mu.Unlock()

		if timeout == nil {
			t := time.NewTimer(m.cfg.MaxWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-changed:
		case <-timeout:
			index = 0 // answer with what is there now
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("resolve %s: %w", service, ctx.Err())
		}
	}
}

// Close stops every health check and forgets every instance. Blocking
// queries in flight return ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	entries := m.entries
	m.entries = map[string]*memEntry{}
	close(m.changed)
	m.mu.Unlock()
	for _, e := range entries {
		e.stop()
	}
	m.wg.Wait()
	return nil
}

// healthyLocked lists the passing instances of service, by id.
func (m *Memory) healthyLocked(service string) []Instance {
	list := []Instance{}
	for _, e := range m.entries {
		if e.reg.Service == service && e.passing {
			list = append(list, cloneInstance(e.inst))
		}
	}
	slices.SortFunc(list, func(a, b Instance) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return list
}

// touchLocked records a change of service and wakes blocking queries.
func (m *Memory) touchLocked(service string) {
	m.index++
	m.svcIdx[service] = m.index
	close(m.changed)
	m.changed = make(chan struct{})
}

// check runs e's health check on its interval until ctx is cancelled or
// the instance has been critical for DeregisterCriticalAfter.
func (m *Memory) check(ctx context.Context, e *memEntry) {
	t := time.NewTicker(e.reg.Check.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := m.probe(ctx, e.reg)
		if ctx.Err() != nil {
			return
		}
		if m.record(e, err) {
			return
		}
	}
}

// probe performs one health check.
func (m *Memory) probe(ctx context.Context, r Registration) error {
	ctx, cancel := context.WithTimeout(ctx, r.Check.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.HealthURL(), nil)
	if err != nil {
		return fmt.Errorf("build health check request: %w", err)
	}
	resp, err := m.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("health check answered %s", resp.Status)
	}
	return nil
}

// record applies the result of a check to e. It reports true when e was
// removed for having been critical too long.
func (m *Memory) record(e *memEntry, checkErr error) (removed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries[e.reg.ID] != e {
		return true // replaced or deregistered meanwhile
	}
	now := m.cfg.Now()
	switch {
	case checkErr == nil && !e.passing:
		e.passing = true
		m.touchLocked(e.reg.Service)
		m.cfg.Logger.Info("instance passing", "service", e.reg.Service, "instance", e.reg.ID)
	case checkErr != nil && e.passing:
		e.passing = false
		e.criticalSince = now
		m.touchLocked(e.reg.Service)
		m.cfg.Logger.Warn("instance critical", "service", e.reg.Service, "instance", e.reg.ID, "error", checkErr)
	case checkErr != nil && now.Sub(e.criticalSince) >= e.reg.Check.DeregisterCriticalAfter:
		delete(m.entries, e.reg.ID)
		m.touchLocked(e.reg.Service)
		m.cfg.Logger.Warn("instance removed after being critical too long", "service", e.reg.Service,
			"instance", e.reg.ID, "critical_for", now.Sub(e.criticalSince).Round(time.Second))
		return true
	}
	return false
}

func cloneInstance(in Instance) Instance {
	in.Tags = slices.Clone(in.Tags)
	meta := make(map[string]string, len(in.Meta))
	for k, v := range in.Meta {
		meta[k] = v
	}
	in.Meta = meta
	return in
}

var (
	_ Registrar = (*Memory)(nil)
	_ Resolver  = (*Memory)(nil)
)
