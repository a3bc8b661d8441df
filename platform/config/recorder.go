package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// RecorderConfig configures a Recorder.
type RecorderConfig struct {
	// Publisher publishes the records to Topic. Required. The Recorder does
	// not close it.
	Publisher message.Publisher
	// History is the history the records are numbered against and added
	// to; the caller feeds it from Topic, from the beginning, and marks it
	// caught up at the end. Required.
	History *History
	// Topic of the records; default HistoryTopic.
	Topic string
	// Instance names this process in the records (host:port).
	Instance string
	// RetryInterval is the first wait before publishing again after a
	// failure; it doubles up to a minute. Default 1s.
	RetryInterval time.Duration
	// Logger receives a record per change recorded and per failure.
	// Default: discard.
	Logger *slog.Logger
}

// Recorder records every change of the writable documents (files, Consul
// keys) of a Live in the history: one Change per document changed, on
// HistoryTopic, through a Watermill publisher. It starts once the History
// has caught up with the topic: a document that differs from the last
// version the history holds (it was changed while no process recorded) is
// recorded then, as "found at start". After that it records each
// configuration put in force, in order.
//
// Changes are recorded when they are accepted: a refused change is not in
// the history. Who made a change comes from the Note stored with the
// document by Live.Set and Live.Rollback; a change made behind millrace's
// back has no author.
type Recorder struct {
	src  recordable
	cfg  RecorderConfig
	last map[string]recorded // per document, as last recorded
}

// recordable is what a Recorder needs of a Live.
type recordable interface {
	Next(ctx context.Context, after uint64) (Snapshot, error)
	redactDoc(d Document) ([]byte, map[string]string, error)
	noteFor(ctx context.Context, d Document) (Note, bool)
}

type recorded struct {
	text    string
	absent  bool
	secrets map[string]string // nil when not known (recorded by an earlier process)
}

// NewRecorder returns a recorder of the changes of live.
func NewRecorder[T any](live *Live[T], cfg RecorderConfig) (*Recorder, error) {
	var errs []error
	if live == nil {
		errs = append(errs, errors.New("no live configuration given"))
	}
	if cfg.Publisher == nil {
		errs = append(errs, errors.New("no publisher given"))
	}
	if cfg.History == nil {
		errs = append(errs, errors.New("no history given"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("create configuration recorder: %w", err)
	}
	if cfg.Topic == "" {
		cfg.Topic = HistoryTopic
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Recorder{src: live, cfg: cfg, last: map[string]recorded{}}, nil
}

// Run records changes until ctx ends, then returns nil. A record that
// cannot be published is retried until it is, in order.
func (r *Recorder) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-r.cfg.History.CaughtUp():
	}
	var after uint64
	first := true
	for {
		snap, err := r.src.Next(ctx, after)
		if err != nil {
			return nil // ctx ended
		}
		if after > 0 && snap.Version > after+1 {
			r.cfg.Logger.Warn("configuration history: some configurations were in force too briefly to be recorded",
				slog.Uint64("from_version", after+1), slog.Uint64("to_version", snap.Version-1))
		}
		for _, d := range snap.Documents {
			if !d.Writable {
				continue
			}
			if err := r.record(ctx, snap, d, first); err != nil {
				return nil // ctx ended
			}
		}
		first = false
		after = snap.Version
	}
}

// record records d if it differs from what was recorded last.
func (r *Recorder) record(ctx context.Context, snap Snapshot, d Document, atStart bool) error {
	text, secrets, err := r.src.redactDoc(d)
	if err != nil {
		r.cfg.Logger.Error("configuration history: cannot record a change", slog.String("document", d.ID), slog.Any("error", err))
		return nil
	}
	prev, ok := r.last[d.ID]
	if !ok {
		if held, found := r.cfg.History.Latest(d.ID); found {
			prev, ok = recorded{text: held.New, absent: held.NewAbsent}, true
		}
	}
	newText := string(text)
	if d.Absent {
		newText = ""
	}
	changedSecrets := diffSecrets(prev.secrets, secrets)
	if ok && prev.absent == d.Absent && prev.text == newText && len(changedSecrets) == 0 {
		r.last[d.ID] = recorded{text: newText, absent: d.Absent, secrets: secrets}
		return nil
	}
	if !ok && d.Absent {
		// Nothing recorded and nothing there: no change to record.
		r.last[d.ID] = recorded{absent: true, secrets: secrets}
		return nil
	}
	c := Change{
		Document: d.ID, Source: d.Source, Format: d.Format, Revision: d.Revision, At: snap.At,
		Old: prev.text, OldAbsent: !ok || prev.absent, New: newText, NewAbsent: d.Absent,
		SecretsChanged: changedSecrets, Instance: r.cfg.Instance,
	}
	if note, found := r.src.noteFor(ctx, d); found {
		c.Who, c.Via, c.Reason = note.Who, note.Via, note.Reason
	} else if atStart {
		c.Via = "found at start"
	}
	c.ID = changeID(c.Document, c.Revision, c.Old, c.New, c.SecretsChanged)
	if latest, found := r.cfg.History.Latest(d.ID); found {
		c.Version = latest.Version + 1
	} else {
		c.Version = 1
	}
	if err := r.publish(ctx, c); err != nil {
		return err
	}
	held, added := r.cfg.History.Add(c)
	if added {
		r.cfg.Logger.Info("configuration change recorded", slog.String("document", c.Document),
			slog.Uint64("history_version", held.Version), slog.String("who", c.Who), slog.String("via", c.Via))
	}
	r.last[d.ID] = recorded{text: newText, absent: d.Absent, secrets: secrets}
	return nil
}

// publish publishes c, retrying until it is published or ctx ends.
func (r *Recorder) publish(ctx context.Context, c Change) error {
	wait := r.cfg.RetryInterval
	for {
		msg, err := ChangeMessage(c)
		if err != nil {
			return err
		}
		msg.SetContext(ctx)
		err = r.cfg.Publisher.Publish(r.cfg.Topic, msg)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.cfg.Logger.Warn("configuration history: cannot publish a change; retrying",
			slog.String("topic", r.cfg.Topic), slog.String("document", c.Document), slog.Any("error", err), slog.Duration("retry_in", wait))
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		wait = min(wait*2, time.Minute)
	}
}

// diffSecrets names the secrets whose values differ; nothing when the old
// values are not known.
func diffSecrets(old, new map[string]string) []string {
	if old == nil {
		return nil
	}
	var out []string
	for _, k := range sortedKeys(new) {
		if old[k] != new[k] {
			out = append(out, k)
		}
	}
	for k := range maps.Keys(old) {
		if _, ok := new[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// redactDoc returns d's data with its secrets redacted, and their values.
func (l *Live[T]) redactDoc(d Document) ([]byte, map[string]string, error) {
	if d.Absent {
		return nil, map[string]string{}, nil
	}
	text, secrets, err := redactDocument(d.Format, d.Data, l.secrets)
	if secrets == nil {
		secrets = map[string]string{}
	}
	return text, secrets, err
}

// noteFor asks d's source who wrote it.
func (l *Live[T]) noteFor(ctx context.Context, d Document) (Note, bool) {
	if d.Absent {
		return Note{}, false
	}
	for _, ly := range l.layers {
		w, ok := ly.Source.(Writable)
		if !ok || w.ID() != d.ID {
			continue
		}
		n, found, err := w.NoteFor(ctx, d.Data, d.Revision)
		if err != nil {
			l.log.WarnContext(ctx, "configuration history: cannot tell who made a change", slog.String("source", d.Source), slog.Any("error", err))
			return Note{}, false
		}
		return n, found
	}
	return Note{}, false
}
