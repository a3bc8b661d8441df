package projections

// An internal test: decode is unexported, and it is the unit whose
// strictness must not change when its JSON decoder does.

import (
	stdjson "encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
)

// delivered marshals e as millrace publishes it, with ce_time at.
func delivered(tb testing.TB, e events.Message, at time.Time) *message.Message {
	tb.Helper()
	m := cloudevents.Marshaler{Source: events.SourceOrders, Now: func() time.Time { return at }}
	msg, err := m.Marshal(e)
	if err != nil {
		tb.Fatalf("marshal %s: %v", e.Name(), err)
	}
	return msg
}

// BenchmarkDecode decodes the events of an order's life as a rebuild reads
// them: placed (v1, upcast, and v2), paid, shipped.
func BenchmarkDecode(b *testing.B) {
	at := time.Date(2025, 3, 1, 10, 0, 0, 1_000_000, time.UTC)
	lines := []events.PricedLine{{SKU: "tea", Quantity: 5, UnitPriceCents: 500, LineTotalCents: 2500}}
	id := "00000001-0000-4000-8000-000000000001"
	for _, bc := range []struct {
		e      events.Message
		upcast bool
	}{
		{events.OrderPlaced{OrderID: id, UserID: "u-1", Currency: "EUR", TotalCents: 2500, PlacedAt: at, Lines: lines}, true},
		{events.OrderPlacedV2{OrderID: id, UserID: "u-1", Currency: "EUR", TotalCents: 2500, ItemCount: 5, PlacedAt: at, Lines: lines}, false},
		{events.OrderPaid{OrderID: id, UserID: "u-1", AmountCents: 2500, Currency: "EUR", PaymentRef: "pay", PaidAt: at}, false},
		{events.OrderShipped{OrderID: id, UserID: "u-1", Carrier: "DHL", ShippedAt: at}, false},
	} {
		typ, ok := events.Lookup(bc.e.Name())
		if !ok {
			b.Fatalf("no type %s", bc.e.Name())
		}
		msg := delivered(b, bc.e, at)
		pos := Position{Topic: events.TopicOrderEvents, Partition: 1, Offset: 42}
		b.Run(fmt.Sprintf("type=%s", bc.e.Name()), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decode(msg, typ, pos, bc.upcast); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// sampleOf fills every field of a new value of typ, so that its JSON form
// names every field of the type: strings, numbers, booleans, times and one
// element of every slice.
func sampleOf(typ events.Type) events.Message {
	m := typ.New()
	fill(reflect.ValueOf(m).Elem(), 1)
	return m
}

func fill(v reflect.Value, n int) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s-%d é\u2028<&>", n))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(n) * 1000003)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range s.Len() {
			fill(s.Index(i), n+i+1)
		}
		v.Set(s)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			at := time.Date(2025, 3, 14, 9, 26, 53, 589793000, time.FixedZone("CET", 3600))
			v.Set(reflect.ValueOf(at.Add(time.Duration(n) * time.Hour)))
			return
		}
		for i := range v.NumField() {
			fill(v.Field(i), n+i)
		}
	}
}

// payloadSeeds are inputs that tell JSON decoders apart, for a type with
// the fields of OrderPlaced (order_id, lines, total_cents, placed_at, …);
// each is tried against every type.
var payloadSeeds = []string{
	``,
	`null`,
	`{}`,
	`[]`,
	`"x"`,
	`0`,
	`{"order_id":"a"} `,
	"\t{\"order_id\":\"a\"}\r\n",
	`{"order_id":"a"}x`,
	`{"order_id":"a"}{}`,
	`{"order_id":"a",}`,
	`{"order_id":"a" "user_id":"b"}`,
	`{order_id:"a"}`,
	`{'order_id':'a'}`,
	`{"unknown":1,"order_id":"a","nested":{"x":[1,{"y":null}]}}`,
	`{"order_id":"a","order_id":"b"}`,
	`{"ORDER_ID":"a","Order_Id":"b"}`,
	`{"order_id":"a","ORDER_ID":"b"}`,
	`{"ORDER_ID":"b","order_id":"a"}`,
	`{"order_ıd":"a"}`,
	`{"order_\u0069d":"a"}`,
	`{"\u017fku":"a"}`,
	`{"lines":[{"s\u212au":"a","\u017fKU":"b"}]}`,
	"{\"lines\":[{\"s\u212au\":\"a\"},{\"\u017fku\":\"b\"}],\"job\":1}",
	"{\"ſku\":\"a\",\"sKu\":\"b\",\"\u017f\":\"c\",\"ORDER_İD\":\"d\"}",
	`{"lines":[{"SKU":"x","sKu":"y"}]}`,
	`{"order_id":null,"lines":null,"total_cents":null,"placed_at":null,"was_paid":null}`,
	`{"lines":[null,{"sku":"a"}]}`,
	`{"lines":[{"sku":"a"}],"lines":[]}`,
	`{"lines":[{"sku":"a","quantity":2}],"lines":[{"sku":"b"}]}`,
	`{"lines":{}}`,
	`{"lines":"x"}`,
	`{"lines":[1]}`,
	`{"order_ids":["a",1]}`,
	`{"order_id":1}`,
	`{"order_id":true}`,
	`{"order_id":{}}`,
	`{"total_cents":"1"}`,
	`{"total_cents":1.0}`,
	`{"total_cents":1e3}`,
	`{"total_cents":-0}`,
	`{"total_cents":-}`,
	`{"total_cents":01}`,
	`{"total_cents":+1}`,
	`{"total_cents":9223372036854775807}`,
	`{"total_cents":9223372036854775808}`,
	`{"total_cents":-9223372036854775809}`,
	`{"quantity":2147483648,"item_count":-2147483649,"attempt":99999999999999999999}`,
	`{"total_cents":0x10}`,
	`{"total_cents":NaN}`,
	`{"was_paid":"true"}`,
	`{"was_paid":1}`,
	`{"was_paid":tru}`,
	`{"more":false,"more":true}`,
	`{"placed_at":"2025-03-14T09:26:53Z"}`,
	`{"placed_at":"2025-03-14T09:26:53.589793+01:00"}`,
	`{"placed_at":"2025-03-14 09:26:53Z"}`,
	`{"placed_at":"2025-02-30T09:26:53Z"}`,
	`{"placed_at":"2025-03-14T24:00:00Z"}`,
	`{"placed_at":"2025-03-14T09:26:53.Z"}`,
	`{"placed_at":"2025-03-14T09:26:53.1234567891Z"}`,
	`{"placed_at":"2025-03-14T09:26:53+25:00"}`,
	`{"placed_at":"\u0032025-03-14T09:26:53Z"}`,
	`{"placed_at":1}`,
	`{"placed_at":{}}`,
	`{"placed_at":""}`,
	`{"order_id":"a\"b\\c\/d\b\f\n\r\t\u00e9\u2028"}`,
	`{"order_id":"\ud83d\ude00 \ud83d \ude00 \udc00\ud800"}`,
	`{"order_id":"\u00"}`,
	`{"order_id":"\x"}`,
	"{\"order_id\":\"a\x01b\"}",
	"{\"order_id\":\"a\x7fb\"}",
	"{\"order_id\":\"\xff\xfe\xc3\"}",
	"{\"order_id\":\"\xed\xa0\x80\"}",
	"{\"\xff\":\"a\"}",
	"{\"order_id\":\"a\"}\x00",
	"\xef\xbb\xbf{\"order_id\":\"a\"}",
	`{"order_id":"a"`,
	`{"lines":[{"sku":"a"}`,
	`{"lines":[{"sku":"a"},]}`,
	`{"currencies":[{"currency":"EUR","orders_paid":"1"}]}`,
	`{"currencies":[{"currency":"EUR","net_cents":1.5}]}`,
	`{"lines":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	`{"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	`{"x":1e999,"y":-1e-999,"z":123456789012345678901234567890}`,
	`{"x":"\u0000"}`,
}

// FuzzDecodeAgreesWithEncodingJSON holds unmarshalPayload to
// encoding/json.Unmarshal for every message type: both accept an input or
// both refuse it, and what both accept decodes to the same value.
func FuzzDecodeAgreesWithEncodingJSON(f *testing.F) {
	types := events.Types()
	for i, typ := range types {
		real, err := stdjson.Marshal(sampleOf(typ))
		if err != nil {
			f.Fatalf("marshal a sample %s: %v", typ.Name, err)
		}
		f.Add(uint8(i), real)
		var generic map[string]any
		if err := stdjson.Unmarshal(real, &generic); err != nil {
			f.Fatalf("decode the sample %s: %v", typ.Name, err)
		}
		for k, v := range generic { // each field once, upper-cased, as an unknown type, as null
			for _, variant := range []map[string]any{{strings.ToUpper(k): v}, {k: []any{v}}, {k: nil}} {
				b, err := stdjson.Marshal(variant)
				if err != nil {
					f.Fatalf("marshal a variant of %s: %v", typ.Name, err)
				}
				f.Add(uint8(i), b)
			}
		}
	}
	for _, s := range payloadSeeds {
		for i := range types {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		typ := types[int(which)%len(types)]
		want, got := typ.New(), typ.New()
		wantErr := stdjson.Unmarshal(data, want)
		gotErr := unmarshalPayload(data, got)
		switch {
		case (wantErr == nil) != (gotErr == nil):
			t.Fatalf("%s %q: encoding/json says %v, unmarshalPayload says %v", typ.Name, data, wantErr, gotErr)
		case wantErr == nil && !reflect.DeepEqual(got, want):
			t.Fatalf("%s %q: encoding/json decodes\n%#v\nunmarshalPayload decodes\n%#v", typ.Name, data, want, got)
		}
	})
}

func TestDecode(t *testing.T) {
	at := time.Date(2025, 3, 1, 10, 0, 0, 1_000_000, time.UTC)
	placed := events.OrderPlaced{OrderID: "o-1", UserID: "u-1", Currency: "EUR", TotalCents: 2500, PlacedAt: at,
		Lines: []events.PricedLine{{SKU: "tea", Quantity: 5, UnitPriceCents: 500, LineTotalCents: 2500}}}
	typ, _ := events.Lookup(placed.Name())
	pos := Position{Topic: events.TopicOrderEvents, Partition: 1, Offset: 42}

	t.Run("an order placed in v1, upcast", func(t *testing.T) {
		msg := delivered(t, placed, at)
		e, err := decode(msg, typ, pos, true)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		want := &events.OrderPlacedV2{OrderID: "o-1", UserID: "u-1", Currency: "EUR", TotalCents: 2500, ItemCount: 5,
			PlacedAt: at, Lines: placed.Lines}
		if !reflect.DeepEqual(e.Data, want) {
			t.Errorf("Data = %#v, want %#v", e.Data, want)
		}
		if e.ID != msg.UUID || e.Type != want.Name() || e.WireType != placed.Name() || e.Key != "o-1" ||
			e.Source != events.SourceOrders || !e.Time.Equal(at) || e.Time.Location() != time.UTC ||
			e.Topic != pos.Topic || e.Partition != pos.Partition || e.Offset != pos.Offset {
			t.Errorf("Event = %+v", e)
		}
	})

	for _, tc := range []struct {
		name    string
		payload string
		ceTime  string
	}{
		{"a payload that is not JSON", `{"order_id":`, ""},
		{"a field of the wrong type", `{"order_id":"o-1","total_cents":"2500"}`, ""},
		{"a number out of range", `{"order_id":"o-1","total_cents":9223372036854775808}`, ""},
		{"data after the payload", `{"order_id":"o-1"} {}`, ""},
		{"a ce_time that is not RFC 3339", `{"order_id":"o-1"}`, "2025-03-01 10:00:00Z"},
		{"a ce_time out of range", `{"order_id":"o-1"}`, "2025-02-29T10:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := delivered(t, placed, at)
			msg.Payload = []byte(tc.payload)
			if tc.ceTime != "" {
				msg.Metadata.Set(cloudevents.Time, tc.ceTime)
			}
			if _, err := decode(msg, typ, pos, true); !errors.Is(err, ErrMalformedEvent) {
				t.Errorf("decode: %v, want ErrMalformedEvent", err)
			}
		})
	}
}
