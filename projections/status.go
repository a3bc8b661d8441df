package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// States of a projection, as Status reports them.
const (
	// StateLive: the active version consumes and applies as events arrive.
	StateLive = "live"
	// StateRebuilding: a new version is being built (or the old one
	// retired) while the active one serves.
	StateRebuilding = "rebuilding"
	// StateFailed: the active version's latest attempt to apply failed; it
	// is being retried (see LastError).
	StateFailed = "failed"
)

// Status is what a projection is doing: its version serving reads, how far
// it got, and the rebuild under way or last finished.
type Status struct {
	Name string `json:"name"`
	// Version is the active version: the one queries read.
	Version int `json:"version"`
	// State is StateLive, StateRebuilding or StateFailed.
	State string `json:"state"`
	// Positions are the active version's positions with the end of each
	// partition, ordered by topic and partition.
	Positions []PartitionStatus `json:"positions"`
	// Lag is how many messages the active version has still to handle,
	// summed over partitions; -1 when the end of the log could not be read.
	Lag int64 `json:"lag"`
	// LastError is the latest failure of the active version, also after it
	// recovered; LastErrorAt when it happened.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// Rebuild is the current or the last rebuild; nil when there was none.
	Rebuild *RebuildStatus `json:"rebuild,omitempty"`
}

// PartitionStatus is the position of a version on one partition.
type PartitionStatus struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Offset is the last message handled, -1 for none.
	Offset int64 `json:"offset"`
	// End is the offset the next message written will get; Lag is End
	// minus the next offset to handle.
	End int64 `json:"end"`
	Lag int64 `json:"lag"`
}

// RebuildStatus is the progress of a rebuild.
type RebuildStatus struct {
	// Version is the version being built; Replaces the one it replaces.
	Version  int `json:"version"`
	Replaces int `json:"replaces"`
	// State is one of the Rebuild… constants; Phase, while building, says
	// "swapping" when the swap is under way.
	State string `json:"state"`
	Phase string `json:"phase,omitempty"`
	// From is where it started reading.
	From       string     `json:"from"`
	StartedAt  time.Time  `json:"started_at"`
	SwappedAt  *time.Time `json:"swapped_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Applied is how many messages the new version has handled since its
	// start, of Total from its start to the end of the log now (the end
	// moves while writes go on); Lag is what is left.
	Applied int64 `json:"applied"`
	Total   int64 `json:"total"`
	Lag     int64 `json:"lag"`
	// Rate is messages handled per second over the last seconds, and ETA
	// the time left at that rate; both known while building in this process.
	Rate       float64 `json:"rate"`
	ETASeconds float64 `json:"eta_seconds"`
	// Skipped counts malformed events left out (the live version sent them
	// to the poison queue when it met them).
	Skipped int64 `json:"skipped"`
	// Error is the latest failure (it is retried) or the reason a rebuild
	// failed.
	Error string `json:"error,omitempty"`
}

// InProgress reports whether the rebuild has not finished.
func (r *RebuildStatus) InProgress() bool { return r != nil && inProgress(r.State) }

// Statuses returns the status of every projection, by name.
func (m *Manager) Statuses(ctx context.Context) ([]Status, error) {
	out := make([]Status, 0, len(m.names))
	for _, name := range m.names {
		s, err := m.Status(ctx, name)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Status returns the status of projection name. A broker that cannot be
// reached leaves the lags at -1 rather than failing.
func (m *Manager) Status(ctx context.Context, name string) (Status, error) {
	mp, err := m.managed(name)
	if err != nil {
		return Status{}, err
	}
	active, _, err := VersionsOf(ctx, m.db, name)
	if err != nil {
		return Status{}, err
	}
	s := Status{Name: name, Version: active, State: StateLive, Positions: []PartitionStatus{}}

	mp.mu.Lock()
	live, b := mp.live, mp.build
	mp.mu.Unlock()
	if live != nil && live.Version() == active {
		h := live.health()
		if h.failing {
			s.State = StateFailed
		}
		if h.lastErr != "" {
			s.LastError = h.lastErr
			at := h.lastErrAt
			s.LastErrorAt = &at
		}
	}

	positions, err := positionsOf(ctx, m.db, name, active)
	if err != nil {
		return Status{}, err
	}
	at := positionMap(positions)
	ends, endErr := m.cfg.Offsets.EndOffsets(ctx, mp.p.Topics()...)
	if endErr != nil {
		s.Lag = -1
		for _, p := range positions {
			s.Positions = append(s.Positions, PartitionStatus{Topic: p.Topic, Partition: p.Partition, Offset: p.Offset, End: -1, Lag: -1})
		}
	} else {
		for _, t := range slices.Sorted(maps.Keys(ends)) {
			for _, part := range slices.Sorted(maps.Keys(ends[t])) {
				ps := PartitionStatus{Topic: t, Partition: part, Offset: -1, End: ends[t][part]}
				if o, ok := at[partitionKey{t, part}]; ok {
					ps.Offset = o
				}
				ps.Lag = max(ps.End-(ps.Offset+1), 0)
				s.Lag += ps.Lag
				s.Positions = append(s.Positions, ps)
			}
		}
	}

	rs, err := m.rebuildStatus(ctx, name, b)
	if err != nil {
		return Status{}, err
	}
	s.Rebuild = rs
	if rs.InProgress() && s.State == StateLive {
		s.State = StateRebuilding
	}
	return s, nil
}

// rebuildStatus reads the current or last rebuild; nil when none.
func (m *Manager) rebuildStatus(ctx context.Context, name string, b *build) (*RebuildStatus, error) {
	var (
		rs                         RebuildStatus
		spec                       string
		started, swapped, finished int64
	)
	err := m.db.QueryRowContext(ctx, `
SELECT version, replaces, state, from_spec, started_at, swapped_at, finished_at, error
FROM projection_rebuilds WHERE projection = ?`, name).Scan(
		&rs.Version, &rs.Replaces, &rs.State, &spec, &started, &swapped, &finished, &rs.Error)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rebuild of projection %s: %w", name, err)
	}
	var from From
	if err := json.Unmarshal([]byte(spec), &from); err == nil {
		rs.From = from.String()
	}
	rs.StartedAt = time.Unix(0, started).UTC()
	if swapped != 0 {
		t := time.Unix(0, swapped).UTC()
		rs.SwappedAt = &t
	}
	if finished != 0 {
		t := time.Unix(0, finished).UTC()
		rs.FinishedAt = &t
	}

	if b != nil && b.version == rs.Version {
		b.mu.Lock()
		if b.phase != rs.State {
			rs.Phase = b.phase
		}
		if b.lastErr != "" && rs.Error == "" {
			rs.Error = b.lastErr
		}
		b.mu.Unlock()
		h := b.runner.health()
		rs.Skipped = h.skipped
		if h.failing && rs.Error == "" {
			rs.Error = h.lastErr
		}
		rs.Rate = b.rate()
	}
	if rs.State == RebuildPreparing || rs.State == RebuildBuilding {
		p, err := m.buildProgress(ctx, name, rs.Version)
		if err == nil {
			rs.Applied, rs.Total, rs.Lag = p.applied, p.total, p.lag
			if rs.Rate > 0 {
				rs.ETASeconds = float64(p.lag) / rs.Rate
			}
		} else if rs.Error == "" {
			rs.Error = err.Error()
		}
	}
	return &rs, nil
}
