package schema_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/millrace/millrace/platform/schema"
)

// validOrder satisfies testdata/order.json; cases change one thing in it.
const validOrder = `{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada"}`

func newTestValidator(t *testing.T) *schema.Validator {
	t.Helper()
	v, err := schema.New(os.DirFS("testdata"))
	if err != nil {
		t.Fatalf("New(testdata): %v", err)
	}
	return v
}

// violations returns the violations of err, failing the test when err is not
// a *ValidationError for the schema.
func violations(t *testing.T, err error, schemaName string) []schema.Violation {
	t.Helper()
	var verr *schema.ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("got error %v (%T), want a *schema.ValidationError", err, err)
	}
	if verr.Schema != schemaName {
		t.Errorf("ValidationError.Schema = %q, want %q", verr.Schema, schemaName)
	}
	return verr.Violations
}

func TestNewCompilesTopLevelJSONFiles(t *testing.T) {
	v := newTestValidator(t)

	if got, want := v.Names(), []string{"common", "noid", "order"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	for name, want := range map[string]bool{
		"order":          true,
		"common":         true,
		"noid":           true,
		"order.json":     false,
		"ignored":        false,
		"nested/ignored": false,
		"README":         false,
		"":               false,
	} {
		if got := v.Has(name); got != want {
			t.Errorf("Has(%q) = %v, want %v", name, got, want)
		}
	}

	names := v.Names()
	names[0] = "changed"
	if v.Names()[0] != "common" {
		t.Error("changing the slice from Names changed the Validator")
	}
}

func TestNewReportsBadSchemaSets(t *testing.T) {
	tests := []struct {
		name string
		fsys fstest.MapFS
		want []string // substrings of the error
		is   error
	}{
		{
			name: "malformed JSON",
			fsys: fstest.MapFS{"bad.json": {Data: []byte(`{"type": "object",`)}},
			want: []string{"parse bad.json", "offset 18"},
			is:   schema.ErrMalformed,
		},
		{
			name: "not a valid schema",
			fsys: fstest.MapFS{"bad.json": {Data: []byte(`{"type": 5}`)}},
			want: []string{"compile schema bad.json", "not valid against metaschema"},
		},
		{
			name: "reference to a schema that is not in the set",
			fsys: fstest.MapFS{"bad.json": {Data: []byte(`{"$ref": "https://elsewhere.test/x.json"}`)}},
			want: []string{"compile schema bad.json", "https://elsewhere.test/x.json"},
		},
		{
			name: "reference to a local file is not followed",
			fsys: fstest.MapFS{"bad.json": {Data: []byte(`{"$ref": "file:///etc/hostname"}`)}},
			want: []string{"compile schema bad.json", "file:///etc/hostname"},
		},
		{
			name: "two files with one $id",
			fsys: fstest.MapFS{
				"a.json": {Data: []byte(`{"$id": "https://example.test/same.json"}`)},
				"b.json": {Data: []byte(`{"$id": "https://example.test/same.json"}`)},
			},
			want: []string{"add b.json as https://example.test/same.json"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := schema.New(tt.fsys)
			if err == nil {
				t.Fatalf("New succeeded with schemas %q, want an error", v.Names())
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q does not wrap %v", err, tt.is)
			}
		})
	}

	t.Run("nil file system", func(t *testing.T) {
		if _, err := schema.New(nil); err == nil {
			t.Fatal("New(nil) succeeded, want an error")
		}
	})
}

func TestNewEmptySetHasNoSchemas(t *testing.T) {
	v, err := schema.New(fstest.MapFS{"notes.txt": {Data: []byte("not a schema")}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if names := v.Names(); len(names) != 0 {
		t.Errorf("Names() = %q, want none", names)
	}
}

func TestValidateReportsEachRule(t *testing.T) {
	v := newTestValidator(t)
	base := map[string]any{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada"}

	tests := []struct {
		name  string
		set   string // JSON object merged into validOrder
		drop  string // property removed from validOrder
		field string
		rule  string
		msg   string
	}{
		{name: "missing property", drop: "name", field: "/name", rule: "required", msg: `missing property "name"`},
		{name: "unknown property", set: `{"colour": "red"}`, field: "/colour", rule: "additionalProperties", msg: `unknown property "colour"`},
		{name: "wrong type", set: `{"count": "2"}`, field: "/count", rule: "type", msg: "must be an integer, not a string"},
		{name: "integer wanted, fraction given", set: `{"count": 2.5}`, field: "/count", rule: "type", msg: "must be an integer, not a number"},
		{name: "one of several types", set: `{"flag": 1}`, field: "/flag", rule: "type", msg: "must be null or a boolean, not a number"},
		{name: "uuid format", set: `{"id": "not-a-uuid"}`, field: "/id", rule: "format", msg: "must be a valid UUID: must have 5 elements"},
		{name: "email format", set: `{"email": "ada.example.com"}`, field: "/email", rule: "format", msg: "must be a valid email address: missing @"},
		{name: "date-time format", set: `{"at": "2024-02-30T10:00:00Z"}`, field: "/at", rule: "format"},
		{name: "too short", set: `{"name": ""}`, field: "/name", rule: "minLength", msg: "must be at least 1 character long"},
		{name: "too long", set: `{"name": "Ada Lovelace"}`, field: "/name", rule: "maxLength", msg: "must be at most 10 characters long"},
		{name: "below minimum", set: `{"count": 0}`, field: "/count", rule: "minimum", msg: "must be >= 1"},
		{name: "above maximum", set: `{"count": 11}`, field: "/count", rule: "maximum", msg: "must be <= 10"},
		{name: "not above exclusive minimum", set: `{"price": 0}`, field: "/price", rule: "exclusiveMinimum", msg: "must be > 0"},
		{name: "not below exclusive maximum", set: `{"price": 1000.5}`, field: "/price", rule: "exclusiveMaximum", msg: "must be < 1000.5"},
		{name: "not a multiple", set: `{"step": 7}`, field: "/step", rule: "multipleOf", msg: "must be a multiple of 5"},
		{name: "pattern", set: `{"code": "eur"}`, field: "/code", rule: "pattern", msg: `must match the pattern "^[A-Z]{3}$"`},
		{name: "enum", set: `{"kind": "gift"}`, field: "/kind", rule: "enum", msg: `must be one of "retail", "wholesale"`},
		{name: "const", set: `{"version": 2}`, field: "/version", rule: "const", msg: "must be 1"},
		{name: "too few items", set: `{"tags": []}`, field: "/tags", rule: "minItems", msg: "must have at least 1 item"},
		{name: "too many items", set: `{"tags": ["a", "b", "c", "d"]}`, field: "/tags", rule: "maxItems", msg: "must have at most 3 items"},
		{name: "repeated items", set: `{"tags": ["a", "b", "a"]}`, field: "/tags", rule: "uniqueItems", msg: "must not repeat items: items 0 and 2 are equal"},
		{name: "too few properties", set: `{"meta": {}}`, field: "/meta", rule: "minProperties", msg: "must have at least 1 property"},
		{name: "too many properties", set: `{"meta": {"a": 1, "b": 2, "c": 3}}`, field: "/meta", rule: "maxProperties", msg: "must have at most 2 properties"},
		{name: "inside an array item", set: `{"lines": [{"qty": 1}, {"qty": 0}]}`, field: "/lines/1/qty", rule: "minimum", msg: "must be >= 1"},
		{name: "missing inside an array item", set: `{"lines": [{}]}`, field: "/lines/0/qty", rule: "required", msg: `missing property "qty"`},
		{name: "through $ref to another file", set: `{"address": {"city": "Turin", "zip": "1"}}`, field: "/address/zip", rule: "pattern", msg: `must match the pattern "^[0-9]{5}$"`},
		{name: "missing through $ref", set: `{"address": {}}`, field: "/address/city", rule: "required", msg: `missing property "city"`},
		{name: "no alternative of anyOf", set: `{"contact": -1}`, field: "/contact", rule: "anyOf", msg: "must match at least one of the allowed forms: (must be a string, not a number) or (must be >= 0)"},
		{name: "pointer escapes / and ~", set: `{"a/b~c": 1}`, field: "/a~1b~0c", rule: "type", msg: "must be a string, not a number"},
		{name: "integer beyond float64 precision", set: `{"big": 9007199254740993}`, field: "/big", rule: "maximum", msg: "must be <= 9007199254740992"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := map[string]any{}
			for k, val := range base {
				doc[k] = val
			}
			delete(doc, tt.drop)
			if tt.set != "" {
				d := json.NewDecoder(strings.NewReader(tt.set))
				d.UseNumber()
				if err := d.Decode(&doc); err != nil {
					t.Fatalf("decode case: %v", err)
				}
			}

			got := violations(t, v.Validate("order", doc), "order")

			if len(got) != 1 {
				t.Fatalf("got %d violations %+v, want exactly one", len(got), got)
			}
			if got[0].Field != tt.field || got[0].Rule != tt.rule {
				t.Errorf("got violation %+v, want field %q rule %q", got[0], tt.field, tt.rule)
			}
			if tt.msg != "" && got[0].Message != tt.msg {
				t.Errorf("message = %q, want %q", got[0].Message, tt.msg)
			}
			if got[0].Message == "" {
				t.Error("message is empty")
			}
		})
	}
}

func TestValidateAcceptsValidDocuments(t *testing.T) {
	v := newTestValidator(t)
	tests := []struct{ name, schema, doc string }{
		{"minimal", "order", validOrder},
		{"every property", "order", `{
			"id": "0B6F4F3E-6A47-4C41-9A0E-6F6B8A3D2C11", "name": "Ada", "email": "ada@example.com",
			"at": "2024-02-29T10:00:00.5+01:00", "count": 10, "price": 0.01, "step": -15, "code": "EUR",
			"kind": "retail", "version": 1.0, "flag": null, "a/b~c": "x", "tags": ["a", "b"],
			"lines": [], "address": {"city": "Turin", "zip": "10121"}, "contact": 0,
			"meta": {"k": "v"}, "big": 9007199254740992}`},
		{"anyOf second form", "order", `{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada", "contact": "ada@example.com"}`},
		{"draft 2020-12 keyword in a schema without $schema", "noid", `{"n": 1, "when": "2024-01-01T00:00:00Z"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := v.ValidateJSON(tt.schema, []byte(tt.doc)); err != nil {
				t.Fatalf("ValidateJSON: %v", err)
			}
		})
	}
}

func TestValidateReportsEveryViolationSorted(t *testing.T) {
	v := newTestValidator(t)
	lines := make([]string, 12)
	for i := range lines {
		lines[i] = `{"qty": 1}`
	}
	lines[2], lines[10] = `{"qty": 0}`, `{"qty": 0, "x": 1}`
	doc := `{"name": "", "extra": true, "count": 0, "lines": [` + strings.Join(lines, ",") + `]}`

	got := violations(t, v.ValidateJSON("order", []byte(doc)), "order")

	want := []schema.Violation{
		{Field: "/count", Rule: "minimum", Message: "must be >= 1"},
		{Field: "/extra", Rule: "additionalProperties", Message: `unknown property "extra"`},
		{Field: "/id", Rule: "required", Message: `missing property "id"`},
		{Field: "/lines/2/qty", Rule: "minimum", Message: "must be >= 1"},
		{Field: "/lines/10/qty", Rule: "minimum", Message: "must be >= 1"},
		{Field: "/lines/10/x", Rule: "additionalProperties", Message: `unknown property "x"`},
		{Field: "/name", Rule: "minLength", Message: "must be at least 1 character long"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("violations:\n got %+v\nwant %+v", got, want)
	}
}

func TestValidateRootViolation(t *testing.T) {
	v := newTestValidator(t)
	got := violations(t, v.ValidateJSON("order", []byte(`[1]`)), "order")
	want := []schema.Violation{{Field: "", Rule: "type", Message: "must be an object, not an array"}}
	if !slices.Equal(got, want) {
		t.Errorf("violations = %+v, want %+v", got, want)
	}
}

func TestValidateDependentRequiredNamesTheMissingProperty(t *testing.T) {
	v := newTestValidator(t)
	got := violations(t, v.ValidateJSON("noid", []byte(`{"n": 1}`)), "noid")
	want := []schema.Violation{{Field: "/when", Rule: "dependentRequired", Message: `missing property "when", required when "n" is present`}}
	if !slices.Equal(got, want) {
		t.Errorf("violations = %+v, want %+v", got, want)
	}
}

func TestValidateAcceptsPlainDecodedValues(t *testing.T) {
	v := newTestValidator(t)
	decode := func(t *testing.T, s string) any {
		t.Helper()
		var doc any
		if err := json.Unmarshal([]byte(s), &doc); err != nil {
			t.Fatal(err)
		}
		return doc
	}

	if err := v.Validate("order", decode(t, `{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada", "count": 3.0}`)); err != nil {
		t.Errorf("valid document with float64 numbers: %v", err)
	}
	got := violations(t, v.Validate("order", decode(t, `{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada", "count": 12}`)), "order")
	want := []schema.Violation{{Field: "/count", Rule: "maximum", Message: "must be <= 10"}}
	if !slices.Equal(got, want) {
		t.Errorf("violations = %+v, want %+v", got, want)
	}
}

func TestValidateRefusesValuesThatAreNotJSON(t *testing.T) {
	v := newTestValidator(t)
	type order struct{ ID, Name string }
	tests := map[string]any{
		"struct":          order{ID: "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", Name: "Ada"},
		"struct in a map": map[string]any{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada", "meta": order{}},
		"typed map":       map[string]string{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada"},
	}
	for name, doc := range tests {
		t.Run(name, func(t *testing.T) {
			err := v.Validate("order", doc)
			var verr *schema.ValidationError
			if err == nil || errors.As(err, &verr) || errors.Is(err, schema.ErrUnknownSchema) {
				t.Fatalf("Validate(%T) = %v, want a plain error", doc, err)
			}
			if !strings.Contains(err.Error(), "not a decoded JSON value") {
				t.Errorf("error %q does not say the value is not JSON", err)
			}
		})
	}
}

func TestUnknownSchema(t *testing.T) {
	v := newTestValidator(t)
	for name, err := range map[string]error{
		"Validate":     v.Validate("orders.place-order.v9", map[string]any{}),
		"ValidateJSON": v.ValidateJSON("orders.place-order.v9", []byte(`{`)),
	} {
		if !errors.Is(err, schema.ErrUnknownSchema) {
			t.Errorf("%s: error %v does not wrap ErrUnknownSchema", name, err)
			continue
		}
		if !strings.Contains(err.Error(), `"orders.place-order.v9"`) {
			t.Errorf("%s: error %q does not name the schema", name, err)
		}
	}
}

func TestValidateJSONMalformed(t *testing.T) {
	v := newTestValidator(t)
	tests := []struct {
		name   string
		data   string
		offset int64
		syntax bool // the cause is a *json.SyntaxError
	}{
		{name: "empty", data: ``, offset: 0},
		{name: "only white space", data: " \n\t", offset: 3},
		{name: "bad first byte", data: `x`, offset: 0, syntax: true},
		{name: "bad byte after white space", data: `   {x}`, offset: 4, syntax: true},
		{name: "missing colon", data: `{"a" 1}`, offset: 5, syntax: true},
		{name: "cut short", data: `{"name": "Ad`, offset: 12},
		{name: "trailing value", data: `{"name": "Ada"} {}`, offset: 16},
		{name: "trailing garbage", data: `{}}`, offset: 2},
		{name: "two numbers", data: `1 2`, offset: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.ValidateJSON("order", []byte(tt.data))
			if !errors.Is(err, schema.ErrMalformed) {
				t.Fatalf("ValidateJSON(%q) = %v, want ErrMalformed", tt.data, err)
			}
			var merr *schema.MalformedError
			if !errors.As(err, &merr) {
				t.Fatalf("error %v is not a *MalformedError", err)
			}
			if merr.Offset != tt.offset {
				t.Errorf("Offset = %d, want %d (error %q)", merr.Offset, tt.offset, err)
			}
			if want := fmt.Sprintf("offset %d", tt.offset); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
			var syn *json.SyntaxError
			if errors.As(err, &syn) != tt.syntax {
				t.Errorf("errors.As(*json.SyntaxError) = %v, want %v", !tt.syntax, tt.syntax)
			}
		})
	}
}

func TestValidationErrorSummary(t *testing.T) {
	tests := []struct {
		name string
		err  *schema.ValidationError
		want string
	}{
		{
			name: "one",
			err:  &schema.ValidationError{Schema: "s", Violations: []schema.Violation{{Field: "/a", Rule: "minimum", Message: "must be >= 1"}}},
			want: `document does not match schema "s": /a: must be >= 1`,
		},
		{
			name: "root",
			err:  &schema.ValidationError{Schema: "s", Violations: []schema.Violation{{Rule: "type", Message: "must be an object, not an array"}}},
			want: `document does not match schema "s": (root): must be an object, not an array`,
		},
		{
			name: "more than five",
			err: &schema.ValidationError{Schema: "s", Violations: []schema.Violation{
				{Field: "/a", Message: "m"}, {Field: "/b", Message: "m"}, {Field: "/c", Message: "m"},
				{Field: "/d", Message: "m"}, {Field: "/e", Message: "m"}, {Field: "/f", Message: "m"}, {Field: "/g", Message: "m"},
			}},
			want: `document does not match schema "s": /a: m; /b: m; /c: m; /d: m; /e: m; and 2 more`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q\nwant      %q", got, tt.want)
			}
		})
	}
}

// TestConcurrentUse runs many validations at once; run with -race to check
// that a Validator shares nothing mutable between calls.
func TestConcurrentUse(t *testing.T) {
	v := newTestValidator(t)
	docs := []struct {
		data  string
		field string // "" when valid
	}{
		{validOrder, ""},
		{`{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada", "count": 0}`, "/count"},
		{`{"id": "nope", "name": "Ada"}`, "/id"},
		{`{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada", "address": {}}`, "/address/city"},
	}

	const workers, rounds = 8, 100
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				d := docs[(w+i)%len(docs)]
				err := v.ValidateJSON("order", []byte(d.data))
				var verr *schema.ValidationError
				switch {
				case d.field == "" && err != nil:
					errs <- fmt.Errorf("valid %s: %v", d.data, err)
					return
				case d.field != "" && (!errors.As(err, &verr) || len(verr.Violations) != 1 || verr.Violations[0].Field != d.field):
					errs <- fmt.Errorf("%s: got %v, want one violation at %s", d.data, err, d.field)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestValidateRefusesNumbersBeyondLimits(t *testing.T) {
	v := newTestValidator(t)
	manyTags := strings.Repeat(`1, `, 20) + `1e2000000`
	tests := []struct {
		name  string
		set   string
		field string
	}{
		{name: "huge exponent on a bounded number", set: `"price": 1e2000000`, field: "/price"},
		{name: "huge negative exponent", set: `"price": 1e-401`, field: "/price"},
		{name: "literal of 402 characters", set: `"count": 1` + strings.Repeat("0", 401), field: "/count"},
		{name: "inside an array checked for duplicates", set: `"tags": [` + manyTags + `]`, field: "/tags/20"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := `{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada", ` + tt.set + `}`

			got := violations(t, v.ValidateJSON("order", []byte(doc)), "order")

			if len(got) != 1 || got[0].Field != tt.field || got[0].Rule != "number" {
				t.Fatalf("violations = %+v, want one with field %q and rule number", got, tt.field)
			}
		})
	}

	t.Run("numbers at the limits are evaluated", func(t *testing.T) {
		doc := `{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada", "price": 1e400, "count": 1` + strings.Repeat("0", 399) + `}`
		got := violations(t, v.ValidateJSON("order", []byte(doc)), "order")
		want := []schema.Violation{
			{Field: "/count", Rule: "maximum", Message: "must be <= 10"},
			{Field: "/price", Rule: "exclusiveMaximum", Message: "must be < 1000.5"},
		}
		if !slices.Equal(got, want) {
			t.Errorf("violations = %+v, want %+v", got, want)
		}
	})

	t.Run("a json.Number that is not a number is the caller's bug", func(t *testing.T) {
		doc := map[string]any{"id": "0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11", "name": "Ada", "price": json.Number("12abc")}
		err := v.Validate("order", doc)
		var verr *schema.ValidationError
		if err == nil || errors.As(err, &verr) || !strings.Contains(err.Error(), "not a JSON number") {
			t.Fatalf("Validate = %v, want a plain error saying it is not a JSON number", err)
		}
	})
}
