package config

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Env is a layer of settings taken from environment variables, read once
// when it is made. Each setting of the document type has a variable: the
// prefix, then the keys from the root, upper-cased, each after a double
// underscore (a single one belongs to the key):
//
//	gateway.max_in_flight          MILLRACE_RULES__GATEWAY__MAX_IN_FLIGHT=64
//	log_level                      MILLRACE_RULES__LOG_LEVEL=debug
//	features.gateway_prefer_wait   MILLRACE_RULES__FEATURES__GATEWAY_PREFER_WAIT=false
//
// A value is YAML: 64, 2s, true, or a whole list or mapping in flow style
// (MILLRACE_RULES__GATEWAY__RATE_LIMITS='[{route: "*", rate: 50, burst: 100}]').
// A mapping (every section, every map) has a variable too, for its whole
// value; a more specific variable wins over it. A map's keys have their own
// variables when the defaults hold them (the declared feature flags);
// others, and keys that are no variable names ("GET /v1/orders/{id}"),
// are set through the map's variable.
//
// Problems are reported by variable name. Given the whole environment
// (EnvOptions.Environ), a variable with the prefix that names no setting is
// an error, so that a misspelt one is not silently ignored.
//
// Env is safe for concurrent use; it never changes.
type Env struct {
	prefix string
	data   []byte
	vars   []envVar // the variables set, with the lines of data they fill
	err    error
}

// EnvOptions tune NewEnv.
type EnvOptions struct {
	// Environ is the whole environment, as os.Environ returns it, to find
	// variables with the prefix that name no setting. Nil skips the check.
	Environ []string
}

type envVar struct {
	name     string
	path     []string
	from, to int // lines in data
}

// NewEnv reads the variables of prefix through getenv, for a document of
// type T; defaults is the value decoded before any layer (its map keys get
// variables of their own). An error of a variable is returned by Read.
func NewEnv[T any](prefix string, getenv func(string) string, defaults T, opts EnvOptions) *Env {
	e := &Env{prefix: prefix}
	known := envNames(prefix, reflect.ValueOf(defaults))
	var errs []error
	root := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	var set []envVar
	for _, k := range known {
		raw := getenv(k.name)
		if raw == "" {
			continue
		}
		v, err := parseValue(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k.name, err))
			continue
		}
		blockStyle(v) // one key per line, so that problems name their variable
		if err := setPath(root, k.path, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k.name, err))
			continue
		}
		set = append(set, k)
	}
	if opts.Environ != nil {
		names := make(map[string]bool, len(known))
		for _, k := range known {
			names[k.name] = true
		}
		for _, kv := range opts.Environ {
			name, _, _ := strings.Cut(kv, "=")
			if strings.HasPrefix(name, prefix+"__") && !names[name] {
				errs = append(errs, fmt.Errorf("%s names no setting%s", name, suggest(name, known)))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		e.err = fmt.Errorf("read the environment (%s__*): %w", prefix, err)
		return e
	}
	if len(set) == 0 {
		e.data = []byte("{}\n")
		return e
	}
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}
	data, err := encodeYAML(doc)
	if err != nil {
		e.err = fmt.Errorf("read the environment (%s__*): %w", prefix, err)
		return e
	}
	e.data = data
	// Find the lines each variable fills in the document written.
	var parsed yaml.Node
	if err := yaml.Unmarshal(data, &parsed); err == nil {
		for _, k := range set {
			from, to := linesOf(&parsed, k.path)
			if from > 0 {
				k.from, k.to = from, to
				e.vars = append(e.vars, k)
			}
		}
	}
	return e
}

// Name says where the layer comes from.
func (e *Env) Name() string { return "environment " + e.prefix + "__*" }

// Format is YAML: the document built from the variables.
func (e *Env) Format() Format { return YAML }

// Read returns the document the variables make, or the problems of the
// variables.
func (e *Env) Read(context.Context) ([]byte, error) {
	if e.err != nil {
		return nil, e.err
	}
	return e.data, nil
}

// Watch reports once that it watches, then waits for ctx: the environment
// of a process does not change.
func (e *Env) Watch(ctx context.Context, changed func()) error {
	changed()
	<-ctx.Done()
	return nil
}

// Set lists the variables that are set, by name.
func (e *Env) Set() []string {
	out := make([]string, len(e.vars))
	for i, v := range e.vars {
		out[i] = v.name
	}
	return out
}

// variableAt names the variable whose value fills line of the document, the
// most specific one when several do.
func (e *Env) variableAt(line int) string {
	best, span := "", 0
	for _, v := range e.vars {
		if line >= v.from && line <= v.to && (best == "" || v.to-v.from < span) {
			best, span = v.name, v.to-v.from
		}
	}
	return best
}

// linesOf returns the first and last line of the key at path and its value.
func linesOf(doc *yaml.Node, path []string) (int, int) {
	n := rootOf(doc)
	from := 0
	for _, seg := range path {
		next, line := child(resolveAlias(n), seg)
		if next == nil {
			return 0, 0
		}
		n, from = next, line
	}
	return from, lastLine(n, from)
}

func lastLine(n *yaml.Node, at int) int {
	last := max(at, n.Line)
	for _, c := range n.Content {
		last = max(last, lastLine(c, last))
	}
	return last
}

// envNames lists the variables of a document type, shallow ones first.
func envNames(prefix string, v reflect.Value) []envVar {
	var out []envVar
	var walk func(t reflect.Type, v reflect.Value, path []string, depth int)
	walk = func(t reflect.Type, v reflect.Value, path []string, depth int) {
		if depth > maxDepth {
			return
		}
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
			if v.IsValid() {
				if v.IsNil() {
					v = reflect.Value{}
				} else {
					v = v.Elem()
				}
			}
		}
		if len(path) > 0 {
			out = append(out, envVar{name: envName(prefix, path), path: slices.Clone(path)})
		}
		if isLeafType(t) {
			return
		}
		switch t.Kind() {
		case reflect.Struct:
			for i := range t.NumField() {
				f := t.Field(i)
				name, ok := yamlName(f)
				if !ok || !envSafe(name) {
					continue
				}
				var fv reflect.Value
				if v.IsValid() {
					fv = v.Field(i)
				}
				walk(f.Type, fv, append(slices.Clip(path), name), depth+1)
			}
		case reflect.Map:
			if t.Key().Kind() != reflect.String || !v.IsValid() {
				return
			}
			keys := v.MapKeys()
			sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
			for _, k := range keys {
				if envSafe(k.String()) {
					walk(t.Elem(), v.MapIndex(k), append(slices.Clip(path), k.String()), depth+1)
				}
			}
		}
	}
	walk(v.Type(), v, nil, 0)
	slices.SortStableFunc(out, func(a, b envVar) int { return len(a.path) - len(b.path) })
	return out
}

func envName(prefix string, path []string) string {
	return prefix + "__" + strings.ToUpper(strings.Join(path, "__"))
}

// envSafe reports keys that make a variable name: letters, digits and
// single underscores inside.
func envSafe(key string) bool {
	if key == "" || strings.Contains(key, "__") || key[0] == '_' || key[len(key)-1] == '_' {
		return false
	}
	for _, c := range key {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	// Upper-casing must not merge two keys into one name.
	return key == strings.ToLower(key)
}

// suggest names the known variable closest to name, if one is close.
func suggest(name string, known []envVar) string {
	best, dist := "", 4
	for _, k := range known {
		if d := editDistance(name, k.name); d < dist {
			best, dist = k.name, d
		}
	}
	if best == "" {
		return "; see docs/configuration.md for the names"
	}
	return "; did you mean " + best + "?"
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// blockStyle writes mappings and lists one item per line.
func blockStyle(n *yaml.Node) {
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		n.Style &^= yaml.FlowStyle
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}
