package schema_test

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/millrace/millrace/platform/schema"
)

// BenchmarkValidate measures validating one order document (formats, a
// pattern, a $ref, nested items) against a compiled schema: as a decoded
// document (what the gateway does) and from JSON text (decode included).
func BenchmarkValidate(b *testing.B) {
	v, err := schema.New(os.DirFS("testdata"))
	if err != nil {
		b.Fatalf("compile: %v", err)
	}
	doc := []byte(`{"id":"5d1c1e0c-3f6b-4c1e-9a51-3a4b8f0c2d17","email":"a@example.com","at":"2026-01-02T03:04:05Z",
		"name":"tea","count":3,"price":12.5,"code":"EUR","kind":"retail","tags":["a","b"],
		"lines":[{"qty":1},{"qty":2}],"address":{"city":"Berlin","zip":"10115"}}`)
	if err := v.ValidateJSON("order", doc); err != nil {
		b.Fatalf("the benchmark document is invalid: %v", err)
	}
	b.Run("decoded", func(b *testing.B) {
		dec := json.NewDecoder(bytes.NewReader(doc))
		dec.UseNumber()
		var decoded any
		if err := dec.Decode(&decoded); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := v.Validate("order", decoded); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := v.ValidateJSON("order", doc); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
	})
}
