package schema_test

import (
	"errors"
	"fmt"
	"testing/fstest"

	"github.com/millrace/millrace/platform/schema"
)

// A client sent a sign-up with three mistakes; the Validator reports every
// one, with the JSON pointer of the field, the rule it broke and a message to
// show the client.
func Example() {
	schemas := fstest.MapFS{
		"signup.json": {Data: []byte(`{
			"$schema": "https://json-schema.org/draft/2020-12/schema",
			"type": "object",
			"additionalProperties": false,
			"required": ["user_id", "email", "seats"],
			"properties": {
				"user_id": {"type": "string", "format": "uuid"},
				"email":   {"type": "string", "format": "email"},
				"seats":   {"type": "integer", "minimum": 1}
			}
		}`)},
	}
	v, err := schema.New(schemas)
	if err != nil {
		fmt.Println(err)
		return
	}

	err = v.ValidateJSON("signup", []byte(`{"email": "ada@example.com", "seats": 0, "plan": "pro"}`))

	var verr *schema.ValidationError
	if errors.As(err, &verr) {
		for _, violation := range verr.Violations {
			fmt.Printf("%-8s %-20s %s\n", violation.Field, violation.Rule, violation.Message)
		}
	}
	// Output:
	// /plan    additionalProperties unknown property "plan"
	// /seats   minimum              must be >= 1
	// /user_id required             missing property "user_id"
}

// Input that is not JSON is told apart from a document that breaks the
// schema, and the error says where it broke.
func ExampleValidator_ValidateJSON_malformed() {
	v, err := schema.New(fstest.MapFS{"any.json": {Data: []byte(`{}`)}})
	if err != nil {
		fmt.Println(err)
		return
	}

	err = v.ValidateJSON("any", []byte(`{"seats": 1,}`))

	fmt.Println(errors.Is(err, schema.ErrMalformed))
	fmt.Println(err)
	// Output:
	// true
	// malformed JSON at byte offset 12: invalid character '}' looking for beginning of object key string
}
