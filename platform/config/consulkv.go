package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/millrace/millrace/platform/consul"
)

// KVPrefix is the root of every key millrace keeps in Consul KV.
const KVPrefix = "millrace"

// KVKey is the Consul key of the rules document of a role in an
// environment: millrace/<env>/<role>/rules. One key holds the whole
// document, so that a change of several settings is one atomic write and
// one version in the history.
func KVKey(env, role string) (string, error) {
	var errs []error
	for _, p := range []struct{ what, v string }{{"environment", env}, {"role", role}} {
		if !kvNameRE.MatchString(p.v) {
			errs = append(errs, fmt.Errorf("%s %q: use lower-case letters, digits, - and _ (e.g. dev, prod-eu)", p.what, p.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	return KVPrefix + "/" + env + "/" + role + "/rules", nil
}

var kvNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// noteSuffix names the key beside a document that holds the Note of its
// last write by millrace.
const noteSuffix = ".note"

// KVOptions tune a ConsulKV.
type KVOptions struct {
	// WaitTime bounds one blocking query; Consul answers at the latest
	// then, changed or not. Default 5m (Consul caps it at 10m).
	WaitTime time.Duration
	// MinRetry and MaxRetry bound the wait before asking again after a
	// failed query; it doubles from MinRetry up to MaxRetry. Defaults
	// 250ms and 10s.
	MinRetry time.Duration
	MaxRetry time.Duration
	// Logger receives a record when Consul becomes unreachable or refuses,
	// and when it answers again. Default: discard.
	Logger *slog.Logger
}

func (o *KVOptions) setDefaults() {
	if o.WaitTime == 0 {
		o.WaitTime = 5 * time.Minute
	}
	if o.MinRetry == 0 {
		o.MinRetry = 250 * time.Millisecond
	}
	if o.MaxRetry == 0 {
		o.MaxRetry = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// ConsulKV is a YAML document in one Consul KV key: a Source and a
// Writable.
//
// Watch follows the key with blocking queries (the X-Consul-Index of each
// answer is the WaitIndex of the next), so a change is seen as Consul
// commits it, with no polling. When Consul cannot be reached, or refuses
// (a 403 says which permission the ACL token lacks), Watch retries with a
// doubling backoff, State reports the problem, and Read keeps returning the
// document it read last, so the configuration in force stays and changes
// of other layers still apply; when Consul answers again, the key is read
// and any change applied. Only the first Read, with nothing read yet, fails
// when Consul does not answer.
//
// A key that does not exist reads as an error wrapping fs.ErrNotExist: make
// the layer Optional for an empty layer instead.
//
// Write stores the document and, beside it in the same transaction, the
// Note of who wrote it (<key>.note), so that every process recording the
// change names the same author.
//
// A ConsulKV is safe for concurrent use.
type ConsulKV struct {
	client *api.Client
	key    string
	opts   KVOptions

	mu     sync.Mutex
	cached *kvRead // the last document read
	state  SourceState
}

// kvRead is one read of the key.
type kvRead struct {
	data     []byte
	revision string
	absent   bool
}

// NewConsulKV returns the document at key, read through client (built
// from the CONSUL_* variables by consul.NewClient).
func NewConsulKV(client *api.Client, key string, opts KVOptions) (*ConsulKV, error) {
	var errs []error
	if client == nil {
		errs = append(errs, errors.New("no consul client given"))
	}
	if key == "" || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		errs = append(errs, fmt.Errorf("key %q: want a key like millrace/dev/all/rules, without a leading or trailing /", key))
	}
	if opts.WaitTime < 0 || opts.MinRetry < 0 || opts.MaxRetry < 0 {
		errs = append(errs, errors.New("wait and retry durations must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("create consul kv source: %w", err)
	}
	opts.setDefaults()
	if opts.MaxRetry < opts.MinRetry {
		opts.MaxRetry = opts.MinRetry
	}
	k := &ConsulKV{client: client, key: key, opts: opts}
	k.state = SourceState{Source: k.Name(), Healthy: true, Since: time.Now()}
	return k, nil
}

// Name is consul:<key>.
func (k *ConsulKV) Name() string { return "consul:" + k.key }

// Key is the Consul key.
func (k *ConsulKV) Key() string { return k.key }

// ID names the document in the history: consul:<key>.
func (k *ConsulKV) ID() string { return k.Name() }

// Format is YAML (JSON, being YAML, reads too).
func (k *ConsulKV) Format() Format { return YAML }

// State reports whether Consul answers.
func (k *ConsulKV) State() SourceState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.state
}

// Read returns the document.
func (k *ConsulKV) Read(ctx context.Context) ([]byte, error) {
	data, _, err := k.ReadRevision(ctx)
	return data, err
}

// ReadRevision returns the document and its ModifyIndex. While Consul does
// not answer it returns the document read last, if there is one.
func (k *ConsulKV) ReadRevision(ctx context.Context) ([]byte, string, error) {
	pair, meta, err := k.client.KV().Get(k.key, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("read consul key %s: %w", k.key, ctx.Err())
		}
		err = k.describe("read", err)
		k.unhealthy(err)
		k.mu.Lock()
		cached := k.cached
		k.mu.Unlock()
		if cached == nil {
			return nil, "", err
		}
		return cached.result(k.key)
	}
	k.healthy()
	r := &kvRead{absent: pair == nil}
	if pair != nil {
		r.data = pair.Value
		r.revision = strconv.FormatUint(pair.ModifyIndex, 10)
		if len(r.data) > MaxDocumentBytes {
			return nil, "", fmt.Errorf("read consul key %s: larger than %d bytes", k.key, MaxDocumentBytes)
		}
	} else if meta != nil {
		// A missing key has no ModifyIndex: the index at which it was
		// found missing tells one absence from another.
		r.revision = "absent@" + strconv.FormatUint(meta.LastIndex, 10)
	}
	k.mu.Lock()
	k.cached = r
	k.state.Revision = r.revision
	k.mu.Unlock()
	return r.result(k.key)
}

func (r *kvRead) result(key string) ([]byte, string, error) {
	if r.absent {
		return nil, r.revision, fmt.Errorf("read consul key %s: %w", key, fs.ErrNotExist)
	}
	return r.data, r.revision, nil
}

// Watch follows the key with blocking queries until ctx ends. It never
// gives up: failures are retried with backoff and reported by State.
func (k *ConsulKV) Watch(ctx context.Context, changed func()) error {
	var (
		index   uint64 // the WaitIndex of the next query; 0 answers at once
		seen    uint64 // the index of the last answer
		first   = true
		failing bool // the last query failed
		retry   = k.opts.MinRetry
	)
	for {
		start := time.Now()
		q := &api.QueryOptions{WaitIndex: index, WaitTime: k.opts.WaitTime}
		_, meta, err := k.client.KV().Get(k.key, q.WithContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			k.unhealthy(k.describe("watch", err))
			failing = true
			// Whichever cluster answers next (a restarted dev agent starts
			// its indexes again), the next query must answer at once.
			index = 0
			if first {
				first = false
				changed() // watching, if failing: the reader decides
			}
			if !sleep(ctx, retry) {
				return nil
			}
			retry = min(retry*2, k.opts.MaxRetry)
			continue
		}
		k.healthy()
		recovered := failing
		failing = false
		retry = k.opts.MinRetry
		next := meta.LastIndex
		switch {
		case first:
			// The index is known now: a change from here on wakes the
			// next query. Report that watching started only now, so that
			// a change made before is read.
			first = false
			changed()
		case recovered || next != seen:
			// Consul is back, or the key (or, for a missing key, the
			// store) changed; an index that went back is a new cluster.
			changed()
		case time.Since(start) < k.opts.MinRetry:
			// Nothing changed, and the answer came too fast to be a
			// blocking one: do not spin.
			if !sleep(ctx, k.opts.MinRetry) {
				return nil
			}
		}
		seen, index = next, max(next, 1)
	}
}

// sleep waits d or until ctx ends; it reports false when ctx ended.
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

// unhealthy records a failure, logging when Consul stops answering (State
// keeps the latest error).
func (k *ConsulKV) unhealthy(err error) {
	k.mu.Lock()
	was := k.state.Healthy
	k.state.Healthy, k.state.Error = false, err.Error()
	if was {
		k.state.Since = time.Now()
	}
	k.mu.Unlock()
	if was {
		k.opts.Logger.Warn("consul kv: cannot read the configuration; the configuration read last stays in force, retrying",
			slog.String("source", k.Name()), slog.String("error", err.Error()))
	}
}

// healthy records a success; it reports whether Consul was failing before.
func (k *ConsulKV) healthy() bool {
	k.mu.Lock()
	was := k.state.Healthy
	if !was {
		k.state.Healthy, k.state.Error, k.state.Since = true, "", time.Now()
	}
	k.mu.Unlock()
	if !was {
		k.opts.Logger.Info("consul kv: reading the configuration again", slog.String("source", k.Name()))
	}
	return !was
}

// describe words a failed request: a 403 says plainly which permission
// the ACL token lacks.
func (k *ConsulKV) describe(op string, err error) error {
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusForbidden {
		need := "key_prefix \"" + KVPrefix + "/\" { policy = \"read\" }"
		if op == "write" {
			need = "key_prefix \"" + KVPrefix + "/\" { policy = \"write\" }"
		}
		return fmt.Errorf("%s consul key %s: consul refused it (403 %q): %w; the token in %s needs %s",
			op, k.key, strings.TrimSpace(se.Body), consul.ErrPermissionDenied, consul.EnvHTTPToken, need)
	}
	return fmt.Errorf("%s consul key %s: %w", op, k.key, err)
}

// Write stores data at the key if its ModifyIndex is still ifRevision (the
// key does not exist, for "" or an absence), and note beside it, in one
// transaction.
func (k *ConsulKV) Write(ctx context.Context, data []byte, ifRevision string, note Note) (string, error) {
	if len(data) > MaxDocumentBytes {
		return "", fmt.Errorf("write consul key %s: larger than %d bytes", k.key, MaxDocumentBytes)
	}
	var index uint64
	if ifRevision != "" && !strings.HasPrefix(ifRevision, "absent@") {
		var err error
		if index, err = strconv.ParseUint(ifRevision, 10, 64); err != nil {
			return "", fmt.Errorf("write consul key %s: revision %q is not a ModifyIndex", k.key, ifRevision)
		}
	}
	note.SHA256 = digest(data)
	noteJSON, err := json.Marshal(note)
	if err != nil {
		return "", fmt.Errorf("write consul key %s: encode note: %w", k.key, err)
	}
	ops := api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: k.key, Value: data, Index: index}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: k.key + noteSuffix, Value: noteJSON}},
	}
	var resp api.TxnResponse
	_, err = k.client.Raw().Write("/v1/txn", ops, &resp, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		var se api.StatusError
		if errors.As(err, &se) && se.Code == http.StatusConflict {
			var failed api.TxnResponse
			_ = json.Unmarshal([]byte(se.Body), &failed)
			for _, e := range failed.Errors {
				if strings.Contains(strings.ToLower(e.What), "permission denied") {
					return "", k.describe("write", api.StatusError{Code: http.StatusForbidden, Body: e.What})
				}
			}
			return "", fmt.Errorf("write consul key %s: %w (expected ModifyIndex %s): %s", k.key, ErrConflict, orNone(ifRevision), txnErrors(failed.Errors))
		}
		return "", k.describe("write", err)
	}
	if len(resp.Results) == 0 || resp.Results[0].KV == nil {
		return "", fmt.Errorf("write consul key %s: consul answered without the key's new index", k.key)
	}
	return strconv.FormatUint(resp.Results[0].KV.ModifyIndex, 10), nil
}

func txnErrors(errs api.TxnErrors) string {
	var parts []string
	for _, e := range errs {
		parts = append(parts, e.What)
	}
	if len(parts) == 0 {
		return "consul rolled the transaction back"
	}
	return strings.Join(parts, "; ")
}

// NoteFor reads the note beside the key and returns it when it was written
// with data at revision: in the same transaction, so with the same
// ModifyIndex.
func (k *ConsulKV) NoteFor(ctx context.Context, data []byte, revision string) (Note, bool, error) {
	pair, _, err := k.client.KV().Get(k.key+noteSuffix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return Note{}, false, k.describe("read", err)
	}
	if pair == nil || strconv.FormatUint(pair.ModifyIndex, 10) != revision {
		return Note{}, false, nil
	}
	var n Note
	if err := json.Unmarshal(pair.Value, &n); err != nil || n.SHA256 != digest(data) {
		return Note{}, false, nil // not ours to explain: the change is unattributed
	}
	return n, true, nil
}

var _ Writable = (*ConsulKV)(nil)
