// Package config keeps a typed configuration live: it reads a document from
// a Source, decodes it strictly (YAML or JSON, unknown keys refused),
// validates it as a whole, and hands each valid change to the code that
// applies it. A change that does not parse, validate or apply is refused
// with a message naming the document, the line and the problem, and the
// last good configuration stays in force.
//
//	live, err := config.New(config.NewFile("millrace.yaml"), config.Options[Rules]{
//		Validate: Rules.Validate, Logger: logger,
//	})
//	rules, err := live.Load(ctx)          // at start: a bad document is an error
//	… build with rules …
//	err = live.Run(ctx, func(r Rules) error { return holder.SetRules(r) })
//
// The sources:
//
//   - [File], a file watched for every way of saving it;
//   - [Env], settings from environment variables (PREFIX__SECTION__KEY);
//   - [ConsulKV], a document in a Consul KV key, watched with blocking
//     queries, kept in force while Consul is unreachable;
//   - [Stack], layers of those over the defaults: defaults → file →
//     environment → Consul KV, each overriding the ones below, merged and
//     validated as one.
//
// What Consul KV lacks, the package adds: [Live.Set] changes one setting
// in the writable layer after checking the result with every layer (a
// value that would be refused never reaches the source); a [Recorder]
// publishes every accepted change, who made it, old and new, to the
// history topic (HistoryTopic), which a [History] projects; [Live.Rollback]
// writes an old version back. Settings tagged secret:"true" never leave
// the process: [Redacted] stands for them. [Flags] are feature flags that
// change with the configuration. [AdminHandler] serves all of it over
// HTTP, and [Client] talks to it.
//
// The package knows nothing of what it configures: the document's type, its
// validation and its application come from the caller.
package config

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// DefaultDebounce is how long Live waits after a change for the next one,
// so that a save made of several writes is read once, whole.
const DefaultDebounce = 100 * time.Millisecond

// Options tune a Live.
type Options[T any] struct {
	// Defaults returns the value each document is decoded onto: what a
	// document leaves out keeps these values (a map keeps the keys the
	// document does not name; a list is replaced whole). Nil starts from
	// the zero value.
	Defaults func() T
	// Validate checks a decoded document as a whole; nil accepts every
	// document that decodes. Return every problem at once (errors.Join);
	// problems that are FieldErrors are reported with their line.
	Validate func(T) error
	// Format of the document; empty takes the source's own (Env and
	// ConsulKV are YAML) or tells it from the source's name. A Stack has a
	// format per layer (Layer.Format) and takes none here.
	Format Format
	// Debounce is how long to wait after a change for the next one before
	// reading. Default DefaultDebounce.
	Debounce time.Duration
	// Logger receives one record per change applied or refused. Default:
	// discard.
	Logger *slog.Logger
}

// Status says which configuration is in force and what became of the
// latest change.
type Status struct {
	// Source names the document.
	Source string
	// Version counts the configurations put in force: 1 after Load, one
	// more per change applied.
	Version uint64
	// AppliedAt is when the configuration in force was put in force.
	AppliedAt time.Time
	// Refused says why the latest change was refused, or is empty when it
	// was applied.
	Refused string
	// RefusedAt is when the latest change was refused.
	RefusedAt time.Time
}

// Live is a configuration of type T kept in step with its source: one
// document, or a Stack of layers. Besides the value in force (Current) it
// keeps the documents it was read from (Snapshot, Next), changes the
// writable one (Set, Rollback) and serves them (AdminHandler). It is safe
// for concurrent use.
type Live[T any] struct {
	src      Source
	layers   []Layer // the layers of a Stack, or src alone
	defaults func() T
	validate func(T) error
	debounce time.Duration
	log      *slog.Logger
	secrets  [][]string // paths of the fields of T tagged secret:"true"

	writeMu sync.Mutex // one Set or Rollback at a time

	mu      sync.Mutex
	current T
	status  Status
	seen    [sha256.Size]byte // the last documents decoded, applied or not
	recent  []Snapshot        // the latest configurations put in force, oldest first
	changed chan struct{}     // closed and replaced when a configuration is put in force or refused
}

// New returns a Live for the document of src. It reads nothing yet.
func New[T any](src Source, opts Options[T]) (*Live[T], error) {
	if src == nil {
		return nil, errors.New("create live configuration: no source given")
	}
	var layers []Layer
	if st, ok := src.(*Stack); ok {
		if opts.Format != "" {
			return nil, errors.New("create live configuration: a stack of layers has a format per layer; set Layer.Format instead of Options.Format")
		}
		layers = st.layers
	} else {
		format, err := layerFormat(Layer{Source: src, Format: opts.Format})
		if err != nil {
			return nil, fmt.Errorf("create live configuration: %w", err)
		}
		layers = []Layer{{Source: src, Format: format}}
	}
	if opts.Debounce < 0 {
		return nil, fmt.Errorf("create live configuration: debounce %s must not be negative", opts.Debounce)
	}
	if opts.Debounce == 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.Validate == nil {
		opts.Validate = func(T) error { return nil }
	}
	if opts.Defaults == nil {
		opts.Defaults = func() T { var zero T; return zero }
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var zero T
	return &Live[T]{
		src: src, layers: layers, defaults: opts.Defaults, validate: opts.Validate, debounce: opts.Debounce, log: opts.Logger,
		secrets: secretPaths(reflect.TypeOf(zero)),
		status:  Status{Source: src.Name()},
		changed: make(chan struct{}),
	}, nil
}

// Load reads, decodes and validates the document and puts it in force as
// version 1. It does not apply it: the caller builds its parts with the
// value returned. A document that is missing or refused is an error (an
// *Error for a refused one, listing every problem with its line).
func (l *Live[T]) Load(ctx context.Context) (T, error) {
	var zero T
	r, err := l.read(ctx)
	if err != nil {
		return zero, err
	}
	v, _, err := l.check(r.docs)
	if err != nil {
		return zero, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.current, l.seen = v, r.sum
	l.inForce(r.docs)
	return v, nil
}

// inForce records a configuration just put in force, read from docs. The
// caller holds l.mu.
func (l *Live[T]) inForce(docs []Document) {
	l.status.Version++
	l.status.AppliedAt = time.Now()
	l.recent = append(l.recent, Snapshot{Version: l.status.Version, At: l.status.AppliedAt, Documents: docs})
	if len(l.recent) > maxSnapshots {
		l.recent = slices.Delete(l.recent, 0, len(l.recent)-maxSnapshots)
	}
	l.broadcast()
}

// revise records new revisions of the documents in force when their
// contents did not change. The caller holds l.mu.
func (l *Live[T]) revise(docs []Document) {
	if len(l.recent) == 0 {
		return
	}
	last := &l.recent[len(l.recent)-1]
	if len(last.Documents) != len(docs) {
		return
	}
	changed := false
	revised := slices.Clone(last.Documents)
	for i := range revised {
		if revised[i].Absent == docs[i].Absent && bytes.Equal(revised[i].Data, docs[i].Data) && revised[i].Revision != docs[i].Revision {
			revised[i].Revision = docs[i].Revision
			changed = true
		}
	}
	if changed {
		last.Documents = revised
		l.broadcast()
	}
}

// broadcast wakes the waiters of Next and await. The caller holds l.mu.
func (l *Live[T]) broadcast() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Current returns the configuration in force.
func (l *Live[T]) Current() T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.current
}

// Status says which configuration is in force and what became of the
// latest change.
func (l *Live[T]) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

// Run watches the source until ctx ends. Each change that decodes and
// validates is passed to apply, and is in force once apply returns nil. A
// change that fails any of the three is refused: it is logged with every
// problem, Status reports it, and the configuration in force stays. apply
// should refuse only what it cannot put in force; it must not keep the
// value's maps or slices to change them. Run returns nil when ctx ends, or
// an error when the source cannot be watched.
func (l *Live[T]) Run(ctx context.Context, apply func(T) error) error {
	changes := make(chan struct{}, 1)
	notify := func() {
		select {
		case changes <- struct{}{}:
		default: // a read is due already
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return l.src.Watch(gctx, notify) })
	g.Go(func() error {
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		defer timer.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-changes:
				timer.Reset(l.debounce)
			case <-timer.C:
				l.reload(gctx, apply)
			}
		}
	})
	return g.Wait()
}

// reload reads the document and, when it differs from the last one seen,
// checks and applies it.
func (l *Live[T]) reload(ctx context.Context, apply func(T) error) {
	r, err := l.read(ctx)
	if err != nil {
		if ctx.Err() == nil {
			// Whatever comes back next is checked, even the same document:
			// its coming back clears the refusal.
			l.mu.Lock()
			l.seen = [sha256.Size]byte{}
			l.mu.Unlock()
			l.refuse(ctx, err)
		}
		return
	}
	l.mu.Lock()
	same := r.sum == l.seen
	l.seen = r.sum
	if same {
		// The same documents, written again: what is in force was read at
		// these revisions now.
		l.revise(r.docs)
	}
	l.mu.Unlock()
	if same {
		return
	}
	v, where, err := l.check(r.docs)
	if err == nil {
		if aerr := apply(v); aerr != nil {
			err = &Error{Source: l.src.Name(), Problems: where.problems(aerr)}
		}
	}
	if err != nil {
		l.refuse(ctx, err)
		return
	}
	l.mu.Lock()
	l.current = v
	l.status.Refused, l.status.RefusedAt = "", time.Time{}
	l.inForce(r.docs)
	version := l.status.Version
	l.mu.Unlock()
	l.log.InfoContext(ctx, "configuration applied", slog.String("source", l.src.Name()), slog.Uint64("version", version))
}

func (l *Live[T]) refuse(ctx context.Context, err error) {
	l.mu.Lock()
	l.status.Refused, l.status.RefusedAt = err.Error(), time.Now()
	version := l.status.Version
	l.broadcast()
	l.mu.Unlock()
	l.log.ErrorContext(ctx, "configuration change refused; the last good configuration stays in force",
		slog.String("source", l.src.Name()), slog.Uint64("version_in_force", version), slog.String("error", err.Error()))
}
