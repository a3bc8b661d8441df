package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Source consumes one topic in a consumer group and hands over batches of
// consecutive messages of one partition (platform/kafka.BatchConsumer
// implements it). Consume returns nil once ctx is done, or the first error
// of handle or of the consumer; before reading a partition it asks resume
// for the offset to start at (partitions left out start at the group's
// committed offset, or the oldest record). A batch is acknowledged when
// handle returns nil.
type Source interface {
	Consume(ctx context.Context, group, topic string,
		resume func(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error),
		handle func(ctx context.Context, batch []*message.Message) error) error
}

// Offsets tells where the logs of topics start and end
// (platform/kafka.Admin implements it). Offsets are per topic and partition,
// each the offset of the next record to read.
type Offsets interface {
	StartOffsets(ctx context.Context, topics ...string) (map[string]map[int32]int64, error)
	EndOffsets(ctx context.Context, topics ...string) (map[string]map[int32]int64, error)
	// OffsetsAt returns the first offset at or after t (the end when none).
	OffsetsAt(ctx context.Context, t time.Time, topics ...string) (map[string]map[int32]int64, error)
}

// Groups moves and deletes consumer groups (platform/kafka.Admin implements
// it). Both fail for a group that has members.
type Groups interface {
	CommitGroupOffsets(ctx context.Context, group string, offsets map[string]map[int32]int64) error
	DeleteGroups(ctx context.Context, groups ...string) error
}

// Live runs the version of a projection that serves reads: cmd/millrace
// implements it with the Watermill router, so that live consumption goes
// through the same middleware as every handler (tracing, metrics, retries,
// poison queue). Start subscribes r.Handle to each of r.Topics() in the
// consumer group r.GroupFor(topic) and returns once consumption started;
// stop ends it and returns once the consumers left their groups. ctx lives as
// long as the Manager runs.
type Live interface {
	Start(ctx context.Context, r *Runner) (stop func(ctx context.Context) error, err error)
}

// Config configures a Manager. DB, Projections, Source, Offsets and Groups
// are required.
type Config struct {
	// DB holds the read models and the catalog; opened as platform/sqlite
	// opens databases. The Manager does not close it.
	DB *sql.DB
	// Projections are the projections to run; names must be unique.
	Projections []Projection
	// Source consumes for rebuilds (and for live versions when Live is nil).
	Source Source
	// Offsets and Groups reach the broker's offsets and consumer groups.
	Offsets Offsets
	Groups  Groups
	// Live runs active versions; nil runs them with Source, in batches.
	Live Live
	// Logger receives the Manager's records; nil discards them.
	Logger *slog.Logger
	// OnRunner, when set, is called with every runner the Manager makes:
	// the active versions at start and each version a rebuild builds (to
	// report their positions as metrics, say). It must not block.
	OnRunner func(*Runner)

	// CatchUpLag is how far (in messages, over all partitions) a rebuild
	// may be behind the end of the log to be swapped in; 1000 when zero.
	// The swap then stops the old version and waits for the new one to pass
	// it, so reads never go back in time.
	CatchUpLag int64
	// PollInterval is how often a rebuild measures its progress; 250 ms
	// when zero.
	PollInterval time.Duration
	// SwapTimeout bounds how long the old version stays stopped while the
	// new one passes it; the old one resumes when it runs out and the swap
	// is tried again. 30 s when zero.
	SwapTimeout time.Duration
	// RetryMin and RetryMax bound the wait before a failed consumer tries
	// again (doubling each time); 100 ms and 10 s when zero.
	RetryMin, RetryMax time.Duration
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.CatchUpLag == 0 {
		c.CatchUpLag = 1000
	}
	if c.PollInterval == 0 {
		c.PollInterval = 250 * time.Millisecond
	}
	if c.SwapTimeout == 0 {
		c.SwapTimeout = 30 * time.Second
	}
	if c.RetryMin == 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 10 * time.Second
	}
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.DB == nil {
		errs = append(errs, errors.New("no database given"))
	}
	if c.Source == nil {
		errs = append(errs, errors.New("no source given: rebuilds consume through it"))
	}
	if c.Offsets == nil {
		errs = append(errs, errors.New("no offsets given: progress and rebuild starts need them"))
	}
	if c.Groups == nil {
		errs = append(errs, errors.New("no groups given: swaps and retirements move and delete consumer groups"))
	}
	if len(c.Projections) == 0 {
		errs = append(errs, errors.New("no projections given"))
	}
	seen := map[string]bool{}
	for _, p := range c.Projections {
		if err := checkProjection(c.DB, p); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[p.Name()] {
			errs = append(errs, fmt.Errorf("projection %s given twice", p.Name()))
		}
		seen[p.Name()] = true
	}
	if c.CatchUpLag < 0 || c.PollInterval < 0 || c.SwapTimeout < 0 || c.RetryMin < 0 || c.RetryMax < 0 {
		errs = append(errs, errors.New("catch-up lag, intervals and timeouts must not be negative"))
	}
	return errors.Join(errs...)
}

// Manager runs projections: the active version of each, live, and at most one
// rebuild per projection, which builds the next version from the log beside
// the active one and swaps it in when it has caught up (see Rebuild). Its
// state (versions, positions, the rebuild under way) is in the database, so
// a Manager started again on the same database carries on where the previous
// one stopped, a rebuild included.
//
// Its methods are safe for concurrent use. Rebuild, CancelRebuild and the
// starting of live versions need Run to be running.
type Manager struct {
	cfg    Config
	db     *sql.DB
	logger *slog.Logger
	byName map[string]*managed
	names  []string

	mu      sync.Mutex
	runCtx  context.Context // set while Run runs
	running bool
	wg      sync.WaitGroup // goroutines started by Run, Rebuild and swaps
	started chan struct{}  // closed once Run started the live versions
	writeMu sync.Mutex     // shared by every runner's transactions
}

// managed is one projection and what runs it.
type managed struct {
	p Projection
	// committed is broadcast after every commit of any version (Advanced).
	committed *Signal
	// positions caches the serving version's positions for Reached.
	positions positionCache

	mu       sync.Mutex
	live     *Runner
	stopLive func(context.Context) error
	build    *build
}

// NewManager sets up the catalog and the active version of every projection
// (see NewRunner) and returns a Manager ready to Run.
func NewManager(ctx context.Context, cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("create projection manager: %w", err)
	}
	m := &Manager{cfg: cfg, db: cfg.DB, logger: cfg.Logger, byName: map[string]*managed{}, started: make(chan struct{})}
	for _, p := range cfg.Projections {
		committed := &Signal{}
		r, err := newRunnerShared(ctx, cfg.DB, p, cfg.Logger, &m.writeMu, committed)
		if err != nil {
			return nil, fmt.Errorf("create projection manager: %w", err)
		}
		m.onRunner(r)
		m.byName[p.Name()] = &managed{p: p, live: r, committed: committed}
		m.names = append(m.names, p.Name())
	}
	slices.Sort(m.names)
	return m, nil
}

func (m *Manager) onRunner(r *Runner) {
	if m.cfg.OnRunner != nil {
		m.cfg.OnRunner(r)
	}
}

// Started is closed once Run has started consuming for the active version
// of every projection.
func (m *Manager) Started() <-chan struct{} { return m.started }

// Names lists the projections, sorted.
func (m *Manager) Names() []string { return slices.Clone(m.names) }

// Run runs the active version of every projection and resumes the rebuilds a
// previous run left unfinished, until ctx is done; then it stops every
// consumer it started and returns once they have stopped.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("run projection manager: already running")
	}
	m.running, m.runCtx = true, ctx
	m.mu.Unlock()

	err := m.start(ctx)
	if err == nil {
		close(m.started)
		<-ctx.Done()
	}

	// Stop: rebuilds first (they may be swapping), then the live versions.
	m.mu.Lock()
	m.running = false
	m.mu.Unlock()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for _, name := range m.names {
		mp := m.byName[name]
		mp.mu.Lock()
		b := mp.build
		mp.mu.Unlock()
		if b != nil {
			b.stop()
		}
	}
	m.wg.Wait()
	for _, name := range m.names {
		mp := m.byName[name]
		mp.mu.Lock()
		stop, live := mp.stopLive, mp.live
		mp.stopLive = nil
		mp.mu.Unlock()
		if stop != nil {
			if serr := stop(stopCtx); serr != nil {
				err = errors.Join(err, fmt.Errorf("stop projection %s: %w", name, serr))
			}
		}
		if live != nil {
			err = errors.Join(err, live.Close())
		}
	}
	return err
}

// start starts the live versions and resumes unfinished rebuilds.
func (m *Manager) start(ctx context.Context) error {
	for _, name := range m.names {
		mp := m.byName[name]
		mp.mu.Lock()
		r := mp.live
		mp.mu.Unlock()
		stop, err := m.startLive(ctx, r)
		if err != nil {
			return fmt.Errorf("start projection %s: %w", name, err)
		}
		mp.mu.Lock()
		mp.stopLive = stop
		mp.mu.Unlock()
	}
	for _, name := range m.names {
		if err := m.resume(ctx, m.byName[name]); err != nil {
			return fmt.Errorf("resume rebuild of projection %s: %w", name, err)
		}
	}
	return nil
}

// startLive starts consuming for r as the serving version: through Live, or
// with the Source when there is none.
func (m *Manager) startLive(ctx context.Context, r *Runner) (func(context.Context) error, error) {
	if m.cfg.Live != nil {
		return m.cfg.Live.Start(ctx, r)
	}
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, topic := range r.Topics() {
		wg.Go(func() { m.consume(lctx, r, topic) })
	}
	return func(context.Context) error {
		cancel()
		wg.Wait()
		return nil
	}, nil
}

// consume runs the Source for one topic of r until ctx is done, starting
// again after a growing wait when it fails.
func (m *Manager) consume(ctx context.Context, r *Runner, topic string) {
	wait := m.cfg.RetryMin
	for {
		err := m.cfg.Source.Consume(ctx, r.GroupFor(topic), topic, r.Resume, r.HandleBatch)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			wait = m.cfg.RetryMin
			continue
		}
		r.note(ctx, 0, err)
		m.logger.WarnContext(ctx, "projection consumer failed, retrying", "projection", r.Name(), "version", r.Version(),
			"topic", topic, "retry_in", wait, "error", err)
		if !sleep(ctx, wait) {
			return
		}
		wait = min(2*wait, m.cfg.RetryMax)
	}
}

// spawn runs fn in a goroutine that Run waits for, with Run's context. It
// reports false when Run is not running.
func (m *Manager) spawn(fn func(ctx context.Context)) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		return false
	}
	ctx := m.runCtx
	m.wg.Go(func() { fn(ctx) })
	return true
}

func (m *Manager) managed(name string) (*managed, error) {
	mp, ok := m.byName[name]
	if !ok {
		return nil, &UnknownProjectionError{Name: name, Known: m.Names()}
	}
	return mp, nil
}

// Advanced returns a channel closed the next time a version of projection
// commits in this process: a waiter for Reached takes it, asks Reached, and
// when not reached waits on it (and on a timer, for the commits of other
// processes sharing the file) before asking again. Nil, never closed, for
// a projection the Manager does not run.
func (m *Manager) Advanced(projection string) <-chan struct{} {
	mp, err := m.managed(projection)
	if err != nil {
		return nil
	}
	return mp.committed.Wait()
}

// UnknownProjectionError is returned for a projection name the Manager does
// not run.
type UnknownProjectionError struct {
	Name  string
	Known []string
}

func (e *UnknownProjectionError) Error() string {
	return fmt.Sprintf("no projection is named %q; the projections are %v", e.Name, e.Known)
}

// sleep waits d or until ctx is done; false when ctx is done.
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

// Reached reports whether the serving version of projection name has handled
// every position given, on the topics it consumes (positions on other topics
// are none of its business). It is how a query waits for the events of a
// command it is told to read after (read-your-writes).
func (m *Manager) Reached(ctx context.Context, name string, positions []Position) (bool, error) {
	mp, err := m.managed(name)
	if err != nil {
		return false, err
	}
	at, err := mp.servingPositions(ctx, m.db)
	if err != nil {
		return false, fmt.Errorf("compare positions of projection %s: %w", name, err)
	}
	topics := mp.p.Topics()
	for _, p := range positions {
		if !slices.Contains(topics, p.Topic) {
			continue
		}
		if o, ok := at[partitionKey{p.Topic, p.Partition}]; !ok || o < p.Offset {
			return false, nil
		}
	}
	return true, nil
}

// positionsMaxAge bounds how long Reached trusts positions it read from
// the file while this process committed nothing: the commits of other
// processes sharing it show up within that.
const positionsMaxAge = 5 * time.Millisecond

// positionCache holds the serving version's positions as last read, for
// the waiters of Reached: woken by every commit (Advanced), they would
// otherwise each read the file after each commit.
type positionCache struct {
	mu     sync.Mutex
	at     map[partitionKey]int64
	gen    uint64 // committed's generation when read
	readAt time.Time
}

// servingPositions returns the serving version's positions: as cached
// while no commit of this process came since and the cache is younger than
// positionsMaxAge, else read again (once, for every concurrent caller).
// The map is shared: read it, do not change it.
func (mp *managed) servingPositions(ctx context.Context, db *sql.DB) (map[partitionKey]int64, error) {
	c := &mp.positions
	c.mu.Lock()
	defer c.mu.Unlock()
	gen := mp.committed.Generation() // before reading: a commit meanwhile makes the next call read again
	if c.at != nil && c.gen == gen && time.Since(c.readAt) < positionsMaxAge {
		return c.at, nil
	}
	readAt := time.Now()
	var at map[partitionKey]int64
	err := Read(ctx, db, mp.p.Name(), func(tx *sql.Tx, v int) error {
		have, err := positionsOf(ctx, tx, mp.p.Name(), v)
		at = positionMap(have)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.at, c.gen, c.readAt = at, gen, readAt
	return at, nil
}

func positionMap(ps []Position) map[partitionKey]int64 {
	m := make(map[partitionKey]int64, len(ps))
	for _, p := range ps {
		m[partitionKey{p.Topic, p.Partition}] = p.Offset
	}
	return m
}
