package schema_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/millrace/millrace/platform/schema"
)

// fuzzSeeds are inputs both fuzz targets start from.
var fuzzSeeds = []string{
	`{"order_id":"6d1f0f0e-2b6c-4d43-9c55-0d1e3f7a9b10","user_id":"a3c9e1b2-7d4f-4e8a-b6c5-1f2e3d4c5b6a","lines":[{"sku":"MUG-01","quantity":2,"unit_price_cents":1250}],"currency":"EUR"}`,
	`{"order_id":"x","user_id":1,"lines":[],"currency":"eur","extra":null}`,
	`{"lines":[{"sku":"","quantity":0,"unit_price_cents":-1},{"quantity":1e400}]}`,
	`{"lines":[{"quantity":1.0000000000000000000001,"unit_price_cents":1e2000000}]}`,
	`{"id":"0b6f4f3e-6a47-4c41-9a0e-6f6b8a3d2c11","name":"Ada","price":1e2000000,"tags":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,1e-9999999]}`,
	`{"contact":-1,"address":{"zip":1},"meta":{},"kind":"x","step":7.5,"a/b~c":[]}`,
	`{"order_id":"6D1F0F0E-2B6C-4D43-9C55-0D1E3F7A9B10"}`,
	`[{"a":[[[[[]]]]]}]`,
	`"\ud800"`,
	`{"a" 1}`,
	`{} {}`,
	``,
	`nul`,
	"\xff\xfe{}",
}

// FuzzValidateJSON feeds arbitrary bytes to ValidateJSON against the real
// orders.place-order.v1 schema, read from the repository's schemas folder
// (not imported: platform packages do not depend on the domain). It must
// never panic, and every outcome must be one of the documented ones.
func FuzzValidateJSON(f *testing.F) {
	v, err := schema.New(os.DirFS("../../schemas"))
	if err != nil {
		f.Fatalf("New(../../schemas): %v", err)
	}
	fuzzValidator(f, v, "orders.place-order.v1")
}

// FuzzValidateJSONKeywords does the same against testdata/order.json, whose
// properties use most keywords (number bounds, uniqueItems, anyOf, $ref), to
// reach the code paths place-order does not.
func FuzzValidateJSONKeywords(f *testing.F) {
	v, err := schema.New(os.DirFS("testdata"))
	if err != nil {
		f.Fatalf("New(testdata): %v", err)
	}
	fuzzValidator(f, v, "order")
}

func fuzzValidator(f *testing.F, v *schema.Validator, name string) {
	if !v.Has(name) {
		f.Fatalf("schema %s not found", name)
	}
	for _, seed := range fuzzSeeds {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		err := v.ValidateJSON(name, data)

		var merr *schema.MalformedError
		var verr *schema.ValidationError
		switch {
		case err == nil:
			if !json.Valid(data) {
				t.Fatalf("accepted input that encoding/json calls invalid: %q", data)
			}
		case errors.Is(err, schema.ErrMalformed):
			if !errors.As(err, &merr) {
				t.Fatalf("ErrMalformed without a *MalformedError: %v", err)
			}
			if merr.Offset < 0 || merr.Offset > int64(len(data)) {
				t.Fatalf("offset %d outside input of %d bytes", merr.Offset, len(data))
			}
			if json.Valid(data) {
				t.Fatalf("refused as malformed input that encoding/json accepts: %q: %v", data, err)
			}
		case errors.As(err, &verr):
			if !json.Valid(data) {
				t.Fatalf("validated input that encoding/json calls invalid: %q", data)
			}
			if len(verr.Violations) == 0 {
				t.Fatal("ValidationError without violations")
			}
			for i, vi := range verr.Violations {
				if vi.Field != "" && !strings.HasPrefix(vi.Field, "/") {
					t.Errorf("violation %d: field %q is not a JSON pointer", i, vi.Field)
				}
				if vi.Rule == "" || vi.Message == "" {
					t.Errorf("violation %d has no rule or message: %+v", i, vi)
				}
				if i > 0 && verr.Violations[i-1] == vi {
					t.Errorf("violation %d repeats the one before: %+v", i, vi)
				}
			}
		default:
			t.Fatalf("error is neither ErrMalformed nor *ValidationError: %v (%T)", err, err)
		}
	})
}
