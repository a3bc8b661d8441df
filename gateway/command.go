package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/schema"
	"github.com/millrace/millrace/projections/commands"
)

// commandRoute describes one POST that becomes a command.
type commandRoute struct {
	path string
	// name is the command's wire name; its schema and type in package events.
	name string
	// creates is true when the command makes a new aggregate whose id the
	// server assigns (derived from the command id); false when the
	// aggregate id comes from the path.
	creates bool
	// idField is the document field holding the aggregate id, which the
	// server assigns: a request body must not carry it.
	idField string
	// aggregateKind is folded into the derived aggregate id, so that two
	// kinds of aggregate never share an id.
	aggregateKind string
	// resource is the URL of the aggregate the command changes.
	resource func(aggregateID string) string
}

func commandRoutes() []commandRoute {
	order := func(id string) string { return "/v1/orders/" + id }
	return []commandRoute{
		{path: "/v1/users", name: events.RegisterUser{}.Name(), creates: true, idField: "user_id", aggregateKind: "user",
			resource: func(id string) string { return "/v1/users/" + id + "/orders" }},
		{path: "/v1/orders", name: events.PlaceOrder{}.Name(), creates: true, idField: "order_id", aggregateKind: "order",
			resource: order},
		{path: "/v1/orders/{id}/pay", name: events.PayOrder{}.Name(), idField: "order_id", resource: order},
		{path: "/v1/orders/{id}/cancel", name: events.CancelOrder{}.Name(), idField: "order_id", resource: order},
		{path: "/v1/orders/{id}/ship", name: events.ShipOrder{}.Name(), idField: "order_id", resource: order},
	}
}

// checkCommandRoutes makes sure every command route names a command type
// of package events.
func checkCommandRoutes() error {
	var errs []error
	for _, c := range commandRoutes() {
		if t, ok := events.Lookup(c.name); !ok || t.Kind != events.KindCommand {
			errs = append(errs, fmt.Errorf("route %s: %s is not a command type of package events", c.path, c.name))
		}
	}
	return errors.Join(errs...)
}

// accepted is the body of a 202 answer.
type accepted struct {
	CommandID string          `json:"command_id"`
	Status    commands.Status `json:"status"`
	Links     acceptedLinks   `json:"links"`
}

type acceptedLinks struct {
	Command  string `json:"command"`
	Resource string `json:"resource"`
}

// intake is one command on its way through the pipeline.
type intake struct {
	id          string
	aggregateID string
	cmd         events.Message
	// payload is cmd encoded as JSON, once: the message's payload and
	// what the request digest is taken of.
	payload []byte
	topic   string
	hash    string
	keyed   bool // the client sent an Idempotency-Key
}

// command returns the handler of one command route.
//
// A command is published, and answered 202 once the broker acknowledged it;
// the command log learns of it from the command topic (type, aggregate id,
// acceptance time and the request's digest travel in the message), and this
// gateway remembers it meanwhile (recent.go).
//
// With an Idempotency-Key the command id is derived from the key, and a
// retry is looked up before anything is published: when the command is known
// (to the log, or to this gateway's record) the retry is answered from what
// is known and not published again, or refused with 422 when it carries
// another body. One race is left: a retry that arrives on another gateway
// instance, or while the first request is still waiting for its ack, before
// the log has consumed the first command, publishes it a second time. That
// is harmless: both messages have the same command id, and the command
// handlers keep an inbox of the ids they processed (docs/adr/0003), so the
// second has no effect. Should the two bodies differ, the handler acts on the
// first in the partition, and the log keeps that one's digest: a later retry
// with the other body is refused with 422.
func (g *Gateway) command(c commandRoute) func(http.ResponseWriter, *http.Request) error {
	// Looked up once, not per request (checkCommandRoutes made sure it exists).
	typ, _ := events.Lookup(c.name)
	return func(w http.ResponseWriter, r *http.Request) error {
		in, err := g.intake(w, r, c, typ)
		if err != nil {
			return err
		}

		if in.keyed {
			known, err := g.lookup(r.Context(), in.id)
			switch {
			case errors.Is(err, commands.ErrNotFound):
			case err != nil:
				return fmt.Errorf("look up command %s: %w", in.id, err)
			case known.RequestHash != "" && known.RequestHash != in.hash:
				return errIdempotencyKeyReused
			default:
				// The same request again (or a command published before
				// digests travelled with it): answer from what is known.
				return g.respond(w, r, c, known)
			}
		}

		// A request whose deadline already passed (a slow upload under a
		// short route timeout) is refused before anything is published.
		if err := r.Context().Err(); err != nil {
			return fmt.Errorf("before publishing command %s: %w", in.id, err)
		}
		acceptedAt := time.Now().UTC()
		if err := g.publish(r, in, acceptedAt); err != nil {
			return err
		}
		o, first := g.recent.add(commands.Outcome{
			CommandID: in.id, Type: c.name, AggregateID: in.aggregateID,
			RequestHash: in.hash, AcceptedAt: acceptedAt,
		}, time.Now())
		if !first && o.RequestHash != in.hash {
			// A concurrent request with the same key and another body was
			// accepted here first; see above for what becomes of this one.
			return errIdempotencyKeyReused
		}
		return g.respond(w, r, c, o)
	}
}

// lookup returns what is known of a command: the command log's outcome,
// else this gateway's record of a command it accepted and the log has not
// consumed yet (pending). Neither knowing it is an error wrapping
// commands.ErrNotFound. When the log knows the command without a request
// digest (it learnt of it from its events first), the record's digest is
// filled in.
func (g *Gateway) lookup(ctx context.Context, id string) (commands.Outcome, error) {
	o, err := g.deps.Commands.Get(ctx, id)
	switch {
	case err == nil:
		if o.RequestHash == "" {
			if rec, ok := g.recent.get(id, time.Now()); ok {
				o.RequestHash = rec.RequestHash
			}
		}
		return o, nil
	case errors.Is(err, commands.ErrNotFound):
		if rec, ok := g.recent.get(id, time.Now()); ok {
			return rec, nil
		}
	}
	return commands.Outcome{}, err
}

// intake runs the request through the pipeline, in order: content type,
// body size, JSON syntax, server-assigned fields, id assignment, schema,
// typed decoding. Any failure stops it before anything is published.
func (g *Gateway) intake(w http.ResponseWriter, r *http.Request, c commandRoute, typ events.Type) (intake, error) {
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return intake{}, err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	if err != nil {
		return intake{}, fmt.Errorf("read request body: %w", err)
	}
	doc, err := decodeJSON(body)
	if err != nil {
		return intake{}, err
	}
	obj, isObject := doc.(map[string]any)
	if isObject {
		if _, ok := obj[c.idField]; ok {
			return intake{}, &violationsError{violations: []schema.Violation{{
				Field:   "/" + c.idField,
				Rule:    "server-assigned",
				Message: "must not be sent: the server assigns it; remove it from the request body",
			}}}
		}
	}

	in := intake{topic: typ.Topic}
	key, keyed, err := idempotencyKey(r)
	if err != nil {
		return intake{}, err
	}
	in.keyed = keyed
	commandID, err := newCommandID(r, key, keyed)
	if err != nil {
		return intake{}, err
	}
	in.id = commandID.String()
	if c.creates {
		in.aggregateID = uuid.NewSHA1(commandID, []byte(c.aggregateKind)).String()
	} else {
		in.aggregateID = mux.Vars(r)["id"]
	}
	// The fields the server sets, in the document the schema checks and
	// in the typed command decoded after it.
	var assigned []field
	if isObject {
		assigned = append(assigned, field{c.idField, in.aggregateID})
		if c.name == (events.PlaceOrder{}).Name() {
			if _, ok := obj["currency"]; !ok {
				assigned = append(assigned, field{"currency", g.cfg.DefaultCurrency})
			}
		}
		for _, f := range assigned {
			obj[f.name] = f.value
		}
	}

	if err := g.deps.Validator.Validate(c.name, doc); err != nil {
		return intake{}, fmt.Errorf("validate %s: %w", c.name, err)
	}
	in.cmd, err = decodeCommand(typ, body, assigned, doc)
	if err != nil {
		return intake{}, err
	}
	in.payload, err = json.Marshal(in.cmd)
	if err != nil {
		return intake{}, fmt.Errorf("encode %s: %w", c.name, err)
	}
	in.hash = requestHash(r, in.payload)
	return in, nil
}

// field is a field of a command document that the server assigns.
type field struct{ name, value string }

// publish sends the command as a CloudEvent to its command topic, stamped
// (ce_time) with the time it is accepted at and carrying the request's
// digest (ce_requesthash), from which the command log records both.
func (g *Gateway) publish(r *http.Request, in intake, acceptedAt time.Time) error {
	marshaler := cloudevents.Marshaler{
		Source:  events.SourceGateway,
		NewUUID: func() string { return in.id },
		Now:     func() time.Time { return acceptedAt },
	}
	msg, err := marshaler.Marshal(attributesOf{in.cmd})
	if err != nil {
		return fmt.Errorf("encode command %s: %w", in.id, err)
	}
	msg.Payload = in.payload
	msg.UUID = in.id
	msg.Metadata.Set(cloudevents.CorrelationID, in.id)
	msg.Metadata.Set(cloudevents.RequestHash, in.hash)
	setAuthContext(r.Context(), msg) // who sent it (auth.go)
	msg.SetContext(r.Context())
	if err := g.deps.Publisher.Publish(in.topic, msg); err != nil {
		return &publishError{topic: in.topic, err: err}
	}
	return nil
}

// respond answers with what is known about a command: the outcome once it
// is known (waiting for it if the client asked to), 202 while it is pending.
func (g *Gateway) respond(w http.ResponseWriter, r *http.Request, c commandRoute, o commands.Outcome) error {
	if wait, ok := preferredWait(r.Header.Values("Prefer"), g.cfg.MaxWait); ok {
		w.Header().Set("Preference-Applied", fmt.Sprintf("wait=%d", int64(wait/time.Second)))
		if o.Status == commands.StatusPending {
			ctx, cancel := context.WithTimeout(r.Context(), wait)
			latest, err := g.deps.Commands.Wait(ctx, o.CommandID)
			cancel()
			switch {
			case err == nil:
				o = latest
			case errors.Is(err, commands.ErrNotFound):
				// The log had not consumed the command by the deadline:
				// it is still pending.
			default:
				return fmt.Errorf("wait for command %s: %w", o.CommandID, err)
			}
		}
	}

	resource := c.resource(o.AggregateID)
	switch o.Status {
	case commands.StatusSucceeded:
		status := http.StatusOK
		if c.creates {
			status = http.StatusCreated
			w.Header().Set("Location", resource)
		}
		return writeJSON(w, status, o)
	case commands.StatusRejected:
		return &rejectedError{outcome: o}
	default:
		commandURL := "/v1/commands/" + o.CommandID
		w.Header().Set("Location", commandURL)
		a := accepted{
			CommandID: o.CommandID,
			Status:    commands.StatusPending,
			Links:     acceptedLinks{Command: commandURL, Resource: resource},
		}
		if body, ok := a.appendJSON(make([]byte, 0, 256)); ok {
			writeBody(w, http.StatusAccepted, "application/json", body)
			return nil
		}
		return writeJSON(w, http.StatusAccepted, a)
	}
}

// appendJSON appends a as writeJSON encodes it, byte for byte, when every
// string of it is plain printable ASCII (ids and the paths made of them,
// as a rule), and returns false otherwise. Every 202 is answered with one:
// a reflective encoding costs more than the rest of the answer.
func (a accepted) appendJSON(dst []byte) ([]byte, bool) {
	for _, s := range []string{a.CommandID, string(a.Status), a.Links.Command, a.Links.Resource} {
		if !isPlainJSON(s) {
			return nil, false
		}
	}
	dst = append(dst, `{"command_id":"`...)
	dst = append(dst, a.CommandID...)
	dst = append(dst, `","status":"`...)
	dst = append(dst, a.Status...)
	dst = append(dst, `","links":{"command":"`...)
	dst = append(dst, a.Links.Command...)
	dst = append(dst, `","resource":"`...)
	dst = append(dst, a.Links.Resource...)
	return append(dst, `"}}`...), true
}

// checkContentType accepts application/json and any application/*+json,
// with an optional UTF-8 charset.
func checkContentType(header string) error {
	mediaType, params, err := mime.ParseMediaType(header)
	if err != nil {
		return &unsupportedMediaTypeError{got: header}
	}
	isJSON := mediaType == "application/json" ||
		(strings.HasPrefix(mediaType, "application/") && strings.HasSuffix(mediaType, "+json"))
	if !isJSON {
		return &unsupportedMediaTypeError{got: header}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return &unsupportedMediaTypeError{got: header}
	}
	return nil
}

// decodeJSON parses body as exactly one JSON value, numbers as json.Number,
// nested at most MaxJSONDepth deep.
func decodeJSON(body []byte) (any, error) {
	if err := checkDepth(body, MaxJSONDepth); err != nil { // auth_limits.go
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		var syn *json.SyntaxError
		switch {
		case errors.As(err, &syn):
			return nil, &malformedJSONError{offset: max(syn.Offset-1, 0), what: syn.Error()}
		case errors.Is(err, io.EOF):
			return nil, &malformedJSONError{offset: int64(len(body)), what: "the body is empty"}
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, &malformedJSONError{offset: int64(len(body)), what: "unexpected end of input"}
		default:
			return nil, &malformedJSONError{offset: dec.InputOffset(), what: err.Error()}
		}
	}
	end := dec.InputOffset()
	if rest := bytes.TrimLeft(body[end:], " \t\r\n"); len(rest) > 0 {
		return nil, &malformedJSONError{
			offset: int64(len(body) - len(rest)),
			what:   "unexpected data after the JSON value",
		}
	}
	return doc, nil
}

// attributesOf hands the CloudEvents marshaler a command's name and key,
// the attributes it stamps, but not the command itself to encode: the
// command was encoded once already (intake.payload, of which the request
// digest is taken), and that payload replaces the marshaler's. Encoding it
// again, or having encoding/json check and compact the encoding made
// (which it does with a json.Marshaler's output), costs as much as the
// first encoding.
type attributesOf struct{ events.Message }

func (attributesOf) MarshalJSON() ([]byte, error) { return []byte("{}"), nil }

// decodeCommand decodes a validated request into its typed command: body
// is the request's JSON object, assigned the fields the server set in doc,
// the document the schema checked (body with assigned). The schema has
// already checked the document.
//
// The body is decoded as it came, the assigned fields appended at its end
// (so that they win over any spelling of theirs in the body, as they do in
// doc). That fails on what Go's decoder refuses and JSON Schema accepts:
// JSON Schema counts 2.0 and 2e3 as integers, Go's decoder does not. Such a
// request, or one that is not an object, is decoded from doc instead, its
// integral numbers rewritten as integers first. What can still fail is a
// number too large for its Go type.
func decodeCommand(typ events.Type, body []byte, assigned []field, doc any) (events.Message, error) {
	if data, ok := appendFields(body, assigned); ok {
		cmd := typ.New()
		if err := json.Unmarshal(data, cmd); err == nil {
			return cmd, nil
		}
	}
	return decodeDocument(typ, doc)
}

// appendFields returns the JSON object body with fields added at its end,
// or false when body is not an object.
func appendFields(body []byte, fields []field) ([]byte, bool) {
	obj := bytes.TrimSpace(body)
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return nil, false
	}
	inner := bytes.TrimSpace(obj[1 : len(obj)-1])
	out := make([]byte, 0, len(obj)+64*len(fields))
	out = append(out, obj[:len(obj)-1]...)
	for i, f := range fields {
		if len(inner) > 0 || i > 0 {
			out = append(out, ',')
		}
		out = appendJSONString(out, f.name)
		out = append(out, ':')
		out = appendJSONString(out, f.value)
	}
	return append(out, '}'), true
}

// appendJSONString appends s as a JSON string. The values the server
// assigns are ids and codes, printable ASCII: those are copied as they are,
// anything else is encoded by encoding/json.
func appendJSONString(dst []byte, s string) []byte {
	if !isPlainJSON(s) {
		b, _ := json.Marshal(s) // a string always encodes
		return append(dst, b...)
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// isPlainJSON reports whether s is encoded in JSON as it is, between
// quotes, by every encoder of this package: printable ASCII without quote,
// backslash, or the characters encoding/json escapes for HTML.
func isPlainJSON(s string) bool {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// decodeDocument decodes a validated document into its typed command, its
// integral numbers (2.0, 2e3) rewritten as integers first.
func decodeDocument(typ events.Type, doc any) (events.Message, error) {
	name := typ.Name
	data, err := json.Marshal(integralNumbers(doc))
	if err != nil {
		return nil, fmt.Errorf("decode %s: re-encode document: %w", name, err)
	}
	cmd := typ.New()
	if err := json.Unmarshal(data, cmd); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return nil, &violationsError{violations: []schema.Violation{{
				Field:   "/" + strings.ReplaceAll(typeErr.Field, ".", "/"),
				Rule:    "type",
				Message: fmt.Sprintf("must be a number that fits a %s", typeErr.Type),
			}}}
		}
		return nil, fmt.Errorf("decode %s: %w", name, err)
	}
	return cmd, nil
}

// requestHash fingerprints a request by method, path and the canonical
// command document (the typed command encoded as JSON), so that a reused
// Idempotency-Key with another body is recognised.
func requestHash(r *http.Request, canonical []byte) string {
	h := sha256.New()
	h.Write([]byte(r.Method))
	h.Write([]byte{0})
	h.Write([]byte(r.URL.Path))
	h.Write([]byte{0})
	h.Write(canonical)
	return hex.EncodeToString(h.Sum(nil))
}

// integralNumbers rewrites, in place, every number of doc that has an
// integral value (2.0, 2e3) in integer form (2, 2000), and returns doc.
func integralNumbers(doc any) any {
	switch v := doc.(type) {
	case map[string]any:
		for k, x := range v {
			v[k] = integralNumbers(x)
		}
	case []any:
		for i, x := range v {
			v[i] = integralNumbers(x)
		}
	case json.Number:
		// The schema bounds every number before this runs; the length
		// check keeps a huge exponent from costing big.Rat time anyway.
		if len(v) <= 64 && strings.ContainsAny(string(v), ".eE") {
			if r, ok := new(big.Rat).SetString(string(v)); ok && r.IsInt() {
				return json.Number(r.Num().String())
			}
		}
	}
	return doc
}
