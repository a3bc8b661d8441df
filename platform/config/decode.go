package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Format is the syntax of a configuration document.
type Format string

// The formats Decode reads.
const (
	YAML Format = "yaml"
	JSON Format = "json"
)

// FormatOf tells the format of a document from the extension of its name:
// .yaml and .yml are YAML, .json is JSON.
func FormatOf(name string) (Format, error) {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml":
		return YAML, nil
	case ".json":
		return JSON, nil
	default:
		return "", fmt.Errorf("tell the format of %s: name it .yaml, .yml or .json", name)
	}
}

// Error is a configuration document that was refused, with every problem
// found in it.
type Error struct {
	// Source names the document: a file path, a key.
	Source string
	// Problems lists what is wrong, in document order where known.
	Problems []Problem
}

// Problem is one thing wrong with a document.
type Problem struct {
	// Source, when set, names the document of a stack of layers the
	// problem is in (a file, a Consul key, an environment variable); empty
	// means Error.Source.
	Source string
	// Line is the 1-based line the problem is on, or 0 when not known.
	Line int
	// Message says what is wrong and, where it can, how to fix it.
	Message string
}

// Error writes one line per problem, as compilers do:
// "millrace.yaml:12: gateway.rate_limits[0].burst: must be at least 1".
func (e *Error) Error() string {
	lines := make([]string, 0, len(e.Problems))
	for _, p := range e.Problems {
		src := e.Source
		if p.Source != "" {
			src = p.Source
		}
		if p.Line > 0 {
			lines = append(lines, fmt.Sprintf("%s:%d: %s", src, p.Line, p.Message))
		} else {
			lines = append(lines, fmt.Sprintf("%s: %s", src, p.Message))
		}
	}
	return strings.Join(lines, "\n")
}

// FieldError is a problem at one place of a document. A validate or apply
// function that returns them, alone or joined with errors.Join, gets each
// reported with the line of that place. Any error type with a ConfigPath
// method qualifies: the package defining it need not import this one.
type FieldError interface {
	error
	// ConfigPath returns the keys from the root of the document to the
	// faulty value: mapping keys as written, list indexes in decimal.
	ConfigPath() []string
}

// Within places the problems of err under key: a FieldError's path gets key
// in front, and an error without a path is placed at key itself. A validate
// function of a document made of sections uses it to report each section's
// problems where they are:
//
//	errors.Join(config.Within("gateway", f.Gateway.Validate()), …)
//
// It returns nil for a nil err.
func Within(key string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, leaf := range flatten(err) {
		var fe FieldError
		switch {
		case errors.As(leaf, &fe) && leaf == error(fe):
			msg := leaf.Error()
			if strings.HasPrefix(msg, "[") {
				msg = key + msg
			} else {
				msg = key + "." + msg
			}
			out = append(out, &fieldError{path: append([]string{key}, fe.ConfigPath()...), msg: msg, err: leaf})
		case errors.As(leaf, &fe):
			out = append(out, &fieldError{path: append([]string{key}, fe.ConfigPath()...), msg: key + ": " + leaf.Error(), err: leaf})
		default:
			out = append(out, &fieldError{path: []string{key}, msg: key + ": " + leaf.Error(), err: leaf})
		}
	}
	return errors.Join(out...)
}

type fieldError struct {
	path []string
	msg  string
	err  error
}

func (e *fieldError) Error() string        { return e.msg }
func (e *fieldError) ConfigPath() []string { return e.path }
func (e *fieldError) Unwrap() error        { return e.err }

// flatten returns the leaves of err's tree of joined errors.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			if e != nil {
				out = append(out, flatten(e)...)
			}
		}
		return out
	}
	return []error{err}
}

// Decode decodes a document strictly into a T. A key T does not have is an
// error, so that a misspelt rule fails instead of being ignored; so are a
// value of the wrong type, an empty document and a second YAML document.
// The error is an *Error naming the line of each problem. JSON is checked
// as JSON, then decoded like YAML (of which it is a subset), so durations
// are written as strings ("2s") in both.
func Decode[T any](format Format, source string, data []byte) (T, error) {
	var zero T
	v, _, ps := decode(format, data, zero)
	if len(ps) > 0 {
		return zero, &Error{Source: source, Problems: ps}
	}
	return v, nil
}

// decode is Decode onto start: what the document leaves out keeps start's
// values. It returns the problems found, and the document's node tree when
// the document parsed: then the value holds every setting that decoded,
// so that it can be validated too (each value that did not decode keeps
// start's), and the tree gives the lines of later problems.
func decode[T any](format Format, data []byte, start T) (T, *yaml.Node, []Problem) {
	var zero T
	fail := func(ps ...Problem) (T, *yaml.Node, []Problem) { return zero, nil, ps }

	switch format {
	case YAML:
	case JSON:
		if p, ok := checkJSON(data); !ok {
			return fail(p)
		}
		data = unescapeSolidus(data)
	default:
		return fail(Problem{Message: fmt.Sprintf("unknown format %q; use yaml or json", format)})
	}

	// Parse first: a syntax error is reported alone, with its line.
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return fail(Problem{Message: "the document is empty; write the settings, or {} to take every default"})
		}
		ps := yamlProblems(err, nil, nil)
		if len(ps) == 1 {
			ps[0].Line = syntaxErrorLine(data, ps[0].Line)
		}
		return fail(ps...)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return fail(yamlProblems(err, nil, nil)...)
		}
		return fail(Problem{Line: line, Message: "a second document starts here; keep one document per file"})
	}

	v := start
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&v); err != nil {
		ps := yamlProblems(err, &doc, reflect.TypeOf(v))
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return fail(ps...) // decoding stopped: v is not worth validating
		}
		return v, &doc, ps
	}
	return v, &doc, nil
}

// maxLinesToLocate bounds the documents whose syntax errors are located
// line by line.
const maxLinesToLocate = 2000

// syntaxErrorLine finds the line of a YAML syntax error. yaml.v3 reports
// the line of an enclosing construct, often well before the error; this
// returns the line after the longest prefix of the document that still
// parses: the line of the error, or, inside a flow ({…} or […]) that spans
// lines, the line where that flow starts. Documents longer than
// maxLinesToLocate keep the reported line.
func syntaxErrorLine(data []byte, reported int) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > maxLinesToLocate {
		return reported
	}
	for k := len(lines) - 1; k >= 0; k-- {
		var n yaml.Node
		err := yaml.Unmarshal(bytes.Join(lines[:k], nil), &n)
		if err == nil {
			return k + 1
		}
	}
	return reported
}

// checkJSON reports the first syntax error of a JSON document, with its
// line.
func checkJSON(data []byte) (Problem, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var v any
	err := dec.Decode(&v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			return Problem{Line: lineAt(data, dec.InputOffset()), Message: "JSON: more after the end of the document; keep one value per file"}, false
		}
		return Problem{}, true
	}
	var syn *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		return Problem{Message: "the document is empty; write the settings, or {} to take every default"}, false
	case errors.As(err, &syn):
		return Problem{Line: lineAt(data, syn.Offset), Message: "JSON: " + syn.Error()}, false
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Problem{Line: lineAt(data, int64(len(data))), Message: "JSON: the document ends too early; close every { and ["}, false
	default:
		return Problem{Message: "JSON: " + err.Error()}, false
	}
}

// lineAt returns the 1-based line of a byte offset.
func lineAt(data []byte, offset int64) int {
	offset = min(max(offset, 0), int64(len(data)))
	return bytes.Count(data[:offset], []byte("\n")) + 1
}

// unescapeSolidus rewrites the JSON escape \/ (a plain /) inside strings,
// the one JSON escape YAML does not know. Lines do not move.
func unescapeSolidus(data []byte) []byte {
	if !bytes.Contains(data, []byte(`\/`)) {
		return data
	}
	out := make([]byte, 0, len(data))
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case !inString:
			inString = c == '"'
		case c == '\\' && i+1 < len(data):
			if data[i+1] == '/' {
				out = append(out, '/')
				i++
				continue
			}
			out = append(out, c, data[i+1])
			i++
			continue
		case c == '"':
			inString = false
		}
		out = append(out, c)
	}
	return out
}

var (
	yamlLineRE    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownRE     = regexp.MustCompile(`^field (\S+) not found in type .*$`)
	cannotRE      = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")
	inMessageLine = regexp.MustCompile(`\(line (\d+)\)`)
)

// yamlProblems turns a yaml.v3 error into problems with lines and
// messages a reader understands. doc and typ, when given, let an unknown
// key's message list the keys that are known there.
func yamlProblems(err error, doc *yaml.Node, typ reflect.Type) []Problem {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		// A syntax error, or an error of a type's own UnmarshalYAML, which
		// may span lines and name its lines in its own words.
		msgs = strings.Split(err.Error(), "\n")
	}
	var out []Problem
	for _, m := range msgs {
		if m = strings.TrimSpace(m); m == "" {
			continue
		}
		p := Problem{Message: strings.TrimPrefix(m, "yaml: ")}
		if sm := yamlLineRE.FindStringSubmatch(m); sm != nil {
			p.Line, _ = strconv.Atoi(sm[1])
			p.Message = sm[2]
		} else if sm := inMessageLine.FindStringSubmatch(m); sm != nil {
			p.Line, _ = strconv.Atoi(sm[1])
		}
		p.Message = friendlier(p.Message, p.Line, doc, typ)
		out = append(out, p)
	}
	return out
}

// friendlier rewrites yaml.v3's messages that name Go types.
func friendlier(msg string, line int, doc *yaml.Node, typ reflect.Type) string {
	if sm := unknownRE.FindStringSubmatch(msg); sm != nil {
		out := fmt.Sprintf("unknown field %q", sm[1])
		if known := knownKeysAt(doc, typ, line, sm[1]); len(known) > 0 {
			out += "; known here: " + strings.Join(known, ", ")
		}
		return out
	}
	if sm := cannotRE.FindStringSubmatch(msg); sm != nil {
		got := map[string]string{"map": "a mapping", "seq": "a list", "null": "null"}[sm[1]]
		if sm[2] != "" {
			got = strconv.Quote(sm[2])
		}
		if got == "" {
			got = "this value"
		}
		return fmt.Sprintf("cannot use %s as %s", got, describeGoType(sm[3]))
	}
	return msg
}

// describeGoType names what a value of the Go type yaml.v3 named should
// look like.
func describeGoType(name string) string {
	switch {
	case name == "time.Duration":
		return "a duration; write one like 500ms, 2s or 1m30s"
	case strings.HasPrefix(name, "int"):
		return "a whole number"
	case strings.HasPrefix(name, "uint"):
		return "a whole number, 0 or more"
	case strings.HasPrefix(name, "float"):
		return "a number"
	case name == "bool":
		return "true or false"
	case name == "string":
		return "a string"
	case strings.HasPrefix(name, "[]"):
		return "a list"
	case strings.HasPrefix(name, "map["):
		return "a mapping"
	default:
		return "a mapping of settings"
	}
}

// knownKeysAt lists the keys T allows in the mapping where key appears on
// line: it finds the key in the document, follows its path through T and
// lists the yaml names of the struct there.
func knownKeysAt(doc *yaml.Node, typ reflect.Type, line int, key string) []string {
	if doc == nil || typ == nil {
		return nil
	}
	path, ok := findKey(doc, line, key, nil)
	if !ok {
		return nil
	}
	t := typ
	for _, seg := range path {
		t = deref(t)
		switch t.Kind() {
		case reflect.Struct:
			f, ok := fieldByYAMLName(t, seg)
			if !ok {
				return nil
			}
			t = f.Type
		case reflect.Map, reflect.Slice, reflect.Array:
			t = t.Elem()
		default:
			return nil
		}
	}
	t = deref(t)
	if t.Kind() != reflect.Struct {
		return nil
	}
	var names []string
	for i := range t.NumField() {
		if name, ok := yamlName(t.Field(i)); ok {
			names = append(names, name)
		}
	}
	return names
}

// findKey returns the path to the mapping that holds key on line.
func findKey(n *yaml.Node, line int, key string, path []string) ([]string, bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if p, ok := findKey(c, line, key, path); ok {
				return p, true
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Line == line && k.Value == key {
				return path, true
			}
			if p, ok := findKey(n.Content[i+1], line, key, append(slices.Clip(path), k.Value)); ok {
				return p, true
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if p, ok := findKey(c, line, key, append(slices.Clip(path), strconv.Itoa(i))); ok {
				return p, true
			}
		}
	}
	return nil, false
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func fieldByYAMLName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if n, ok := yamlName(t.Field(i)); ok && n == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

// yamlName is the key of a struct field in YAML, as yaml.v3 derives it.
func yamlName(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	tag := f.Tag.Get("yaml")
	if tag == "-" {
		return "", false
	}
	if name, _, _ := strings.Cut(tag, ","); name != "" {
		return name, true
	}
	return strings.ToLower(f.Name), true
}

// lineOf returns the line of the value at path in doc, or of the deepest
// part of path that exists (a missing key is reported where it belongs).
func lineOf(doc *yaml.Node, path []string) int {
	if doc == nil {
		return 0
	}
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, seg := range path {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == seg {
					line, n, found = n.Content[i].Line, n.Content[i+1], true
					break
				}
			}
			if !found {
				return line
			}
		case yaml.SequenceNode:
			idx, err := strconv.Atoi(seg)
			if err != nil || idx < 0 || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		default:
			return line
		}
	}
	return line
}

// mergeProblems adds the problems of validating a value to those of
// decoding it, leaving out validation problems on lines that already have a
// decoding problem (a value that did not decode fails validation too, as
// the default it kept), in line order.
func mergeProblems(decoded, validated []Problem) []Problem {
	out := slices.Clone(decoded)
	for _, p := range validated {
		if p.Line == 0 || !slices.ContainsFunc(decoded, func(d Problem) bool { return d.Line == p.Line }) {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b Problem) int { return a.Line - b.Line })
	return out
}

// problemsOf turns the error of a validate or apply function into
// problems, with the line of every FieldError found in doc.
func problemsOf(doc *yaml.Node, err error) []Problem {
	var out []Problem
	for _, leaf := range flatten(err) {
		var fe FieldError
		if errors.As(leaf, &fe) {
			out = append(out, Problem{Line: lineOf(doc, fe.ConfigPath()), Message: leaf.Error()})
			continue
		}
		for _, m := range strings.Split(leaf.Error(), "\n") {
			if m = strings.TrimSpace(m); m == "" {
				continue
			}
			p := Problem{Message: m}
			if sm := inMessageLine.FindStringSubmatch(m); sm != nil {
				p.Line, _ = strconv.Atoi(sm[1])
			}
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b Problem) int { return a.Line - b.Line })
	return out
}
