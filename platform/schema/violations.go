package schema

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// violationsOf flattens the library's error tree into one Violation per leaf
// failure, sorted and without duplicates. It fails only when the document
// held a value that is not JSON, which is the caller's bug.
func violationsOf(verr *jsonschema.ValidationError) ([]Violation, error) {
	var c collector
	c.walk(verr)
	if c.err != nil {
		return nil, c.err
	}
	sortViolations(c.out)
	return slices.Compact(c.out), nil
}

type collector struct {
	out []Violation
	err error
}

func (c *collector) add(field, rule, msg string) {
	c.out = append(c.out, Violation{Field: field, Rule: rule, Message: msg})
}

func (c *collector) walk(e *jsonschema.ValidationError) {
	field := pointer(e.InstanceLocation)
	switch k := e.ErrorKind.(type) {
	case *kind.Schema, *kind.Group, *kind.Reference, *kind.AllOf:
		// Containers: every cause must hold, so every cause is reported.
		for _, cause := range e.Causes {
			c.walk(cause)
		}
	case *kind.InvalidJsonValue:
		if c.err == nil {
			c.err = fmt.Errorf("value at %q is a Go %T, not a decoded JSON value", field, k.Value)
		}
	case *kind.Required:
		for _, p := range k.Missing {
			c.add(child(field, p), "required", fmt.Sprintf("missing property %s", strconv.Quote(p)))
		}
	case *kind.AdditionalProperties:
		for _, p := range k.Properties {
			c.add(child(field, p), "additionalProperties", fmt.Sprintf("unknown property %s", strconv.Quote(p)))
		}
	case *kind.DependentRequired:
		for _, p := range k.Missing {
			c.add(child(field, p), "dependentRequired", fmt.Sprintf("missing property %s, required when %s is present", strconv.Quote(p), strconv.Quote(k.Prop)))
		}
	case *kind.Dependency:
		for _, p := range k.Missing {
			c.add(child(field, p), "dependencies", fmt.Sprintf("missing property %s, required when %s is present", strconv.Quote(p), strconv.Quote(k.Prop)))
		}
	case *kind.PropertyNames:
		c.add(child(field, k.Property), "propertyNames", fmt.Sprintf("property name %s is not allowed", strconv.Quote(k.Property)))
	case *kind.AnyOf:
		c.add(field, "anyOf", "must match at least one of the allowed forms: "+alternatives(field, e.Causes))
	case *kind.OneOf:
		if len(k.Subschemas) == 0 {
			c.add(field, "oneOf", "must match exactly one of the allowed forms: "+alternatives(field, e.Causes))
		} else {
			c.add(field, "oneOf", fmt.Sprintf("must match exactly one of the allowed forms, but matches forms %d and %d", k.Subschemas[0]+1, k.Subschemas[1]+1))
		}
	default:
		if len(e.Causes) > 0 && !leafWithCauses(k) {
			for _, cause := range e.Causes {
				c.walk(cause)
			}
			return
		}
		c.add(field, rule(k), describe(k))
	}
}

// leafWithCauses tells kinds whose causes explain them (the items that did
// not match "contains", say) from containers.
func leafWithCauses(k jsonschema.ErrorKind) bool {
	switch k.(type) {
	case *kind.Contains, *kind.MinContains, *kind.ContentSchema:
		return true
	}
	return false
}

// alternatives renders the failures of each branch of anyOf/oneOf, so that a
// client sees what each allowed form asked for.
func alternatives(field string, causes []*jsonschema.ValidationError) string {
	forms := make([]string, 0, len(causes))
	for _, cause := range causes {
		var c collector
		c.walk(cause)
		sortViolations(c.out)
		parts := make([]string, 0, len(c.out))
		for _, v := range slices.Compact(c.out) {
			if v.Field == field {
				parts = append(parts, v.Message)
			} else {
				parts = append(parts, v.String())
			}
		}
		forms = append(forms, "("+strings.Join(parts, ", ")+")")
	}
	return strings.Join(forms, " or ")
}

// rule names the keyword that failed.
func rule(k jsonschema.ErrorKind) string {
	switch k.(type) {
	case *kind.FalseSchema:
		return "false"
	case *kind.Not:
		return "not"
	case *kind.RefCycle:
		return "$ref"
	}
	if path := k.KeywordPath(); len(path) > 0 {
		return path[0]
	}
	return "schema"
}

// english renders the library's own messages for kinds this package does not
// phrase itself.
var english = message.NewPrinter(language.English)

// describe phrases a leaf failure for a client.
func describe(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Type:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = article(w)
		}
		return fmt.Sprintf("must be %s, not %s", strings.Join(want, " or "), article(k.Got))
	case *kind.Minimum:
		return "must be >= " + number(k.Want)
	case *kind.Maximum:
		return "must be <= " + number(k.Want)
	case *kind.ExclusiveMinimum:
		return "must be > " + number(k.Want)
	case *kind.ExclusiveMaximum:
		return "must be < " + number(k.Want)
	case *kind.MultipleOf:
		return "must be a multiple of " + number(k.Want)
	case *kind.MinLength:
		return fmt.Sprintf("must be at least %s long", plural(k.Want, "character"))
	case *kind.MaxLength:
		return fmt.Sprintf("must be at most %s long", plural(k.Want, "character"))
	case *kind.Pattern:
		return fmt.Sprintf("must match the pattern %s", strconv.Quote(k.Want))
	case *kind.Format:
		return fmt.Sprintf("must be a valid %s: %v", formatName(k.Want), k.Err)
	case *kind.Enum:
		if len(k.Want) == 1 {
			return "must be " + literal(k.Want[0])
		}
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = literal(w)
		}
		return "must be one of " + strings.Join(want, ", ")
	case *kind.Const:
		return "must be " + literal(k.Want)
	case *kind.MinItems:
		return fmt.Sprintf("must have at least %s", plural(k.Want, "item"))
	case *kind.MaxItems:
		return fmt.Sprintf("must have at most %s", plural(k.Want, "item"))
	case *kind.UniqueItems:
		return fmt.Sprintf("must not repeat items: items %d and %d are equal", k.Duplicates[0], k.Duplicates[1])
	case *kind.MinProperties:
		return fmt.Sprintf("must have at least %s", plural(k.Want, "property"))
	case *kind.MaxProperties:
		return fmt.Sprintf("must have at most %s", plural(k.Want, "property"))
	case *kind.AdditionalItems:
		return fmt.Sprintf("has %s more than allowed", plural(k.Count, "item"))
	case *kind.Contains:
		return "must contain at least one matching item"
	case *kind.MinContains:
		return fmt.Sprintf("must contain at least %s matching", plural(k.Want, "item"))
	case *kind.MaxContains:
		return fmt.Sprintf("must contain at most %s matching", plural(k.Want, "item"))
	case *kind.FalseSchema:
		return "is not allowed"
	case *kind.Not:
		return "must not match the excluded form"
	}
	return k.LocalizedString(english)
}

func formatName(f string) string {
	switch f {
	case "uuid":
		return "UUID"
	case "email":
		return "email address"
	case "date-time":
		return "RFC 3339 date-time"
	case "date":
		return "RFC 3339 date"
	case "time":
		return "RFC 3339 time"
	case "uri":
		return "URI"
	case "ipv4":
		return "IPv4 address"
	case "ipv6":
		return "IPv6 address"
	}
	return f
}

// article names a JSON type with its indefinite article.
func article(t string) string {
	switch t {
	case "null":
		return "null"
	case "integer", "object", "array":
		return "an " + t
	}
	return "a " + t
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "y") {
		noun = strings.TrimSuffix(noun, "y") + "ie"
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// number renders a schema bound the way it was most likely written.
func number(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// literal renders a JSON value from a schema (enum, const) as JSON.
func literal(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// pointer builds a JSON pointer (RFC 6901) from reference tokens.
func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(escapeToken(t))
	}
	return b.String()
}

func child(ptr, token string) string { return ptr + "/" + escapeToken(token) }

func escapeToken(t string) string {
	return strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1")
}

// sortViolations orders by Field, comparing pointers token by token with
// array indexes in numeric order (/lines/2 before /lines/10), then by Rule and
// Message.
func sortViolations(vs []Violation) {
	slices.SortFunc(vs, func(a, b Violation) int {
		return cmp.Or(comparePointers(a.Field, b.Field), cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Message, b.Message))
	})
}

func comparePointers(a, b string) int {
	if a == b {
		return 0
	}
	at, bt := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(at) && i < len(bt); i++ {
		if c := compareTokens(at[i], bt[i]); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(at), len(bt))
}

func compareTokens(a, b string) int {
	ai, aerr := strconv.ParseUint(a, 10, 64)
	bi, berr := strconv.ParseUint(b, 10, 64)
	if aerr == nil && berr == nil {
		return cmp.Compare(ai, bi)
	}
	return cmp.Compare(a, b)
}
