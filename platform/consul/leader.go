package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/millrace/millrace/platform/leader"
)

// Defaults of LeaderConfig.
const (
	DefaultSessionTTL = 15 * time.Second
	DefaultLockDelay  = 15 * time.Second
)

// LeaderConfig configures a LeaderLock.
type LeaderConfig struct {
	// Key is the KV key of the lock, e.g. "millrace/prod/leader/scheduler".
	// Required. Every candidate of one piece of work uses the same key.
	Key string
	// Holder is written as the key's value while this candidate leads, so
	// that operators can see who leads (consul kv get <key>). Default
	// "<hostname>:<pid>".
	Holder string
	// SessionTTL is how long the session lives without a renewal; it is
	// renewed every TTL/2. A leader that cannot renew for one TTL gives up
	// the lead (its context is cancelled) before Consul can hand the lock
	// to another. Default 15 s; Consul's minimum is 10 s unless the agent
	// lowers session_ttl_min.
	SessionTTL time.Duration
	// LockDelay is how long Consul keeps the lock from a new holder after
	// the session holding it was invalidated, so that the old leader has
	// time to notice. Default 15 s, Consul's default. It does not apply
	// after a clean release.
	LockDelay time.Duration
	// ServiceID, when set, binds the session to the health check of this
	// process's own registration (the instance id given to
	// Registry.Register): when the process dies its check goes critical,
	// Consul invalidates the session at once, and the lock passes on after
	// one check interval and the lock delay instead of after the TTL.
	ServiceID string
	// RetryInterval is how long a candidate waits after a failed request or
	// while a lock delay is in force. Default 1 s.
	RetryInterval time.Duration
	// WaitTime bounds each blocking query on the key. Default 5 min.
	WaitTime time.Duration
	// Logger receives a record per term and per failure. Default: discard.
	Logger *slog.Logger
}

func (c *LeaderConfig) setDefaults() {
	if c.Holder == "" {
		host, _ := os.Hostname()
		c.Holder = host + ":" + strconv.Itoa(os.Getpid())
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.LockDelay == 0 {
		c.LockDelay = DefaultLockDelay
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = time.Second
	}
	if c.WaitTime == 0 {
		c.WaitTime = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem of c at once.
func (c LeaderConfig) Validate() error {
	var errs []error
	if c.Key == "" {
		errs = append(errs, errors.New("lock key is empty"))
	}
	if c.SessionTTL < time.Second || c.SessionTTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("session TTL %s: want 1s..24h (and at least the agent's session_ttl_min, 10s by default)", c.SessionTTL))
	}
	if c.LockDelay < 0 || c.LockDelay > time.Minute {
		errs = append(errs, fmt.Errorf("lock delay %s: want 0..1m", c.LockDelay))
	}
	if c.RetryInterval < 0 || c.WaitTime < 0 {
		errs = append(errs, errors.New("retry interval and wait time must not be negative"))
	}
	return errors.Join(errs...)
}

// LeaderLock is a leader lock on a Consul KV key, held through a session.
// It implements leader.Runner; see there for what Run promises.
//
// Each term uses a session of its own, with SessionTTL, LockDelay and, when
// ServiceID is set, the process's health check. While the candidate waits
// and while it leads, it renews the session every TTL/2, and while it leads
// it watches the key with blocking queries. Leadership is lost, and the
// leader's context cancelled with leader.ErrLost, when the key is no longer
// held by the session (the session was invalidated or destroyed, an
// operator released the key) or when the session could not be renewed for
// one TTL (Consul unreachable). When the work returns, the key is released
// and the session destroyed.
//
// A LeaderLock is safe for concurrent use, but runs one Run at a time is
// what it is meant for. Run owns its goroutines and waits for them.
type LeaderLock struct {
	client *api.Client
	cfg    LeaderConfig
}

// NewLeaderLock checks cfg and returns a lock on client's agent. It does
// not contact Consul.
func NewLeaderLock(client *api.Client, cfg LeaderConfig) (*LeaderLock, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configure leader lock %s: %w", cfg.Key, err)
	}
	return &LeaderLock{client: client, cfg: cfg}, nil
}

// Run implements leader.Runner.
func (l *LeaderLock) Run(ctx context.Context, fn func(leaderCtx context.Context) error) error {
	log := l.cfg.Logger.With("lock", l.cfg.Key)
	failing := false
	for ctx.Err() == nil {
		led, lost, err := l.term(ctx, fn)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrPermissionDenied):
			return err
		case lost:
			log.Warn("leadership lost; campaigning again", "cause", err)
			failing = false
			continue
		case led:
			// The work returned on its own while leading.
			if err != nil {
				return fmt.Errorf("leader work under lock %s: %w", l.cfg.Key, err)
			}
			return nil
		case err != nil:
			if !failing {
				log.Warn("cannot campaign; retrying", "error", err)
				failing = true
			}
			if !sleep(ctx, l.cfg.RetryInterval) {
				return nil
			}
		}
	}
	return nil
}

// term runs one session: campaign, then lead. led reports that fn ran;
// lost that leadership was lost while it ran, with the cause in err;
// otherwise err is fn's error (led) or why campaigning failed.
func (l *LeaderLock) term(ctx context.Context, fn func(context.Context) error) (led, lost bool, err error) {
	log := l.cfg.Logger.With("lock", l.cfg.Key)
	id, err := l.createSession(ctx)
	if err != nil {
		return false, false, err
	}
	// sessionCtx ends when ctx does or the session can no longer be
	// renewed; its cause then wraps leader.ErrLost.
	sessionCtx, endSession := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := l.renew(sessionCtx, id); err != nil {
			endSession(fmt.Errorf("%w: %w", leader.ErrLost, err))
		}
	}()
	defer func() {
		endSession(context.Canceled)
		wg.Wait()
		l.cleanup(ctx, id, led && !lost)
	}()

	acquired, err := l.acquire(sessionCtx, id)
	if err != nil || !acquired {
		if cause := context.Cause(sessionCtx); err == nil && errors.Is(cause, leader.ErrLost) {
			err = cause // the session expired while waiting: campaign again
		}
		return false, false, err
	}

	leaderCtx, depose := context.WithCancelCause(sessionCtx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := l.monitor(leaderCtx, id); err != nil {
			depose(fmt.Errorf("%w: %w", leader.ErrLost, err))
		}
	}()
	log.Info("leading", "session", id, "holder", l.cfg.Holder)
	err = fn(leaderCtx)
	cause := context.Cause(leaderCtx)
	depose(context.Canceled)
	if ctx.Err() == nil && errors.Is(cause, leader.ErrLost) {
		return true, true, cause
	}
	return true, false, err
}

// createSession creates the session of one term.
func (l *LeaderLock) createSession(ctx context.Context) (string, error) {
	se := &api.SessionEntry{
		Name:      "millrace leader lock " + l.cfg.Key,
		TTL:       l.cfg.SessionTTL.String(),
		LockDelay: l.cfg.LockDelay,
		Behavior:  api.SessionBehaviorRelease,
	}
	if l.cfg.LockDelay == 0 {
		// Consul reads an absent lock delay as its default of 15 s.
		se.LockDelay = time.Millisecond
	}
	if l.cfg.ServiceID != "" {
		se.ServiceChecks = []api.ServiceCheck{{ID: CheckID(l.cfg.ServiceID)}}
	}
	id, _, err := l.client.Session().Create(se, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return "", describe(fmt.Sprintf("create a session for leader lock %s", l.cfg.Key), "session:write on this node", err)
	}
	return id, nil
}

// acquire takes the key for the session, waiting with blocking queries
// while another session holds it. It reports false when ctx ends first.
func (l *LeaderLock) acquire(ctx context.Context, id string) (bool, error) {
	kv := l.client.KV()
	pair := &api.KVPair{Key: l.cfg.Key, Value: []byte(l.cfg.Holder), Session: id, Flags: api.LockFlagValue}
	for {
		ok, _, err := kv.Acquire(pair, (&api.WriteOptions{}).WithContext(ctx))
		if ctx.Err() != nil {
			return false, nil
		}
		if err != nil {
			return false, describe(fmt.Sprintf("acquire leader lock %s", l.cfg.Key), fmt.Sprintf("key:write on %q", l.cfg.Key), err)
		}
		if ok {
			return true, nil
		}
		// Held by another session: wait until it is released.
		var index uint64
		for {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: l.cfg.WaitTime}).WithContext(ctx)
			cur, meta, err := kv.Get(l.cfg.Key, q)
			if ctx.Err() != nil {
				return false, nil
			}
			if err != nil {
				return false, describe(fmt.Sprintf("watch leader lock %s", l.cfg.Key), fmt.Sprintf("key:read on %q", l.cfg.Key), err)
			}
			if cur == nil || cur.Session == "" {
				break
			}
			index = meta.LastIndex
		}
		if index == 0 {
			// Free at once although the acquire failed: a lock delay is
			// in force after an invalidated session. Wait, then retry.
			if !sleep(ctx, l.cfg.RetryInterval) {
				return false, nil
			}
		}
	}
}

// renew renews the session every TTL/2 until ctx ends (nil) or the
// session is gone or could not be renewed for one TTL (an error).
func (l *LeaderLock) renew(ctx context.Context, id string) error {
	ttl := l.cfg.SessionTTL
	wait := ttl / 2
	lastRenewed := time.Now()
	var lastErr error
	for {
		if !sleep(ctx, wait) {
			return nil
		}
		sent := time.Now()
		entry, _, err := l.client.Session().Renew(id, (&api.WriteOptions{}).WithContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil && entry == nil, isNotFound(err):
			return fmt.Errorf("session %s was invalidated", id)
		case err == nil:
			lastRenewed, wait = sent, ttl/2
			continue
		}
		lastErr = err
		// Consul invalidates a session no sooner than one TTL after the
		// last renewal it received, which was no sooner than sent.
		if time.Since(lastRenewed) >= ttl {
			return fmt.Errorf("session %s not renewed for %s: %w", id, ttl, lastErr)
		}
		wait = min(ttl/4, time.Second, ttl-time.Since(lastRenewed))
	}
}

// monitor watches the key until ctx ends (nil) or the key is no longer
// held by the session (an error). Failing requests are retried: the
// session's renewal decides when an unreachable Consul means a loss.
func (l *LeaderLock) monitor(ctx context.Context, id string) error {
	var index uint64
	for {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: l.cfg.WaitTime, RequireConsistent: true}).WithContext(ctx)
		pair, meta, err := l.client.KV().Get(l.cfg.Key, q)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil:
			index = 0
			if !sleep(ctx, l.cfg.RetryInterval) {
				return nil
			}
			continue
		case pair == nil:
			return fmt.Errorf("lock key %s was deleted", l.cfg.Key)
		case pair.Session != id:
			return fmt.Errorf("lock key %s is no longer held by session %s", l.cfg.Key, id)
		}
		index = meta.LastIndex
	}
}

// cleanup releases the key (when held) and destroys the session, on a
// context of its own: it runs when ctx may be done.
func (l *LeaderLock) cleanup(ctx context.Context, id string, release bool) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	w := (&api.WriteOptions{}).WithContext(cctx)
	if release {
		pair := &api.KVPair{Key: l.cfg.Key, Session: id, Flags: api.LockFlagValue}
		if _, _, err := l.client.KV().Release(pair, w); err != nil {
			l.cfg.Logger.Warn("release leader lock; the session's end releases it", "lock", l.cfg.Key, "error", err)
		}
	}
	if _, err := l.client.Session().Destroy(id, w); err != nil && !isNotFound(err) {
		l.cfg.Logger.Warn("destroy leader session; it expires after its TTL", "lock", l.cfg.Key, "session", id, "error", err)
	}
}

// sleep waits d or until ctx ends, reporting false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

var _ leader.Runner = (*LeaderLock)(nil)
