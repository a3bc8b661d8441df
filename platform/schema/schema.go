// Package schema compiles JSON Schemas (draft 2020-12) and validates documents
// against them, reporting every violation with the JSON pointer of the value
// at fault, the keyword it failed and a message a client can act on.
//
// A [Validator] is built once from a file system of *.json schema files (for
// millrace, schemas.FS()) and then used by any number of goroutines. Format
// assertions are on: a string that is not a UUID where "format": "uuid" is
// asked for is a violation, not an annotation.
//
// The package knows nothing of millrace's domain: schemas are looked up by
// name, the file name without ".json".
package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// ErrUnknownSchema is wrapped by the errors of Validate and ValidateJSON when
// no schema has the name asked for.
var ErrUnknownSchema = errors.New("unknown schema")

// ErrMalformed is wrapped by the errors of ValidateJSON when the input is not
// one well-formed JSON value; the error is a *MalformedError.
var ErrMalformed = errors.New("malformed JSON")

// baseURL is where schemas without an absolute $id live for reference
// resolution. It names no real place: nothing is ever fetched.
const baseURL = "mem:///"

// Validator validates documents against a fixed set of compiled schemas.
//
// A Validator is immutable once New returns it and is safe for concurrent use
// by any number of goroutines. It holds no resources and needs no closing.
type Validator struct {
	schemas map[string]*jsonschema.Schema
	names   []string
}

// New compiles every *.json file at the root of fsys (subdirectories are not
// read) and returns a Validator that knows each one by its file name without
// ".json".
//
// Schemas without "$schema" are read as draft 2020-12. A schema may refer to
// another file of fsys with "$ref", by that file's "$id" (or, for a file
// without one, by "mem:///<file name>"); nothing outside fsys is ever loaded,
// neither from disk nor the network. Format assertions ("format": "uuid",
// "email", "date-time", …) are enabled for every draft.
//
// New reports the first file that cannot be read, parsed or compiled.
func New(fsys fs.FS) (*Validator, error) {
	if fsys == nil {
		return nil, errors.New("compile schemas: no file system given")
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("compile schemas: list files: %w", err)
	}

	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	// No scheme is registered: a $ref to anything not added below fails
	// instead of reading the local disk (the default loader's behaviour).
	c.UseLoader(jsonschema.SchemeURLLoader{})

	locations := map[string]string{} // schema name -> resource URL
	for _, e := range entries {
		file := e.Name()
		if e.IsDir() || path.Ext(file) != ".json" {
			continue
		}
		loc, err := addResource(c, fsys, file)
		if err != nil {
			return nil, fmt.Errorf("compile schemas: %w", err)
		}
		locations[strings.TrimSuffix(file, ".json")] = loc
	}

	v := &Validator{
		schemas: make(map[string]*jsonschema.Schema, len(locations)),
		names:   slices.Sorted(maps.Keys(locations)),
	}
	for _, name := range v.names {
		sch, err := c.Compile(locations[name])
		if err != nil {
			return nil, fmt.Errorf("compile schema %s.json: %w", name, err)
		}
		v.schemas[name] = sch
	}
	return v, nil
}

// addResource parses one schema file and registers it with the compiler under
// its absolute $id, or under baseURL+file when it has none. It returns the URL
// to compile it by.
func addResource(c *jsonschema.Compiler, fsys fs.FS, file string) (string, error) {
	data, err := fs.ReadFile(fsys, file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	doc, err := decode(data)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", file, err)
	}
	loc := baseURL + url.PathEscape(file)
	if obj, ok := doc.(map[string]any); ok {
		if id, ok := obj["$id"].(string); ok {
			if u, err := url.Parse(id); err == nil && u.IsAbs() {
				u.Fragment = ""
				loc = u.String()
			}
		}
	}
	if err := c.AddResource(loc, doc); err != nil {
		return "", fmt.Errorf("add %s as %s: %w", file, loc, err)
	}
	return loc, nil
}

// Has reports whether a schema of that name was compiled.
func (v *Validator) Has(name string) bool {
	_, ok := v.schemas[name]
	return ok
}

// Names returns the names of all schemas, sorted. The slice is new on each
// call.
func (v *Validator) Names() []string { return slices.Clone(v.names) }

// Validate checks doc against the named schema.
//
// doc is a decoded JSON value: nil, bool, string, json.Number, float64,
// []any or map[string]any, nested. Decode with json.Decoder.UseNumber so that
// integers keep full precision (or use ValidateJSON, which does); values from
// a plain json.Unmarshal into an any are accepted too. Go structs are not
// JSON values: marshal and decode them first.
//
// A document that breaks the schema yields a *ValidationError listing every
// violation. A number literal longer than 400 characters or with an exponent
// beyond ±400 is not evaluated: it is reported as a violation with Rule
// "number" (alone with any others of its kind), because exact arithmetic on
// it would cost seconds of CPU. A name no schema has yields an error wrapping
// ErrUnknownSchema; a doc holding a value JSON cannot express (a struct, NaN,
// a json.Number that is not a number) yields a plain error, which is a bug in
// the caller rather than in the document.
func (v *Validator) Validate(name string, doc any) error {
	sch, ok := v.schemas[name]
	if !ok {
		return fmt.Errorf("validate against schema %q: %w", name, ErrUnknownSchema)
	}
	// Numbers the library cannot evaluate cheaply (or at all) are refused
	// before it sees them.
	var c collector
	checkNumbers(doc, "", &c)
	if c.err != nil {
		return fmt.Errorf("validate against schema %q: %w", name, c.err)
	}
	if len(c.out) > 0 {
		sortViolations(c.out)
		return &ValidationError{Schema: name, Violations: c.out}
	}

	err := sch.Validate(doc)
	if err == nil {
		return nil
	}
	var verr *jsonschema.ValidationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("validate against schema %q: %w", name, err)
	}
	violations, err := violationsOf(verr)
	if err != nil {
		return fmt.Errorf("validate against schema %q: %w", name, err)
	}
	return &ValidationError{Schema: name, Violations: violations}
}

// ValidateJSON decodes data as one JSON value (numbers as json.Number) and
// validates it against the named schema.
//
// Input that is not exactly one well-formed JSON value, optionally surrounded
// by white space, yields a *MalformedError (wrapping ErrMalformed) with the
// byte offset where it broke. Otherwise the result is that of Validate. The
// schema name is checked before the input is decoded.
func (v *Validator) ValidateJSON(name string, data []byte) error {
	if !v.Has(name) {
		return fmt.Errorf("validate against schema %q: %w", name, ErrUnknownSchema)
	}
	doc, err := decode(data)
	if err != nil {
		return err
	}
	return v.Validate(name, doc)
}

// decode parses data as exactly one JSON value with numbers as json.Number.
func decode(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, malformed(data, dec.InputOffset(), err)
	}
	end := dec.InputOffset()
	if rest := bytes.TrimLeft(data[end:], " \t\r\n"); len(rest) > 0 {
		off := int64(len(data) - len(rest))
		return nil, &MalformedError{Offset: off, Err: errors.New("unexpected data after the JSON value")}
	}
	return doc, nil
}

// malformed turns a decoding error into a *MalformedError with the offset of
// the first byte that could not be accepted.
func malformed(data []byte, inputOffset int64, err error) *MalformedError {
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		// Offset counts the bytes read when the error was found, the bad
		// byte included: point at the bad byte itself.
		off := syn.Offset - 1
		if off < 0 {
			off = 0
		}
		return &MalformedError{Offset: off, Err: err}
	case errors.Is(err, io.EOF) && len(bytes.TrimSpace(data)) == 0:
		return &MalformedError{Offset: int64(len(data)), Err: errors.New("no JSON value")}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &MalformedError{Offset: int64(len(data)), Err: errors.New("unexpected end of input")}
	default:
		return &MalformedError{Offset: inputOffset, Err: err}
	}
}
