package config

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"gopkg.in/yaml.v3"
)

// Layer is one document of a Stack.
type Layer struct {
	// Source holds the document.
	Source Source
	// Format of the document; empty takes the source's own (a source with
	// a Format method, such as Env and ConsulKV) or tells it from the
	// source's name.
	Format Format
	// Optional makes a missing document (a Read error wrapping
	// fs.ErrNotExist, as a Consul key that does not exist) an empty layer
	// instead of an error.
	Optional bool
}

// Stack is a configuration made of layers, each a document that overrides
// the ones below it: the first layer is the lowest (the defaults of
// Options.Defaults lie below it), the last the highest. It is a Source, and
// a Live reading a Stack treats it specially:
//
//   - each layer is decoded strictly on its own, so that an unknown key or
//     a wrong type is reported in the layer and on the line where it is;
//   - the layers are merged key by key (mappings merge, a list or a value
//     replaces the one below; a key set to null sets nothing), and the
//     result is decoded onto the defaults and validated as a whole;
//   - a validation problem is reported in the highest layer that sets the
//     faulty value (an environment variable by its name), or as "defaults"
//     when no layer sets it;
//   - a change of any layer is refused as a whole when the merged result
//     is refused: the last good configuration stays in force.
//
// A Stack is safe for concurrent use.
type Stack struct {
	layers []Layer
}

// NewStack returns the stack of layers, lowest first.
func NewStack(layers ...Layer) (*Stack, error) {
	if len(layers) == 0 {
		return nil, errors.New("create configuration stack: no layers given")
	}
	out := make([]Layer, len(layers))
	var errs []error
	for i, ly := range layers {
		if ly.Source == nil {
			errs = append(errs, fmt.Errorf("layer %d: no source given", i+1))
			continue
		}
		if _, nested := ly.Source.(*Stack); nested {
			errs = append(errs, fmt.Errorf("layer %d: a stack cannot hold a stack; list its layers instead", i+1))
			continue
		}
		f, err := layerFormat(ly)
		if err != nil {
			errs = append(errs, fmt.Errorf("layer %d: %w", i+1, err))
			continue
		}
		ly.Format = f
		out[i] = ly
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("create configuration stack: %w", err)
	}
	return &Stack{layers: out}, nil
}

// layerFormat returns the format of a layer's document.
func layerFormat(ly Layer) (Format, error) {
	f := ly.Format
	if f == "" {
		if fs, ok := ly.Source.(interface{ Format() Format }); ok {
			f = fs.Format()
		}
	}
	if f == "" {
		var err error
		if f, err = FormatOf(ly.Source.Name()); err != nil {
			return "", err
		}
	}
	if f != YAML && f != JSON {
		return "", fmt.Errorf("unknown format %q; use yaml or json", f)
	}
	return f, nil
}

// Name lists the layers' names, lowest first, joined with " + ".
func (s *Stack) Name() string {
	names := make([]string, len(s.layers))
	for i, ly := range s.layers {
		names[i] = ly.Source.Name()
	}
	return strings.Join(names, " + ")
}

// Layers returns the layers, lowest first.
func (s *Stack) Layers() []Layer { return slices.Clone(s.layers) }

// Writable returns the highest layer whose source can be written (a File,
// a ConsulKV): where `config set` and rollbacks write.
func (s *Stack) Writable() (Writable, bool) {
	for i := len(s.layers) - 1; i >= 0; i-- {
		if w, ok := s.layers[i].Source.(Writable); ok {
			return w, true
		}
	}
	return nil, false
}

// States reports the health of the layers that talk to a remote store
// (ConsulKV), lowest first.
func (s *Stack) States() []SourceState {
	var out []SourceState
	for _, ly := range s.layers {
		if st, ok := ly.Source.(interface{ State() SourceState }); ok {
			out = append(out, st.State())
		}
	}
	return out
}

// Read returns the layers merged into one YAML document, without checking
// it: what the stack says before defaults and validation.
func (s *Stack) Read(ctx context.Context) ([]byte, error) {
	docs, err := readLayers(ctx, s.layers)
	if err != nil {
		return nil, err
	}
	var merged *yaml.Node
	for _, d := range docs {
		if d.Absent {
			continue
		}
		var n yaml.Node
		if err := yaml.Unmarshal(d.Data, &n); err != nil {
			return nil, fmt.Errorf("read %s: %w", d.Source, err)
		}
		merged = mergeNodes(merged, rootOf(&n))
	}
	if merged == nil {
		return []byte("{}\n"), nil
	}
	return encodeYAML(merged)
}

// Watch watches every layer until ctx ends, calling changed when any may
// have changed. It returns the first error of a layer's Watch, having
// stopped the others.
func (s *Stack) Watch(ctx context.Context, changed func()) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, ly := range s.layers {
		g.Go(func() error { return ly.Source.Watch(gctx, changed) })
	}
	return g.Wait()
}

// Document is one layer's document as a Live read it.
type Document struct {
	// Source is the name of the layer's source.
	Source string `json:"source"`
	// ID names the document in the history of changes, across processes
	// and restarts; set for Writable sources only.
	ID string `json:"id,omitempty"`
	// Format of Data.
	Format Format `json:"format"`
	// Writable says the source can be written (config set, rollback).
	Writable bool `json:"writable"`
	// Absent says an Optional layer's document does not exist.
	Absent bool `json:"absent,omitempty"`
	// Data is the document as read; it may hold secrets.
	Data []byte `json:"-"`
	// Revision is the source's revision of Data (a Consul ModifyIndex, a
	// file's modification time), when it tells one.
	Revision string `json:"revision,omitempty"`
}

// Snapshot is a configuration put in force and the documents it was read
// from.
type Snapshot struct {
	// Version counts the configurations put in force by this Live, as
	// Status.Version does.
	Version uint64
	// At is when it was put in force.
	At time.Time
	// Documents are the layers' documents, lowest first.
	Documents []Document
}

// maxSnapshots is how many recent configurations a Live keeps for Next.
const maxSnapshots = 64

// reading is what one read of every layer returned.
type reading struct {
	docs []Document
	sum  [sha256.Size]byte // of every layer's data, to tell a change
}

// read reads every layer.
func (l *Live[T]) read(ctx context.Context) (reading, error) {
	docs, err := readLayers(ctx, l.layers)
	if err != nil {
		return reading{}, err
	}
	h := sha256.New()
	for _, d := range docs {
		var n [9]byte
		binary.BigEndian.PutUint64(n[:8], uint64(len(d.Data)))
		if d.Absent {
			n[8] = 1
		}
		h.Write(n[:])
		h.Write(d.Data)
	}
	var r reading
	r.docs = docs
	h.Sum(r.sum[:0])
	return r, nil
}

// readLayers reads the document of each layer, with its revision where
// the source tells one.
func readLayers(ctx context.Context, layers []Layer) ([]Document, error) {
	docs := make([]Document, len(layers))
	for i, ly := range layers {
		d := Document{Source: ly.Source.Name(), Format: ly.Format}
		var err error
		if w, ok := ly.Source.(Writable); ok {
			d.ID, d.Writable = w.ID(), true
			d.Data, d.Revision, err = w.ReadRevision(ctx)
		} else {
			d.Data, err = ly.Source.Read(ctx)
		}
		if err != nil {
			if !ly.Optional || !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			d.Absent, d.Data = true, nil
		}
		docs[i] = d
	}
	return docs, nil
}

// check decodes each document strictly, merges them onto the defaults and
// validates the result. The locator places later problems (those of the
// apply function) in their layers.
func (l *Live[T]) check(docs []Document) (T, *locator, error) {
	loc := &locator{single: len(l.layers) == 1, nodes: make([]*yaml.Node, len(docs)), labels: make([]func(int) (string, int), len(docs))}
	var (
		ps      []layerProblem
		v       T
		present int
		parsed  = true
	)
	for i, d := range docs {
		loc.labels[i] = l.labeler(i, d)
		if d.Absent {
			continue
		}
		present++
		lv, doc, lps := decode(d.Format, d.Data, l.defaults())
		for _, p := range lps {
			ps = append(ps, loc.place(i, p))
		}
		if doc == nil {
			parsed = false
			continue
		}
		loc.nodes[i] = doc
		v = lv
	}
	if parsed {
		if present != 1 {
			// Several layers (or none): merge them, then decode the merged
			// tree onto the defaults. Problems of types were reported per
			// layer above.
			v = l.defaults()
			var merged *yaml.Node
			for _, n := range loc.nodes {
				if n != nil {
					merged = mergeNodes(merged, rootOf(n))
				}
			}
			if merged != nil {
				_ = merged.Decode(&v)
			}
		}
		if err := l.validate(v); err != nil {
			ps = mergeLayerProblems(ps, loc.problemsOf(err))
		}
	}
	if len(ps) > 0 {
		slices.SortStableFunc(ps, func(a, b layerProblem) int {
			if a.layer != b.layer {
				return a.layer - b.layer
			}
			return a.Line - b.Line
		})
		out := make([]Problem, len(ps))
		for i, p := range ps {
			out[i] = p.Problem
		}
		return v, loc, &Error{Source: l.src.Name(), Problems: out}
	}
	return v, loc, nil
}

// labeler returns how layer i names the place of a problem on a line: the
// source's name and the line, or, for the environment, the variable.
func (l *Live[T]) labeler(i int, d Document) func(line int) (string, int) {
	single := len(l.layers) == 1
	if env, ok := l.layers[i].Source.(*Env); ok {
		return func(line int) (string, int) {
			if name := env.variableAt(line); name != "" {
				return name, 0
			}
			return env.Name(), 0
		}
	}
	return func(line int) (string, int) {
		if single {
			return "", line
		}
		return d.Source, line
	}
}

// layerProblem is a problem and the layer it is in (-1: none).
type layerProblem struct {
	Problem
	layer int
}

// locator places the problems of a validate or apply function in the
// layers of one reading.
type locator struct {
	single bool
	nodes  []*yaml.Node                   // parsed documents; nil when absent
	labels []func(line int) (string, int) // per layer
}

// place puts a problem found in layer i's document in that layer.
func (lc *locator) place(i int, p Problem) layerProblem {
	p.Source, p.Line = lc.labels[i](p.Line)
	return layerProblem{Problem: p, layer: i}
}

// problems turns err into problems placed in their layers.
func (lc *locator) problems(err error) []Problem {
	ps := lc.problemsOf(err)
	out := make([]Problem, len(ps))
	for i, p := range ps {
		out[i] = p.Problem
	}
	return out
}

func (lc *locator) problemsOf(err error) []layerProblem {
	if lc.single {
		var doc *yaml.Node
		if len(lc.nodes) == 1 {
			doc = lc.nodes[0]
		}
		var out []layerProblem
		for _, p := range problemsOf(doc, err) {
			if p.Line > 0 {
				out = append(out, lc.place(0, p))
				continue
			}
			out = append(out, layerProblem{Problem: p})
		}
		return out
	}
	var out []layerProblem
	for _, leaf := range flatten(err) {
		var fe FieldError
		if !errors.As(leaf, &fe) {
			for _, m := range strings.Split(leaf.Error(), "\n") {
				if m = strings.TrimSpace(m); m != "" {
					out = append(out, layerProblem{Problem: Problem{Message: m}, layer: -1})
				}
			}
			continue
		}
		layer, line := lc.find(fe.ConfigPath())
		if layer < 0 {
			out = append(out, layerProblem{Problem: Problem{Source: "defaults", Message: leaf.Error()}, layer: -1})
			continue
		}
		out = append(out, lc.place(layer, Problem{Line: line, Message: leaf.Error()}))
	}
	return out
}

// find returns the layer that sets the value at path, and its line: the
// highest layer holding the whole path, else the one holding the longest
// part of it; -1 when no layer holds even its first key.
func (lc *locator) find(path []string) (layer, line int) {
	layer, best := -1, 0
	for i := len(lc.nodes) - 1; i >= 0; i-- {
		if lc.nodes[i] == nil {
			continue
		}
		depth, l := depthOf(lc.nodes[i], path)
		if depth > best {
			layer, best, line = i, depth, l
		}
	}
	return layer, line
}

// depthOf returns how many keys of path doc holds from its root, and the
// line of the deepest one.
func depthOf(doc *yaml.Node, path []string) (int, int) {
	n := rootOf(doc)
	if n == nil {
		return 0, 0
	}
	depth, line := 0, n.Line
	for _, seg := range path {
		n = resolveAlias(n)
		next, at := child(n, seg)
		if next == nil {
			break
		}
		n, line = next, at
		depth++
	}
	return depth, line
}

// child returns the value under key seg of a mapping, or the item at index
// seg of a list, with the line that names it.
func child(n *yaml.Node, seg string) (*yaml.Node, int) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == seg {
				return n.Content[i+1], n.Content[i].Line
			}
		}
	case yaml.SequenceNode:
		idx, ok := index(seg)
		if ok && idx < len(n.Content) {
			return n.Content[idx], n.Content[idx].Line
		}
	}
	return nil, 0
}

// mergeLayerProblems adds validation problems to decoding problems,
// leaving out a validation problem on a line of a layer that has a
// decoding problem already (a value that did not decode fails validation
// too, as the default it kept).
func mergeLayerProblems(decoded, validated []layerProblem) []layerProblem {
	out := slices.Clone(decoded)
	for _, p := range validated {
		dup := p.Line > 0 && slices.ContainsFunc(decoded, func(d layerProblem) bool {
			return d.layer == p.layer && d.Line == p.Line && d.Source == p.Source
		})
		if !dup {
			out = append(out, p)
		}
	}
	return out
}

// rootOf returns the content of a document node, or n itself.
func rootOf(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return n.Content[0]
	}
	return n
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// mergeNodes returns b laid over a: mappings merge key by key, anything
// else in b replaces a, and a null in b sets nothing. Neither is changed;
// aliases are resolved into copies.
func mergeNodes(a, b *yaml.Node) *yaml.Node {
	b = resolveAlias(b)
	if b == nil || isNull(b) {
		return a
	}
	a = resolveAlias(a)
	if a == nil || a.Kind != yaml.MappingNode || b.Kind != yaml.MappingNode {
		return copyNode(b)
	}
	out := copyNode(a)
	for i := 0; i+1 < len(b.Content); i += 2 {
		k, v := b.Content[i], b.Content[i+1]
		found := false
		for j := 0; j+1 < len(out.Content); j += 2 {
			if out.Content[j].Value == k.Value && out.Content[j].Kind == yaml.ScalarNode {
				out.Content[j+1] = mergeNodes(out.Content[j+1], v)
				found = true
				break
			}
		}
		if !found && !isNull(resolveAlias(v)) {
			out.Content = append(out.Content, copyNode(k), copyNode(v))
		}
	}
	return out
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// copyNode copies a node tree deeply, resolving aliases and dropping
// anchors, so that the copy stands alone.
func copyNode(n *yaml.Node) *yaml.Node {
	n = resolveAlias(n)
	if n == nil {
		return nil
	}
	c := *n
	c.Anchor, c.Alias = "", nil
	if len(n.Content) > 0 {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, ch := range n.Content {
			c.Content[i] = copyNode(ch)
		}
	}
	return &c
}

// encodeYAML writes a node as a YAML document indented by two spaces.
func encodeYAML(n *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("encode YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode YAML: %w", err)
	}
	return b.Bytes(), nil
}

// Snapshot returns the configuration in force and the documents it was
// read from; the zero Snapshot before Load.
func (l *Live[T]) Snapshot() Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.recent) == 0 {
		return Snapshot{}
	}
	return l.recent[len(l.recent)-1]
}

// Next returns the first configuration put in force after version after,
// waiting for one until ctx ends. A Live keeps the latest 64; when after is
// older than those, Next returns the oldest it kept.
func (l *Live[T]) Next(ctx context.Context, after uint64) (Snapshot, error) {
	for {
		l.mu.Lock()
		for _, s := range l.recent {
			if s.Version > after {
				l.mu.Unlock()
				return s, nil
			}
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return Snapshot{}, ctx.Err()
		case <-ch:
		}
	}
}

// await waits until cond holds for the status and the snapshot in force,
// checking whenever a configuration is put in force or refused.
func (l *Live[T]) await(ctx context.Context, cond func(Status, Snapshot) bool) error {
	for {
		l.mu.Lock()
		var snap Snapshot
		if len(l.recent) > 0 {
			snap = l.recent[len(l.recent)-1]
		}
		ok := cond(l.status, snap)
		ch := l.changed
		l.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
