package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/schema"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/sales"
)

// problemBase is the prefix of every problem type URI.
const problemBase = "https://millrace.dev/problems/"

// Problem types: one per kind of failure. Clients branch on them.
const (
	ProblemMalformedJSON        = problemBase + "malformed-json"
	ProblemSchemaViolation      = problemBase + "schema-violation"
	ProblemBodyTooLarge         = problemBase + "body-too-large"
	ProblemUnsupportedMediaType = problemBase + "unsupported-media-type"
	ProblemNotFound             = problemBase + "not-found"
	ProblemMethodNotAllowed     = problemBase + "method-not-allowed"
	ProblemCommandRejected      = problemBase + "command-rejected"
	ProblemIdempotencyKeyReused = problemBase + "idempotency-key-reused"
	ProblemUnavailable          = problemBase + "unavailable"
	ProblemBadParameter         = problemBase + "bad-parameter"
	ProblemInternal             = problemBase + "internal"
)

// problemContentType is the media type of every error response (RFC 9457).
const problemContentType = "application/problem+json"

// retryAfterSeconds is what a 503 asks the client to wait before retrying.
const retryAfterSeconds = 1

// problem is an RFC 9457 problem document with millrace's extensions.
type problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Instance string `json:"instance"`

	// Errors lists every violation of a schema-violation problem.
	Errors []schema.Violation `json:"errors,omitempty"`
	// Offset is the byte offset of a malformed-json problem.
	Offset *int64 `json:"offset,omitempty"`
	// Parameter names the header or query parameter of a bad-parameter problem.
	Parameter string `json:"parameter,omitempty"`
	// MaxBytes is the body limit of a body-too-large problem.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// MaxDepth is the nesting limit of a json-too-deep problem (auth_limits.go).
	MaxDepth int `json:"max_depth,omitempty"`
	// CommandID, Code and Reason describe a command-rejected or
	// idempotency-key-reused problem.
	CommandID string `json:"command_id,omitempty"`
	Code      string `json:"code,omitempty"`
	Reason    string `json:"reason,omitempty"`

	headers http.Header
}

// Errors the handlers return; writeError turns each into its problem.

// errRouteNotFound: no route has the request's path.
var errRouteNotFound = errors.New("no such route")

// errIdempotencyKeyReused: the key named a command with another body.
var errIdempotencyKeyReused = errors.New("idempotency key reused with a different request")

// unsupportedMediaTypeError: the request body is not JSON.
type unsupportedMediaTypeError struct{ got string }

func (e *unsupportedMediaTypeError) Error() string {
	return fmt.Sprintf("unsupported content type %q", e.got)
}

// malformedJSONError: the body is not exactly one JSON value.
type malformedJSONError struct {
	offset int64
	what   string
}

func (e *malformedJSONError) Error() string {
	return fmt.Sprintf("malformed JSON at byte offset %d: %s", e.offset, e.what)
}

// violationsError: the command document breaks rules the gateway checks
// itself (server-assigned fields, types the schema cannot tell apart).
type violationsError struct{ violations []schema.Violation }

func (e *violationsError) Error() string {
	return (&schema.ValidationError{Violations: e.violations}).Error()
}

// paramError: a header or query parameter is missing or malformed.
type paramError struct {
	name   string
	detail string
}

func (e *paramError) Error() string { return fmt.Sprintf("parameter %s: %s", e.name, e.detail) }

// methodNotAllowedError: the path exists, the method does not.
type methodNotAllowedError struct {
	method string
	allow  []string
}

func (e *methodNotAllowedError) Error() string {
	return fmt.Sprintf("method %s not allowed", e.method)
}

// lookupError: a query for one resource failed; the wrapped error says why.
type lookupError struct {
	resource string // "order", "user", "command"
	id       string
	err      error
}

func (e *lookupError) Error() string {
	return fmt.Sprintf("look up %s %s: %v", e.resource, e.id, e.err)
}
func (e *lookupError) Unwrap() error { return e.err }

// rejectedError: the command's handler refused it.
type rejectedError struct{ outcome commands.Outcome }

func (e *rejectedError) Error() string {
	return fmt.Sprintf("command %s rejected: %s", e.outcome.CommandID, e.outcome.Code)
}

// ErrReadsUnavailable is wrapped by read-side implementations (such as
// gateway/upstream) when no instance could answer: a 503, not a 500.
var ErrReadsUnavailable = errors.New("no read edge answered")

// publishError: the command could not be handed to the broker.
type publishError struct {
	topic string
	err   error
}

func (e *publishError) Error() string { return fmt.Sprintf("publish to %s: %v", e.topic, e.err) }
func (e *publishError) Unwrap() error { return e.err }

// problemError is an error that knows its own problem (readyourwrites.go).
type problemError interface {
	error
	problem() problem
}

// problemFor maps an error to its problem. It is the one place that decides
// statuses. The bool is false for an internal error, which the caller logs.
func (g *Gateway) problemFor(err error) (problem, bool) {
	var (
		mediaErr   *unsupportedMediaTypeError
		tooLarge   *http.MaxBytesError
		malformed  *malformedJSONError
		invalid    *schema.ValidationError
		violations *violationsError
		param      *paramError
		method     *methodNotAllowedError
		lookup     *lookupError
		rejected   *rejectedError
		publish    *publishError
	)
	var own problemError
	switch {
	case errors.As(err, &own):
		return own.problem(), true
	case errors.As(err, &mediaErr):
		got := "no Content-Type header"
		if mediaErr.got != "" {
			got = fmt.Sprintf("Content-Type %q", mediaErr.got)
		}
		return problem{
			Type: ProblemUnsupportedMediaType, Title: "Unsupported media type", Status: http.StatusUnsupportedMediaType,
			Detail:  fmt.Sprintf("The request has %s. Send the body as JSON with Content-Type: application/json.", got),
			headers: http.Header{"Accept-Post": {"application/json"}},
		}, true
	case errors.As(err, &tooLarge):
		return problem{
			Type: ProblemBodyTooLarge, Title: "Request body too large", Status: http.StatusRequestEntityTooLarge,
			Detail:   fmt.Sprintf("The request body is larger than %d bytes. Send a smaller body.", tooLarge.Limit),
			MaxBytes: tooLarge.Limit,
		}, true
	case errors.As(err, &malformed):
		off := malformed.offset
		return problem{
			Type: ProblemMalformedJSON, Title: "Malformed JSON", Status: http.StatusBadRequest,
			Detail: fmt.Sprintf("The request body is not valid JSON: %s at byte offset %d. Send exactly one JSON object.",
				malformed.what, malformed.offset),
			Offset: &off,
		}, true
	case errors.As(err, &invalid):
		return violationProblem(invalid.Violations), true
	case errors.As(err, &violations):
		return violationProblem(violations.violations), true
	case errors.As(err, &param):
		return problem{
			Type: ProblemBadParameter, Title: "Bad parameter", Status: http.StatusBadRequest,
			Detail: param.detail, Parameter: param.name,
		}, true
	case errors.Is(err, errRouteNotFound):
		return problem{
			Type: ProblemNotFound, Title: "Not found", Status: http.StatusNotFound,
			Detail: "No resource lives at this path. Check the URL against the API documentation.",
		}, true
	case errors.As(err, &method):
		return problem{
			Type: ProblemMethodNotAllowed, Title: "Method not allowed", Status: http.StatusMethodNotAllowed,
			Detail: fmt.Sprintf("This resource does not support %s. Use one of: %s.",
				method.method, strings.Join(method.allow, ", ")),
			headers: http.Header{"Allow": {strings.Join(method.allow, ", ")}},
		}, true
	case errors.As(err, &lookup) && isNotFound(err):
		return problem{
			Type: ProblemNotFound, Title: "Not found", Status: http.StatusNotFound,
			Detail: fmt.Sprintf("No %s has the id %q. Check the id; a resource created a moment ago may take a moment to appear.",
				lookup.resource, lookup.id),
		}, true
	case errors.Is(err, sales.ErrBadDate):
		return problem{
			Type: ProblemBadParameter, Title: "Bad parameter", Status: http.StatusBadRequest,
			Detail: "The date parameter is not a valid date. Give a day as YYYY-MM-DD, e.g. date=2025-01-31.", Parameter: "date",
		}, true
	case errors.As(err, &rejected):
		o := rejected.outcome
		return problem{
			Type: ProblemCommandRejected, Title: "Command rejected", Status: rejectionStatus(o.Code),
			Detail:    fmt.Sprintf("The command was rejected (%s): %s.", o.Code, strings.TrimSuffix(o.Reason, ".")),
			CommandID: o.CommandID, Code: o.Code, Reason: o.Reason,
		}, true
	case errors.Is(err, errIdempotencyKeyReused):
		return problem{
			Type: ProblemIdempotencyKeyReused, Title: "Idempotency key reused", Status: http.StatusUnprocessableEntity,
			Detail: "This Idempotency-Key was already used for a request with a different body. " +
				"Use a new key for a new request, or resend the original body to learn the original command's outcome.",
		}, true
	case errors.Is(err, ErrReadsUnavailable):
		return problem{
			Type: ProblemUnavailable, Title: "Service unavailable", Status: http.StatusServiceUnavailable,
			Detail:  "No read edge could answer the query right now. Retry in a moment.",
			headers: http.Header{"Retry-After": {strconv.Itoa(retryAfterSeconds)}},
		}, true
	case errors.As(err, &publish):
		return problem{
			Type: ProblemUnavailable, Title: "Service unavailable", Status: http.StatusServiceUnavailable,
			Detail:  "The command could not be handed to the message broker; nothing was sent. Retry in a moment, with the same Idempotency-Key if you used one.",
			headers: http.Header{"Retry-After": {strconv.Itoa(retryAfterSeconds)}},
		}, true
	default:
		return problem{
			Type: ProblemInternal, Title: "Internal server error", Status: http.StatusInternalServerError,
			Detail: "The server failed to answer the request. Retry later; if it persists, report it with the time of the request.",
		}, false
	}
}

// isNotFound reports whether err says a looked-up resource does not exist.
func isNotFound(err error) bool {
	return errors.Is(err, orders.ErrNotFound) || errors.Is(err, orders.ErrUserNotFound) ||
		errors.Is(err, commands.ErrNotFound)
}

func violationProblem(vs []schema.Violation) problem {
	msgs := make([]string, 0, len(vs))
	for _, v := range vs {
		msgs = append(msgs, v.String())
	}
	return problem{
		Type: ProblemSchemaViolation, Title: "Request does not match the schema", Status: http.StatusUnprocessableEntity,
		Detail: "The request body breaks the command's schema: " + strings.Join(msgs, "; ") +
			". Fix the fields listed in errors and send it again.",
		Errors: vs,
	}
}

// rejectionStatus maps a rejection code to an HTTP status: the target is
// missing (404), the aggregate's state forbids the command (409), or the
// command itself is unacceptable (422).
func rejectionStatus(code string) int {
	switch {
	case code == events.CodeOrderNotFound:
		return http.StatusNotFound
	case events.RejectionIsConflict(code):
		return http.StatusConflict
	default:
		return http.StatusUnprocessableEntity
	}
}

// writeError answers with the problem for err, logging internal errors once.
func (g *Gateway) writeError(w http.ResponseWriter, r *http.Request, err error) {
	p, known := g.problemFor(err)
	p.Instance = r.URL.Path
	body, encErr := marshalJSON(p)
	if encErr != nil {
		// Cannot happen for the fields of a problem; answer plainly anyway.
		err, known = errors.Join(err, fmt.Errorf("encode problem: %w", encErr)), false
		p = problem{Type: ProblemInternal, Status: http.StatusInternalServerError}
		body = []byte(`{"type":"` + ProblemInternal + `","title":"Internal server error","status":500}`)
	}
	if !known {
		g.log.ErrorContext(r.Context(), "request failed",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", p.Status), slog.Any("error", err))
	}
	for k, vs := range p.headers {
		w.Header()[k] = vs
	}
	writeBody(w, p.Status, problemContentType, body)
}

// writeJSON answers with v as JSON. It fails, having written nothing, when v
// cannot be encoded.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	body, err := marshalJSON(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	writeBody(w, status, "application/json", body)
	return nil
}

// writeBody writes an encoded JSON body with a trailing newline.
func writeBody(w http.ResponseWriter, status int, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	// A failed write means the client went away: there is no one to tell.
	_, _ = w.Write(append(body, '\n'))
}

// marshalJSON encodes v without escaping <, > and &: responses are JSON for
// programs, not HTML, and "must be >= 1" should read as written.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
