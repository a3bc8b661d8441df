package poison

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/millrace/millrace/platform/adminapi"
)

// Client talks to the admin API that AdminHandler serves; the millrace
// poison command is built on it. It is safe for concurrent use.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client of the admin API at baseURL (scheme, host and
// port, e.g. http://127.0.0.1:8080). A nil hc uses a client with a 30 s
// timeout.
func NewClient(baseURL string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin url %q: want http://host:port, e.g. http://127.0.0.1:8080", baseURL)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), http: hc}, nil
}

// APIError is a problem the admin API answered with. It matches ErrNotFound,
// ErrConflict or ErrInvalid by its status.
type APIError struct {
	Status int
	Type   string
	Detail string
}

func (e *APIError) Error() string { return e.Detail }

// Unwrap maps the status to this package's errors.
func (e *APIError) Unwrap() error {
	switch e.Status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrConflict
	case http.StatusBadRequest:
		return ErrInvalid
	}
	return nil
}

// List returns the entries that match f.
func (c *Client) List(ctx context.Context, f Filter) ([]Entry, error) {
	q := url.Values{}
	for k, v := range map[string]string{"topic": f.Topic, "handler": f.Handler, "key": f.Key, "status": string(f.Status)} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.After > 0 {
		q.Set("after", strconv.FormatInt(f.After, 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out struct {
		Entries []Entry `json:"entries"`
	}
	path := "/admin/poison"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return out.Entries, nil
}

// Get returns entry id with its metadata, payload and history.
func (c *Client) Get(ctx context.Context, id int64) (Entry, error) {
	var e Entry
	err := c.do(ctx, http.MethodGet, "/admin/poison/"+strconv.FormatInt(id, 10), nil, &e)
	return e, err
}

// Requeue requeues entry id alone.
func (c *Client) Requeue(ctx context.Context, id int64) (Entry, error) {
	var e Entry
	err := c.do(ctx, http.MethodPost, "/admin/poison/"+strconv.FormatInt(id, 10)+"/requeue", nil, &e)
	return e, err
}

// RequeueSequence requeues the sequence of key for handler.
func (c *Client) RequeueSequence(ctx context.Context, handler, key string) (RequeueResult, error) {
	var res RequeueResult
	err := c.do(ctx, http.MethodPost, "/admin/poison/requeue", RequeueRequest{Handler: handler, Key: key}, &res)
	return res, err
}

// RequeueAll requeues every open entry.
func (c *Client) RequeueAll(ctx context.Context) (RequeueResult, error) {
	var res RequeueResult
	err := c.do(ctx, http.MethodPost, "/admin/poison/requeue", RequeueRequest{All: true}, &res)
	return res, err
}

// Drop drops entry id with reason.
func (c *Client) Drop(ctx context.Context, id int64, reason string) (Entry, error) {
	var e Entry
	err := c.do(ctx, http.MethodPost, "/admin/poison/"+strconv.FormatInt(id, 10)+"/drop", DropRequest{Reason: reason}, &e)
	return e, err
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	err := adminapi.Client{HTTP: c.http, Base: c.base, Unreachable: "is millrace running there? set --admin-url or MILLRACE_ADMIN_URL"}.Do(ctx, method, path, body, out)
	var re *adminapi.ResponseError
	if errors.As(err, &re) {
		return &APIError{Status: re.Status, Type: re.Type, Detail: re.Detail}
	}
	return err
}
