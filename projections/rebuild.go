package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Rebuild states, as stored in projection_rebuilds and shown by Status.
const (
	// RebuildPreparing: the rebuild took the lock and is creating the new
	// version's tables and reading where the log starts.
	RebuildPreparing = "preparing"
	// RebuildBuilding: the new version consumes the log in its own consumer
	// groups while the old one serves.
	RebuildBuilding = "building"
	// RebuildRetiring: the new version serves; the old one's consumer
	// groups and tables are being removed.
	RebuildRetiring = "retiring"
	// RebuildDone, RebuildCancelled and RebuildFailed are final.
	RebuildDone      = "done"
	RebuildCancelled = "cancelled"
	RebuildFailed    = "failed"
)

// inProgress reports whether a rebuild in state holds the lock.
func inProgress(state string) bool {
	return state == RebuildPreparing || state == RebuildBuilding || state == RebuildRetiring
}

// From says where a rebuild starts reading. The zero From starts at the
// oldest record of every partition: the whole log.
type From struct {
	// Time starts every partition at its first record at or after Time.
	Time time.Time `json:"time,omitzero"`
	// Offsets start the partitions they name at the given offset (the
	// first record read); partitions not named start at their oldest
	// record.
	Offsets []Position `json:"offsets,omitempty"`
}

// String describes f as the rebuild's status shows it.
func (f From) String() string {
	switch {
	case !f.Time.IsZero():
		return "time " + f.Time.UTC().Format(time.RFC3339Nano)
	case len(f.Offsets) > 0:
		parts := make([]string, len(f.Offsets))
		for i, p := range f.Offsets {
			parts[i] = fmt.Sprintf("%s:%d=%d", p.Topic, p.Partition, p.Offset)
		}
		return "offsets " + strings.Join(parts, ",")
	default:
		return "start of the log"
	}
}

// RebuildInProgressError is returned by Rebuild while another rebuild of the
// same projection has not finished; the lock is in the database, so this
// holds across processes and restarts.
type RebuildInProgressError struct {
	Projection string
	Version    int
	State      string
	StartedAt  time.Time
}

func (e *RebuildInProgressError) Error() string {
	return fmt.Sprintf("projection %s is already being rebuilt: version %d has been %s since %s; "+
		"follow it with `millrace projections`, or cancel it with `millrace replay --projection %s --cancel`",
		e.Projection, e.Version, e.State, e.StartedAt.UTC().Format(time.RFC3339), e.Projection)
}

// ErrNoRebuild is wrapped by the error of CancelRebuild when no rebuild can
// be cancelled.
var ErrNoRebuild = errors.New("no rebuild to cancel")

// ErrBadFrom is wrapped by the error of Rebuild for a From that names
// topics or partitions the projection does not consume.
var ErrBadFrom = errors.New("bad rebuild start")

// build is a rebuild running in this process.
type build struct {
	version, replaces int
	runner            *Runner
	cancel            context.CancelFunc
	done              chan struct{}

	mu      sync.Mutex
	phase   string
	samples []sample
	lastErr string
}

// sample is how far a rebuild got at a time, for its rate.
type sample struct {
	at      time.Time
	applied int64
}

// stop cancels the rebuild's goroutine and waits for it.
func (b *build) stop() {
	b.cancel()
	<-b.done
}

func (b *build) setPhase(p string) {
	b.mu.Lock()
	b.phase = p
	b.mu.Unlock()
}

func (b *build) noteErr(err error) {
	b.mu.Lock()
	b.lastErr = err.Error()
	b.mu.Unlock()
}

// addSample keeps the samples of the last ten seconds.
func (b *build) addSample(s sample) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.samples = append(b.samples, s)
	cut := 0
	for cut < len(b.samples)-2 && s.at.Sub(b.samples[cut].at) > 10*time.Second {
		cut++
	}
	b.samples = b.samples[cut:]
}

// rate is events per second over the samples kept.
func (b *build) rate() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.samples) < 2 {
		return 0
	}
	first, last := b.samples[0], b.samples[len(b.samples)-1]
	secs := last.at.Sub(first.at).Seconds()
	if secs <= 0 {
		return 0
	}
	return float64(last.applied-first.applied) / secs
}

// Rebuild builds the next version of projection name from the log into new
// tables, while the current version keeps serving reads, and swaps it in:
//
//  1. It takes the projection's rebuild lock (a row in the database, so a
//     second Rebuild, in this process or another, is refused with a
//     *RebuildInProgressError), gets the next version number, creates that
//     version's tables and records where each partition starts (from) and
//     where the log ends now.
//  2. In the background, the new version consumes every topic of the
//     projection in its own consumer groups (GroupFor: derived from the
//     name and version, never chosen by hand), in batches, as a replay
//     (cloudevents.IsReplaying is true up to where the log ended at the
//     start). Its position is stored with every batch: a crash or restart
//     resumes from there, and the old version keeps serving meanwhile.
//  3. Once it is within CatchUpLag of the end of the log, the old version
//     stops consuming, the new one passes the old one's position on every
//     partition, and one transaction makes the new version the one that
//     serves. Queries read the active version in their own snapshot, so the
//     swap is atomic for them and never goes back in time.
//  4. The new version goes on consuming live, and the old one retires: its
//     consumer groups are deleted and its tables dropped.
//
// Rebuild returns once step 1 is done, with the projection's status; Status
// follows the rest. The Manager must be running.
func (m *Manager) Rebuild(ctx context.Context, name string, from From) (Status, error) {
	mp, err := m.managed(name)
	if err != nil {
		return Status{}, err
	}
	if err := checkFrom(mp.p, from); err != nil {
		return Status{}, fmt.Errorf("rebuild projection %s: %w", name, err)
	}
	m.mu.Lock()
	running := m.running
	m.mu.Unlock()
	if !running {
		return Status{}, fmt.Errorf("rebuild projection %s: the projection manager is not running", name)
	}

	version, replaces, err := m.lock(ctx, name, from)
	if err != nil {
		return Status{}, err
	}
	m.logger.InfoContext(ctx, "projection rebuild started", "projection", name, "version", version,
		"replaces", replaces, "from", from.String())
	if err := m.prepare(ctx, mp, version, replaces, from); err != nil {
		ferr := m.abandon(context.WithoutCancel(ctx), name, version, RebuildFailed, err.Error())
		return Status{}, errors.Join(fmt.Errorf("rebuild projection %s: %w", name, err), ferr)
	}
	if err := m.startBuild(ctx, mp, version, replaces); err != nil {
		return Status{}, fmt.Errorf("rebuild projection %s: %w", name, err)
	}
	return m.Status(ctx, name)
}

// checkFrom refuses offsets on topics the projection does not consume.
func checkFrom(p Projection, from From) error {
	if !from.Time.IsZero() && len(from.Offsets) > 0 {
		return fmt.Errorf("%w: give a time or offsets, not both", ErrBadFrom)
	}
	for _, o := range from.Offsets {
		if !slices.Contains(p.Topics(), o.Topic) {
			return fmt.Errorf("%w: projection %s does not consume topic %q; it consumes %s",
				ErrBadFrom, p.Name(), o.Topic, strings.Join(p.Topics(), ", "))
		}
		if o.Partition < 0 || o.Offset < 0 {
			return fmt.Errorf("%w: %s:%d=%d: partition and offset must be at least 0", ErrBadFrom, o.Topic, o.Partition, o.Offset)
		}
	}
	return nil
}

// lock takes the rebuild lock of a projection and hands out the next version.
func (m *Manager) lock(ctx context.Context, name string, from From) (version, replaces int, err error) {
	spec, err := json.Marshal(from)
	if err != nil {
		return 0, 0, fmt.Errorf("rebuild projection %s: encode start: %w", name, err)
	}
	tx, err := m.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("rebuild projection %s: begin: %w", name, err)
	}
	defer rollback(tx)

	var (
		state   string
		current int
		started int64
	)
	err = tx.QueryRowContext(ctx, `SELECT state, version, started_at FROM projection_rebuilds WHERE projection = ?`, name).
		Scan(&state, &current, &started)
	switch {
	case err == nil && inProgress(state):
		return 0, 0, &RebuildInProgressError{Projection: name, Version: current, State: state, StartedAt: time.Unix(0, started)}
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return 0, 0, fmt.Errorf("rebuild projection %s: read rebuild lock: %w", name, err)
	}
	var next int
	if err := tx.QueryRowContext(ctx, `SELECT active, next FROM projection_versions WHERE projection = ?`, name).Scan(&replaces, &next); err != nil {
		return 0, 0, fmt.Errorf("rebuild projection %s: read versions: %w", name, err)
	}
	if _, err := tx.ExecContext(ctx, `
INSERT INTO projection_rebuilds (projection, version, replaces, state, from_spec, started_at) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (projection) DO UPDATE SET version = excluded.version, replaces = excluded.replaces, state = excluded.state,
	from_spec = excluded.from_spec, started_at = excluded.started_at, swapped_at = 0, finished_at = 0, error = ''`,
		name, next, replaces, RebuildPreparing, string(spec), time.Now().UnixNano()); err != nil {
		return 0, 0, fmt.Errorf("rebuild projection %s: take rebuild lock: %w", name, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE projection_versions SET next = next + 1 WHERE projection = ?`, name); err != nil {
		return 0, 0, fmt.Errorf("rebuild projection %s: hand out version: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, fmt.Errorf("rebuild projection %s: take rebuild lock: %w", name, err)
	}
	return next, replaces, nil
}

// prepare creates the tables of the new version, carries over what the log
// does not hold, and records where each partition starts and where the log
// ends. It is idempotent: a rebuild found preparing after a crash runs it
// again.
func (m *Manager) prepare(ctx context.Context, mp *managed, version, replaces int, from From) error {
	name, topics := mp.p.Name(), mp.p.Topics()
	starts, err := m.cfg.Offsets.StartOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("read where the log starts: %w", err)
	}
	ends, err := m.cfg.Offsets.EndOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("read where the log ends: %w", err)
	}
	switch {
	case !from.Time.IsZero():
		at, err := m.cfg.Offsets.OffsetsAt(ctx, from.Time, topics...)
		if err != nil {
			return fmt.Errorf("read offsets at %s: %w", from.Time.UTC().Format(time.RFC3339), err)
		}
		for t, ps := range at {
			for p, o := range ps {
				if _, ok := starts[t][p]; ok && o >= 0 {
					starts[t][p] = o
				}
			}
		}
	case len(from.Offsets) > 0:
		for _, o := range from.Offsets {
			if _, ok := ends[o.Topic][o.Partition]; !ok {
				return fmt.Errorf("%w: topic %s has no partition %d", ErrBadFrom, o.Topic, o.Partition)
			}
			starts[o.Topic][o.Partition] = max(o.Offset, starts[o.Topic][o.Partition])
		}
	}

	tx, err := m.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("prepare version %d: begin: %w", version, err)
	}
	defer rollback(tx)
	if err := setupVersion(ctx, tx, mp.p, version); err != nil {
		return err
	}
	if c, ok := mp.p.(Carrier); ok {
		if err := c.CarryOver(ctx, newTx(tx, name, version, nil), replaces); err != nil {
			return fmt.Errorf("prepare version %d: %w", version, err)
		}
	}
	for _, t := range slices.Sorted(maps.Keys(ends)) {
		for _, p := range slices.Sorted(maps.Keys(ends[t])) {
			end := ends[t][p]
			start := min(starts[t][p], end)
			if _, err := tx.ExecContext(ctx, `
INSERT INTO projection_rebuild_partitions (projection, version, topic, "partition", start_offset, replay_until) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (projection, version, topic, "partition") DO NOTHING`, name, version, t, p, start, end); err != nil {
				return fmt.Errorf("prepare version %d: record start of %s/%d: %w", version, t, p, err)
			}
			// The position before the first record to read: the
			// consumer resumes one past it.
			if _, err := tx.ExecContext(ctx, `
INSERT INTO projection_positions (projection, version, topic, "partition", "offset") VALUES (?, ?, ?, ?, ?)
ON CONFLICT (projection, version, topic, "partition") DO NOTHING`, name, version, t, p, start-1); err != nil {
				return fmt.Errorf("prepare version %d: record start of %s/%d: %w", version, t, p, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE projection_versions SET building = ? WHERE projection = ?`, version, name); err != nil {
		return fmt.Errorf("prepare version %d: %w", version, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE projection_rebuilds SET state = ? WHERE projection = ? AND version = ?`,
		RebuildBuilding, name, version); err != nil {
		return fmt.Errorf("prepare version %d: %w", version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("prepare version %d: commit: %w", version, err)
	}
	return nil
}

// abandon ends a rebuild that will not finish: it drops what the new version
// built, releases the lock with a final state and deletes the new version's
// consumer groups.
func (m *Manager) abandon(ctx context.Context, name string, version int, state, reason string) error {
	mp, err := m.managed(name)
	if err != nil {
		return err
	}
	tx, err := m.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("abandon rebuild of %s v%d: begin: %w", name, version, err)
	}
	defer rollback(tx)
	if err := dropVersion(ctx, tx, name, version); err != nil {
		return fmt.Errorf("abandon rebuild: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE projection_versions SET building = NULL WHERE projection = ? AND building = ?`, name, version); err != nil {
		return fmt.Errorf("abandon rebuild of %s v%d: %w", name, version, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE projection_rebuilds SET state = ?, finished_at = ?, error = ? WHERE projection = ? AND version = ?`,
		state, time.Now().UnixNano(), reason, name, version); err != nil {
		return fmt.Errorf("abandon rebuild of %s v%d: %w", name, version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("abandon rebuild of %s v%d: commit: %w", name, version, err)
	}
	return m.deleteGroups(ctx, name, version, mp.p.Topics())
}

// deleteGroups deletes the consumer groups of one version, retrying for a
// while when their members are still leaving.
func (m *Manager) deleteGroups(ctx context.Context, name string, version int, topics []string) error {
	groups := make([]string, len(topics))
	for i, t := range topics {
		groups[i] = GroupFor(name, version, t)
	}
	deadline := time.Now().Add(m.cfg.SwapTimeout)
	wait := m.cfg.RetryMin
	for {
		err := m.cfg.Groups.DeleteGroups(ctx, groups...)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || !sleep(ctx, wait) {
			return fmt.Errorf("delete consumer groups of %s v%d: %w", name, version, err)
		}
		wait = min(2*wait, m.cfg.RetryMax)
	}
}

// startBuild runs the building version in the background.
func (m *Manager) startBuild(ctx context.Context, mp *managed, version, replaces int) error {
	name := mp.p.Name()
	rows, err := m.db.QueryContext(ctx, `SELECT topic, "partition", replay_until FROM projection_rebuild_partitions WHERE projection = ? AND version = ?`, name, version)
	if err != nil {
		return fmt.Errorf("read rebuild partitions: %w", err)
	}
	until := map[partitionKey]int64{}
	for rows.Next() {
		var (
			k partitionKey
			o int64
		)
		if err := rows.Scan(&k.topic, &k.partition, &o); err != nil {
			rows.Close()
			return fmt.Errorf("read rebuild partitions: %w", err)
		}
		until[k] = o
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read rebuild partitions: %w", err)
	}
	r, err := openRunner(ctx, m.db, mp.p, version, runnerOptions{logger: m.logger, replayUntil: until, skipMalformed: true, writeMu: &m.writeMu, committed: mp.committed})
	if err != nil {
		return err
	}
	m.onRunner(r)

	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		_ = r.Close()
		return errors.New("the projection manager is not running")
	}
	bctx, cancel := context.WithCancel(m.runCtx)
	b := &build{version: version, replaces: replaces, runner: r, cancel: cancel, done: make(chan struct{}), phase: RebuildBuilding}
	mp.mu.Lock()
	mp.build = b
	mp.mu.Unlock()
	runCtx := m.runCtx
	m.wg.Go(func() {
		defer close(b.done)
		m.runBuild(bctx, runCtx, mp, b)
	})
	return nil
}

// resume carries on with a rebuild a previous run left unfinished.
func (m *Manager) resume(ctx context.Context, mp *managed) error {
	name := mp.p.Name()
	var (
		version, replaces int
		state, spec       string
	)
	err := m.db.QueryRowContext(ctx, `SELECT version, replaces, state, from_spec FROM projection_rebuilds WHERE projection = ?`, name).
		Scan(&version, &replaces, &state, &spec)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read rebuild: %w", err)
	}
	switch state {
	case RebuildPreparing:
		var from From
		if err := json.Unmarshal([]byte(spec), &from); err != nil {
			return fmt.Errorf("read rebuild start %q: %w", spec, err)
		}
		if err := m.prepare(ctx, mp, version, replaces, from); err != nil {
			return err
		}
	case RebuildBuilding:
		// Bring the tables up to what this build's code reads.
		tx, err := m.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("set up version %d: %w", version, err)
		}
		defer rollback(tx)
		if err := setupVersion(ctx, tx, mp.p, version); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("set up version %d: %w", version, err)
		}
	case RebuildRetiring:
		m.logger.InfoContext(ctx, "projection rebuild resumed: retiring the old version", "projection", name, "version", replaces)
		m.spawn(func(ctx context.Context) {
			if err := m.retire(ctx, mp, version, replaces); err != nil && ctx.Err() == nil {
				m.logger.ErrorContext(ctx, "retire old projection version", "projection", name, "version", replaces, "error", err)
			}
		})
		return nil
	default:
		return nil
	}
	m.logger.InfoContext(ctx, "projection rebuild resumed", "projection", name, "version", version)
	return m.startBuild(ctx, mp, version, replaces)
}

// runBuild consumes for the new version until it can be swapped in, swaps,
// hands live consumption over and retires the old version.
func (m *Manager) runBuild(ctx, runCtx context.Context, mp *managed, b *build) {
	name := mp.p.Name()
	consumers, stopConsumers := context.WithCancel(ctx)
	var cwg sync.WaitGroup
	for _, topic := range b.runner.Topics() {
		cwg.Go(func() { m.consume(consumers, b.runner, topic) })
	}
	stop := func() {
		stopConsumers()
		cwg.Wait()
	}
	defer stop()

	tick := time.NewTicker(m.cfg.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p, err := m.buildProgress(ctx, name, b.version)
		if err != nil {
			if ctx.Err() == nil {
				b.noteErr(err)
			}
			continue
		}
		b.addSample(sample{at: time.Now(), applied: p.applied})
		b.mu.Lock()
		b.lastErr = ""
		b.mu.Unlock()
		if p.lag > m.cfg.CatchUpLag {
			continue
		}
		swapped, err := m.swap(ctx, runCtx, mp, b)
		if err != nil && ctx.Err() == nil {
			b.noteErr(err)
			m.logger.WarnContext(ctx, "projection swap postponed", "projection", name, "version", b.version, "error", err)
		}
		if !swapped {
			continue
		}
		stop()
		// Swapped: a cancel can no longer undo it, so the handover runs
		// for as long as the Manager does, not the rebuild.
		m.handover(runCtx, mp, b)
		return
	}
}

// progress is how far a building version got.
type progress struct {
	applied, total, lag int64
}

func (m *Manager) buildProgress(ctx context.Context, name string, version int) (progress, error) {
	mp, err := m.managed(name)
	if err != nil {
		return progress{}, err
	}
	ends, err := m.cfg.Offsets.EndOffsets(ctx, mp.p.Topics()...)
	if err != nil {
		return progress{}, fmt.Errorf("read where the log ends: %w", err)
	}
	rows, err := m.db.QueryContext(ctx, `SELECT topic, "partition", start_offset FROM projection_rebuild_partitions WHERE projection = ? AND version = ?`, name, version)
	if err != nil {
		return progress{}, fmt.Errorf("read rebuild partitions: %w", err)
	}
	starts := map[partitionKey]int64{}
	for rows.Next() {
		var (
			k partitionKey
			o int64
		)
		if err := rows.Scan(&k.topic, &k.partition, &o); err != nil {
			rows.Close()
			return progress{}, fmt.Errorf("read rebuild partitions: %w", err)
		}
		starts[k] = o
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return progress{}, fmt.Errorf("read rebuild partitions: %w", err)
	}
	positions, err := positionsOf(ctx, m.db, name, version)
	if err != nil {
		return progress{}, err
	}
	at := positionMap(positions)
	var p progress
	for t, parts := range ends {
		for part, end := range parts {
			k := partitionKey{t, part}
			start := starts[k] // a partition added since the start: from 0
			next := start
			if o, ok := at[k]; ok {
				next = max(o+1, start)
			}
			p.applied += max(next-start, 0)
			p.total += max(end-start, 0)
			p.lag += max(end-next, 0)
		}
	}
	return p, nil
}

// swap stops the old version, waits for the new one to pass it and makes
// the new one active. When the new one does not pass in time, the old one
// resumes and swap reports false.
func (m *Manager) swap(ctx, runCtx context.Context, mp *managed, b *build) (bool, error) {
	name := mp.p.Name()
	b.setPhase("swapping")
	defer b.setPhase(RebuildBuilding)
	mp.mu.Lock()
	stopOld, old := mp.stopLive, mp.live
	mp.stopLive = nil
	mp.mu.Unlock()
	restart := func() error {
		if runCtx.Err() != nil {
			return nil // shutting down: nothing to restart
		}
		s, err := m.startLive(runCtx, old)
		mp.mu.Lock()
		mp.stopLive = s
		mp.mu.Unlock()
		if err != nil {
			return fmt.Errorf("restart version %d: %w", old.Version(), err)
		}
		return nil
	}
	if stopOld != nil {
		if err := stopOld(ctx); err != nil {
			return false, errors.Join(fmt.Errorf("stop version %d: %w", b.replaces, err), restart())
		}
	}

	deadline := time.Now().Add(m.cfg.SwapTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		passed, err := m.passed(ctx, m.db, name, b.version, b.replaces)
		if err == nil && passed {
			break
		}
		if err == nil && time.Now().After(deadline) {
			err = fmt.Errorf("version %d did not pass version %d within %s", b.version, b.replaces, m.cfg.SwapTimeout)
		}
		if err != nil || ctx.Err() != nil {
			return false, errors.Join(err, restart())
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}

	if err := m.commitSwap(ctx, name, b.version, b.replaces); err != nil {
		return false, errors.Join(err, restart())
	}
	m.logger.InfoContext(ctx, "projection swapped", "projection", name, "version", b.version, "replaces", b.replaces)
	return true, nil
}

// passed reports whether version has reached at least the position of
// old on every partition old has one on.
func (m *Manager) passed(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, name string, version, old int) (bool, error) {
	olds, err := positionsOf(ctx, q, name, old)
	if err != nil {
		return false, err
	}
	news, err := positionsOf(ctx, q, name, version)
	if err != nil {
		return false, err
	}
	at := positionMap(news)
	for _, o := range olds {
		if n, ok := at[partitionKey{o.Topic, o.Partition}]; !ok || n < o.Offset {
			return false, nil
		}
	}
	return true, nil
}

// commitSwap makes version the active one, in one transaction that checks
// again that it passed the old one.
func (m *Manager) commitSwap(ctx context.Context, name string, version, old int) error {
	tx, err := m.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("swap in version %d: begin: %w", version, err)
	}
	defer rollback(tx)
	passed, err := m.passed(ctx, tx, name, version, old)
	if err != nil {
		return fmt.Errorf("swap in version %d: %w", version, err)
	}
	if !passed {
		return fmt.Errorf("swap in version %d: it fell behind version %d", version, old)
	}
	res, err := tx.ExecContext(ctx, `UPDATE projection_versions SET active = ?, building = NULL WHERE projection = ? AND active = ?`, version, name, old)
	if err != nil {
		return fmt.Errorf("swap in version %d: %w", version, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("swap in version %d: version %d is no longer the active one", version, old)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE projection_rebuilds SET state = ?, swapped_at = ? WHERE projection = ? AND version = ?`,
		RebuildRetiring, time.Now().UnixNano(), name, version); err != nil {
		return fmt.Errorf("swap in version %d: %w", version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("swap in version %d: commit: %w", version, err)
	}
	return nil
}

// handover makes the swapped-in version consume live, from exactly where its
// rebuild stopped, and retires the old version.
func (m *Manager) handover(ctx context.Context, mp *managed, b *build) {
	name := mp.p.Name()
	b.setPhase(RebuildRetiring)
	// The live consumer reads from the committed offsets of the new
	// version's groups: set them to one past the stored positions, so it
	// neither skips nor (much) repeats.
	if err := m.commitPositions(ctx, name, b.version, mp.p.Topics()); err != nil && ctx.Err() == nil {
		m.logger.WarnContext(ctx, "commit offsets of the new projection version", "projection", name, "version", b.version, "error", err)
	}
	wait := m.cfg.RetryMin
	for {
		stop, err := m.startLive(ctx, b.runner)
		if err == nil {
			mp.mu.Lock()
			mp.stopLive = stop
			old := mp.live
			mp.live = b.runner
			mp.mu.Unlock()
			mp.committed.Broadcast() // another version serves: Reached's waiters look again
			defer func() { _ = old.Close() }()
			break
		}
		b.noteErr(fmt.Errorf("start version %d live: %w", b.version, err))
		m.logger.ErrorContext(ctx, "start swapped-in projection version", "projection", name, "version", b.version, "error", err)
		if !sleep(ctx, wait) {
			return // the next run starts it and finishes retiring
		}
		wait = min(2*wait, m.cfg.RetryMax)
	}
	if err := m.retire(ctx, mp, b.version, b.replaces); err != nil && ctx.Err() == nil {
		b.noteErr(err)
		m.logger.ErrorContext(ctx, "retire old projection version", "projection", name, "version", b.replaces, "error", err)
		return
	}
	mp.mu.Lock()
	if mp.build == b {
		mp.build = nil
	}
	mp.mu.Unlock()
}

// commitPositions commits, for each topic's group of version, one past the
// stored positions.
func (m *Manager) commitPositions(ctx context.Context, name string, version int, topics []string) error {
	positions, err := positionsOf(ctx, m.db, name, version)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range topics {
		offsets := map[string]map[int32]int64{t: {}}
		for _, p := range positions {
			if p.Topic == t && p.Offset >= 0 {
				offsets[t][p.Partition] = p.Offset + 1
			}
		}
		if len(offsets[t]) == 0 {
			continue
		}
		group := GroupFor(name, version, t)
		deadline := time.Now().Add(m.cfg.SwapTimeout)
		wait := m.cfg.RetryMin
		for {
			err := m.cfg.Groups.CommitGroupOffsets(ctx, group, offsets)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || !sleep(ctx, wait) {
				errs = append(errs, fmt.Errorf("commit offsets of %s: %w", group, err))
				break
			}
			wait = min(2*wait, m.cfg.RetryMax)
		}
	}
	return errors.Join(errs...)
}

// retire removes an old version: consumer groups, tables, positions, ids;
// then the rebuild is done.
func (m *Manager) retire(ctx context.Context, mp *managed, version, old int) error {
	name := mp.p.Name()
	groupErr := m.deleteGroups(ctx, name, old, mp.p.Topics())
	if groupErr != nil && ctx.Err() != nil {
		return groupErr
	}
	tx, err := m.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("retire %s v%d: begin: %w", name, old, err)
	}
	defer rollback(tx)
	if err := dropVersion(ctx, tx, name, old); err != nil {
		return fmt.Errorf("retire: %w", err)
	}
	note := ""
	if groupErr != nil {
		note = groupErr.Error() + "; delete them by hand once their members are gone"
	}
	if _, err := tx.ExecContext(ctx, `UPDATE projection_rebuilds SET state = ?, finished_at = ?, error = ? WHERE projection = ? AND version = ?`,
		RebuildDone, time.Now().UnixNano(), note, name, version); err != nil {
		return fmt.Errorf("retire %s v%d: %w", name, old, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("retire %s v%d: commit: %w", name, old, err)
	}
	m.logger.InfoContext(ctx, "projection version retired", "projection", name, "version", old, "active", version)
	return nil
}

// CancelRebuild stops the rebuild of projection name before it is swapped
// in, drops what it built and releases the lock; the active version is
// untouched. It fails (wrapping ErrNoRebuild) when no rebuild is under way,
// or when the new version was already swapped in.
func (m *Manager) CancelRebuild(ctx context.Context, name string) (Status, error) {
	mp, err := m.managed(name)
	if err != nil {
		return Status{}, err
	}
	mp.mu.Lock()
	b := mp.build
	mp.mu.Unlock()
	if b != nil {
		b.stop()
	}

	var (
		version int
		state   string
	)
	err = m.db.QueryRowContext(ctx, `SELECT version, state FROM projection_rebuilds WHERE projection = ?`, name).Scan(&version, &state)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Status{}, fmt.Errorf("cancel rebuild of %s: %w: it was never rebuilt", name, ErrNoRebuild)
	case err != nil:
		return Status{}, fmt.Errorf("cancel rebuild of %s: %w", name, err)
	case state == RebuildRetiring:
		return Status{}, fmt.Errorf("cancel rebuild of %s: %w: version %d was already swapped in", name, ErrNoRebuild, version)
	case !inProgress(state):
		return Status{}, fmt.Errorf("cancel rebuild of %s: %w: the last rebuild (version %d) is %s", name, ErrNoRebuild, version, state)
	}
	if err := m.abandon(ctx, name, version, RebuildCancelled, ""); err != nil {
		return Status{}, fmt.Errorf("cancel rebuild of %s: %w", name, err)
	}
	mp.mu.Lock()
	if mp.build == b && b != nil {
		mp.build = nil
		_ = b.runner.Close()
	}
	mp.mu.Unlock()
	m.logger.InfoContext(ctx, "projection rebuild cancelled", "projection", name, "version", version)
	return m.Status(ctx, name)
}
