package scheduler

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// ErrConflict is returned by Store.Save when the job's record changed since
// it was loaded: load it again and redo the change.
var ErrConflict = errors.New("the job's record changed concurrently")

// Store keeps one record per job, the scheduler's durable memory: what was
// fired, what is open, what waits. Every change is a compare-and-set on
// the version Load returned, so that two instances (a leader and a deposed
// one that has not noticed yet, or an instance taking a manual trigger)
// never overwrite each other's change. Implementations are safe for
// concurrent use.
type Store interface {
	// Load returns the job's record and its version; a job never saved
	// has the zero State and version 0.
	Load(ctx context.Context, job string) (State, uint64, error)
	// Save writes the job's record if its version is still version (0:
	// if it does not exist yet), else returns an error wrapping
	// ErrConflict.
	Save(ctx context.Context, job string, s State, version uint64) error
}

// State is a job's record in the Store.
type State struct {
	// Last is the latest scheduled time handled: fired, queued or
	// skipped. The times due after it are what a leader fires next.
	Last time.Time `json:"last,omitzero"`
	// Disabled is set while the job is disabled: the times that pass then
	// are not misfires when it is enabled again.
	Disabled bool `json:"disabled,omitempty"`
	// Open are the runs fired and not finished, in the order they fired.
	Open []OpenRun `json:"open,omitempty"`
	// Queue are the due times waiting for the open runs to finish (block
	// strategy queue, and the catch-up of misfire policy fire_all).
	Queue []Queued `json:"queue,omitempty"`
	// Requests are manual triggers not yet fired.
	Requests []Request `json:"requests,omitempty"`
	// Handled are the ids of the latest manual requests fired (at most
	// maxHandled), so that a request sent again is the same run.
	Handled []string `json:"handled,omitempty"`
}

// maxHandled is how many manual request ids a job's record remembers.
const maxHandled = 100

// OpenRun is a run that fired and has not finished.
type OpenRun struct {
	RunID     string    `json:"run_id"`
	Trigger   string    `json:"trigger"`
	Scheduled time.Time `json:"scheduled"`
	// FiredAt is when the first attempt was published.
	FiredAt time.Time `json:"fired_at"`
	// Attempt is the attempt under way (1 for the first), CommandID its
	// command's id and AttemptAt when it was published.
	Attempt   int       `json:"attempt"`
	CommandID string    `json:"command_id"`
	AttemptAt time.Time `json:"attempt_at"`
	// RequestID is the manual trigger's request, for a run triggered by
	// hand.
	RequestID string `json:"request_id,omitempty"`
	// CommandType and Payload are the command, so that a new leader
	// publishes exactly what the old one did.
	CommandType string          `json:"command_type"`
	Payload     json.RawMessage `json:"payload"`
}

// Queued is a due time waiting for the job's open runs to finish.
type Queued struct {
	Scheduled time.Time `json:"scheduled"`
	Trigger   string    `json:"trigger"`
	// RequestID is the manual trigger's request, for a run triggered by
	// hand.
	RequestID string `json:"request_id,omitempty"`
}

// Request is a manual trigger waiting to be fired by the leader.
type Request struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
	// By names who asked, for the run's record.
	By string `json:"by,omitempty"`
}

// SQLiteStore keeps the records in a SQLite table, scheduler_jobs: for a
// scheduler that runs in one process (millrace dev, with leader.Local).
type SQLiteStore struct {
	db *sql.DB
}

// NewSQLiteStore creates the table if needed. It does not own db.
func NewSQLiteStore(ctx context.Context, db *sql.DB) (*SQLiteStore, error) {
	if _, err := db.ExecContext(ctx, `
CREATE TABLE IF NOT EXISTS scheduler_jobs (
	job        TEXT PRIMARY KEY,
	version    INTEGER NOT NULL,
	state      TEXT    NOT NULL,
	updated_at TEXT    NOT NULL
) WITHOUT ROWID`); err != nil {
		return nil, fmt.Errorf("create scheduler store table: %w", err)
	}
	return &SQLiteStore{db: db}, nil
}

// Load implements Store.
func (s *SQLiteStore) Load(ctx context.Context, job string) (State, uint64, error) {
	var (
		version int64
		data    string
	)
	err := s.db.QueryRowContext(ctx, `SELECT version, state FROM scheduler_jobs WHERE job = ?`, job).Scan(&version, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return State{}, 0, nil
	}
	if err != nil {
		return State{}, 0, fmt.Errorf("load the record of job %s: %w", job, err)
	}
	var st State
	if err := json.Unmarshal([]byte(data), &st); err != nil {
		return State{}, 0, fmt.Errorf("decode the record of job %s: %w", job, err)
	}
	return st, uint64(version), nil
}

// Save implements Store.
func (s *SQLiteStore) Save(ctx context.Context, job string, st State, version uint64) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode the record of job %s: %w", job, err)
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	var res sql.Result
	if version == 0 {
		res, err = s.db.ExecContext(ctx, `INSERT INTO scheduler_jobs (job, version, state, updated_at) VALUES (?, 1, ?, ?)
			ON CONFLICT (job) DO NOTHING`, job, string(data), now)
	} else {
		res, err = s.db.ExecContext(ctx, `UPDATE scheduler_jobs SET version = version + 1, state = ?, updated_at = ?
			WHERE job = ? AND version = ?`, string(data), now, job, int64(version))
	}
	if err != nil {
		return fmt.Errorf("save the record of job %s: %w", job, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("save the record of job %s: %w", job, err)
	}
	if n != 1 {
		return fmt.Errorf("save the record of job %s at version %d: %w", job, version, ErrConflict)
	}
	return nil
}

// ConsulStore keeps the records in Consul KV, one key per job under a
// prefix, changed with check-and-set on the key's modify index: for
// schedulers on many machines, beside platform/consul's LeaderLock.
type ConsulStore struct {
	kv     *api.KV
	prefix string
}

// NewConsulStore returns a store under prefix, e.g.
// "millrace/prod/scheduler/jobs". It does not contact Consul.
func NewConsulStore(client *api.Client, prefix string) (*ConsulStore, error) {
	prefix = strings.Trim(prefix, "/")
	if client == nil || prefix == "" {
		return nil, errors.New("create the scheduler's consul store: a client and a key prefix are required")
	}
	return &ConsulStore{kv: client.KV(), prefix: prefix + "/"}, nil
}

// Key is the Consul key of a job's record.
func (s *ConsulStore) Key(job string) string { return s.prefix + job }

// Load implements Store. It reads consistently, so that a new leader sees
// what the old one wrote.
func (s *ConsulStore) Load(ctx context.Context, job string) (State, uint64, error) {
	pair, _, err := s.kv.Get(s.Key(job), (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return State{}, 0, fmt.Errorf("load the record of job %s from consul key %s: %w", job, s.Key(job), err)
	}
	if pair == nil {
		return State{}, 0, nil
	}
	var st State
	if err := json.Unmarshal(pair.Value, &st); err != nil {
		return State{}, 0, fmt.Errorf("decode the record of job %s in consul key %s: %w", job, s.Key(job), err)
	}
	return st, pair.ModifyIndex, nil
}

// Save implements Store.
func (s *ConsulStore) Save(ctx context.Context, job string, st State, version uint64) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode the record of job %s: %w", job, err)
	}
	ok, _, err := s.kv.CAS(&api.KVPair{Key: s.Key(job), Value: data, ModifyIndex: version}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("save the record of job %s to consul key %s: %w", job, s.Key(job), err)
	}
	if !ok {
		return fmt.Errorf("save the record of job %s to consul key %s at index %d: %w", job, s.Key(job), version, ErrConflict)
	}
	return nil
}

var (
	_ Store = (*SQLiteStore)(nil)
	_ Store = (*ConsulStore)(nil)
)
