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
	topic       string
	hash        string
	keyed       bool // the client sent an Idempotency-Key
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
	return func(w http.ResponseWriter, r *http.Request) error {
		in, err := g.intake(w, r, c)
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
func (g *Gateway) intake(w http.ResponseWriter, r *http.Request, c commandRoute) (intake, error) {
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

	in := intake{topic: topicOf(c.name)}
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
	if isObject {
		obj[c.idField] = in.aggregateID
		if c.name == (events.PlaceOrder{}).Name() {
			if _, ok := obj["currency"]; !ok {
				obj["currency"] = g.cfg.DefaultCurrency
			}
		}
	}

	if err := g.deps.Validator.Validate(c.name, doc); err != nil {
		return intake{}, fmt.Errorf("validate %s: %w", c.name, err)
	}
	in.cmd, err = decodeCommand(c.name, doc)
	if err != nil {
		return intake{}, err
	}
	in.hash, err = requestHash(r, in.cmd)
	if err != nil {
		return intake{}, err
	}
	return in, nil
}

// publish sends the command as a CloudEvent to its command topic, stamped
// (ce_time) with the time it is accepted at and carrying the request's
// digest (ce_requesthash), from which the command log records both.
func (g *Gateway) publish(r *http.Request, in intake, acceptedAt time.Time) error {
	marshaler := cloudevents.Marshaler{
		Source:  events.SourceGateway,
		NewUUID: func() string { return in.id },
		Now:     func() time.Time { return acceptedAt },
	}
	msg, err := marshaler.Marshal(in.cmd)
	if err != nil {
		return fmt.Errorf("encode command %s: %w", in.id, err)
	}
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
		return writeJSON(w, http.StatusAccepted, accepted{
			CommandID: o.CommandID,
			Status:    commands.StatusPending,
			Links:     acceptedLinks{Command: commandURL, Resource: resource},
		})
	}
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

// decodeCommand decodes a validated document into its typed command. The
// schema has already checked the document. JSON Schema counts 2.0 and 2e3
// as integers, Go's decoder does not: integral numbers are rewritten as
// integers first. What can still fail is a number too large for its Go type.
func decodeCommand(name string, doc any) (events.Message, error) {
	typ, ok := events.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("decode command: no type %s in package events", name)
	}
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
// command document, so that a reused Idempotency-Key with another body is
// recognised.
func requestHash(r *http.Request, cmd events.Message) (string, error) {
	canonical, err := json.Marshal(cmd)
	if err != nil {
		return "", fmt.Errorf("hash request: encode %s: %w", cmd.Name(), err)
	}
	h := sha256.New()
	h.Write([]byte(r.Method))
	h.Write([]byte{0})
	h.Write([]byte(r.URL.Path))
	h.Write([]byte{0})
	h.Write(canonical)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// topicOf returns the command topic of a wire name.
func topicOf(name string) string {
	t, _ := events.Lookup(name)
	return t.Topic
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
