// Package adminapi holds what the platform's admin HTTP APIs share (the
// poison queue's, the live configuration's): writing JSON and RFC 9457
// problem answers, and the client side of one JSON request, which turns a
// problem answer into an error. Each API keeps its own routes, problem
// types and error type; this package knows none of them.
package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// WriteJSON answers status with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	write(w, "application/json", status, v)
}

// WriteProblem answers status with the problem document p (application/
// problem+json): a struct with at least type, title, status and detail.
func WriteProblem(w http.ResponseWriter, status int, p any) {
	write(w, "application/problem+json", status, p)
}

func write(w http.ResponseWriter, contentType string, status int, v any) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away; nothing to do
}

// ResponseError is an answer of 300 or more. Type and Detail are the
// problem's when the answer was a problem document with a detail; else
// Detail names the request and quotes the answer's first line. Body is the
// whole answer, for the problem's other members.
type ResponseError struct {
	Status int
	Type   string
	Detail string
	Body   []byte
}

func (e *ResponseError) Error() string { return e.Detail }

// maxAnswer bounds the answer Do reads.
const maxAnswer = 64 << 20

// Client sends requests to one admin API.
type Client struct {
	HTTP *http.Client
	// Base is the API's base URL, http://host:port.
	Base string
	// Unreachable is the hint added to the error when Base cannot be
	// reached, e.g. which flag names it.
	Unreachable string
}

// Do sends method path with body encoded as JSON (none when nil), and
// decodes a 2xx answer into out (unless out is nil). An answer of 300 or
// more is a *ResponseError; a failure to reach Base carries the hint.
func (c Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	res, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s%s: %w (%s)", method, c.Base, path, err, c.Unreachable)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if res.StatusCode >= 300 {
		var p struct {
			Type   string `json:"type"`
			Detail string `json:"detail"`
		}
		if json.Unmarshal(raw, &p) == nil && p.Detail != "" {
			return &ResponseError{Status: res.StatusCode, Type: p.Type, Detail: p.Detail, Body: raw}
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(raw)), "\n")
		return &ResponseError{Status: res.StatusCode, Detail: fmt.Sprintf("%s %s: %s: %s", method, path, res.Status, line), Body: raw}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}
