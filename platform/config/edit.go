package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Edit is a change of one setting of the writable document.
type Edit struct {
	// Path names the setting, as ParsePath reads it:
	// gateway.max_in_flight, gateway.rate_limits[0].burst.
	Path string
	// Value is the new value, in YAML: 64, 2s, true, [a, b], {rate: 5}.
	Value string
	// Unset removes the setting from the document instead, so that the
	// layers below (or the default) decide it.
	Unset bool
}

// Written says what Set or Rollback wrote.
type Written struct {
	// Source is the name of the source written, Document its ID.
	Source   string `json:"source"`
	Document string `json:"document"`
	// Revision is the new revision of the document; empty when nothing
	// was written.
	Revision string `json:"revision,omitempty"`
	// Changed is false when the document said so already: nothing was
	// written.
	Changed bool `json:"changed"`
	// At is when it was written.
	At time.Time `json:"at"`
}

// Set changes one setting in the writable document (the highest layer that
// is a Writable: the Consul key, else the file). The new document is
// checked with every layer, as a change read from the source would be,
// before it is written: a change that would be refused is an *Error and
// never reaches the source. Written says what was written; the change is
// put in force when Run reads it back (AwaitApplied waits for that), and
// the Recorder records it with note.
func (l *Live[T]) Set(ctx context.Context, e Edit, note Note) (Written, error) {
	path, err := ParsePath(e.Path)
	if err != nil {
		return Written{}, &Error{Source: "config set", Problems: []Problem{{Message: err.Error()}}}
	}
	if note.Via == "" {
		if e.Unset {
			note.Via = "config set --unset " + FormatPath(path)
		} else {
			note.Via = "config set " + FormatPath(path)
		}
	}
	return l.write(ctx, note, func(cur Document) ([]byte, error) {
		data, err := editDocument(cur.Format, cur.Data, path, e.Value, e.Unset)
		if err != nil {
			return nil, &Error{Source: cur.Source, Problems: []Problem{{Message: FormatPath(path) + ": " + err.Error()}}}
		}
		return data, nil
	})
}

// Rollback writes version c of the writable document back, as recorded in
// the history: every setting as it was then, except the secrets, which
// stay as they are now (the history holds none). It is checked and written
// as Set is, and recorded as a new change.
func (l *Live[T]) Rollback(ctx context.Context, c Change, note Note) (Written, error) {
	if note.Via == "" {
		note.Via = fmt.Sprintf("rollback to version %d", c.Version)
	}
	return l.write(ctx, note, func(cur Document) ([]byte, error) {
		if cur.ID != c.Document {
			return nil, fmt.Errorf("%w: version %d is a version of %s, and this configuration writes %s", errWrongDocument, c.Version, c.Document, cur.ID)
		}
		if c.Format != "" && c.Format != cur.Format {
			return nil, fmt.Errorf("%w: version %d was written as %s, and %s is %s now", errWrongDocument, c.Version, c.Format, cur.Source, cur.Format)
		}
		old := []byte(c.New)
		if c.NewAbsent {
			old = []byte("{}\n") // no document: no settings
		}
		var values map[string]string
		if !cur.Absent {
			_, values, _ = redactDocument(cur.Format, cur.Data, l.secrets)
		}
		if len(values) == 0 && !bytes.Contains(old, []byte(Redacted)) {
			return old, nil // no secrets then or now: the document as it was, byte for byte
		}
		return withSecrets(cur.Format, old, l.secrets, values)
	})
}

// write builds a new writable document from the current one, checks it
// with every layer and writes it.
func (l *Live[T]) write(ctx context.Context, note Note, build func(cur Document) ([]byte, error)) (Written, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	idx := -1
	for i := len(l.layers) - 1; i >= 0; i-- {
		if _, ok := l.layers[i].Source.(Writable); ok {
			idx = i
			break
		}
	}
	if idx < 0 {
		return Written{}, fmt.Errorf("%w: %s is read only; give a file (--config) or Consul KV to write to", ErrNotWritable, l.src.Name())
	}
	r, err := l.read(ctx)
	if err != nil {
		return Written{}, err
	}
	cur := r.docs[idx]
	w := l.layers[idx].Source.(Writable)
	out := Written{Source: cur.Source, Document: cur.ID}
	data, err := build(cur)
	if err != nil {
		return out, err
	}
	if !cur.Absent && bytes.Equal(data, cur.Data) {
		return out, nil
	}
	candidate := slices.Clone(r.docs)
	candidate[idx].Data, candidate[idx].Absent = data, false
	if _, _, err := l.check(candidate); err != nil {
		return out, err
	}
	note.At = time.Now()
	rev, err := w.Write(ctx, data, cur.Revision, note)
	if err != nil {
		return out, err
	}
	out.Revision, out.Changed, out.At = rev, true, note.At
	l.log.InfoContext(ctx, "configuration written", "source", cur.Source, "revision", rev, "who", note.Who, "via", note.Via)
	return out, nil
}

// errWrongDocument: a rollback to a version of another document.
var errWrongDocument = errors.New("cannot roll back")

// ErrRefusedAfterWrite is wrapped by the error of AwaitApplied when the
// document written was refused when it was read back: by the apply
// function, which a check before writing cannot run.
var ErrRefusedAfterWrite = errors.New("the change was written but refused when applied")

// AwaitApplied waits until the revision w wrote is in force, or was
// refused (ErrRefusedAfterWrite), or ctx ends.
func (l *Live[T]) AwaitApplied(ctx context.Context, w Written) (Snapshot, error) {
	var snap Snapshot
	var refused string
	err := l.await(ctx, func(st Status, s Snapshot) bool {
		for _, d := range s.Documents {
			if d.ID == w.Document && d.Revision == w.Revision {
				snap = s
				return true
			}
		}
		if st.Refused != "" && !st.RefusedAt.Before(w.At) {
			refused = st.Refused
			return true
		}
		return false
	})
	if err != nil {
		return Snapshot{}, err
	}
	if refused != "" {
		return Snapshot{}, fmt.Errorf("%w:\n%s", ErrRefusedAfterWrite, refused)
	}
	return snap, nil
}

// Effective returns the configuration in force as a YAML tree, every
// setting included (defaults too), secrets redacted.
func (l *Live[T]) Effective() (*yaml.Node, error) {
	return effectiveNode(l.Current(), l.secrets)
}

// Secrets lists the paths of the secret settings ("*" for any key).
func (l *Live[T]) Secrets() []string {
	out := make([]string, len(l.secrets))
	for i, p := range l.secrets {
		out[i] = strings.ReplaceAll(FormatPath(p), `["*"]`, "[*]")
	}
	return out
}

// Writable returns the source Set and Rollback write to: the highest layer
// that is Writable.
func (l *Live[T]) Writable() (Writable, bool) {
	for i := len(l.layers) - 1; i >= 0; i-- {
		if w, ok := l.layers[i].Source.(Writable); ok {
			return w, true
		}
	}
	return nil, false
}

// States reports the health of the layers that talk to a remote store.
func (l *Live[T]) States() []SourceState {
	var out []SourceState
	for _, ly := range l.layers {
		if st, ok := ly.Source.(interface{ State() SourceState }); ok {
			out = append(out, st.State())
		}
	}
	return out
}
