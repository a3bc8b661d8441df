package schema

import (
	"fmt"
	"strings"
)

// Violation is one way in which a document breaks its schema.
type Violation struct {
	// Field is the JSON pointer (RFC 6901) of the value at fault, such as
	// "/lines/0/quantity"; "" is the document itself. For a missing or an
	// unknown property it names that property ("/user_id"), so a client sees
	// which field to add or remove.
	Field string `json:"field"`
	// Rule is the schema keyword that failed: "required", "type", "minimum",
	// "format", "pattern", "additionalProperties", …; or "number" for a
	// numeric literal too long or too large to evaluate (see Validate).
	Rule string `json:"rule"`
	// Message says in plain English what the value must be, such as
	// "must be >= 1" or `missing property "user_id"`.
	Message string `json:"message"`
}

// String renders the violation as "<field>: <message>", with "(root)" for
// the document itself.
func (v Violation) String() string {
	field := v.Field
	if field == "" {
		field = "(root)"
	}
	return field + ": " + v.Message
}

// ValidationError reports every violation of one document against one
// schema. Violations are sorted by Field (array indexes in numeric order),
// then Rule and Message, and there is at least one.
type ValidationError struct {
	Schema     string      `json:"schema"`
	Violations []Violation `json:"violations"`
}

// maxSummarised bounds how many violations Error spells out.
const maxSummarised = 5

// Error summarises the violations on one line.
func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "document does not match schema %q: ", e.Schema)
	for i, v := range e.Violations {
		if i == maxSummarised {
			fmt.Fprintf(&b, "; and %d more", len(e.Violations)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(v.String())
	}
	return b.String()
}

// MalformedError reports input that is not one well-formed JSON value. It
// wraps ErrMalformed and the decoder's error.
type MalformedError struct {
	// Offset is the 0-based byte offset in the input where decoding broke;
	// the input length when it ended too early.
	Offset int64
	// Err says what was wrong there.
	Err error
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("malformed JSON at byte offset %d: %v", e.Offset, e.Err)
}

// Unwrap returns ErrMalformed and the underlying error, so that both
// errors.Is(err, ErrMalformed) and errors.As(err, &*json.SyntaxError) work.
func (e *MalformedError) Unwrap() []error { return []error{ErrMalformed, e.Err} }
