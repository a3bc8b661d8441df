package adminapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/millrace/millrace/platform/adminapi"
)

func TestDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			var in map[string]string
			_ = jsonDecode(r, &in)
			adminapi.WriteJSON(w, http.StatusOK, map[string]string{"echo": in["say"]})
		case "/problem":
			adminapi.WriteProblem(w, http.StatusConflict, map[string]any{"type": "about:conflict", "title": "Conflict", "status": 409, "detail": "it changed", "extra": 7})
		default:
			http.Error(w, "no such thing\nsecond line", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	api := adminapi.Client{HTTP: srv.Client(), Base: srv.URL}

	var out struct{ Echo string }
	if err := api.Do(ctx, http.MethodPost, "/ok", map[string]string{"say": "hi"}, &out); err != nil || out.Echo != "hi" {
		t.Fatalf("Do /ok = %v, %+v; want the echo", err, out)
	}

	var re *adminapi.ResponseError
	err := api.Do(ctx, http.MethodGet, "/problem", nil, &out)
	if !errors.As(err, &re) || re.Status != 409 || re.Type != "about:conflict" || re.Detail != "it changed" || !strings.Contains(string(re.Body), `"extra":7`) {
		t.Fatalf("Do /problem = %#v, want the problem's status, type, detail and body", err)
	}

	err = api.Do(ctx, http.MethodGet, "/missing", nil, &out)
	if !errors.As(err, &re) || re.Status != 404 || re.Type != "" || re.Detail != "GET /missing: 404 Not Found: no such thing" {
		t.Fatalf("Do /missing = %v, want the request and the answer's first line", err)
	}

	err = adminapi.Client{HTTP: srv.Client(), Base: "http://127.0.0.1:1", Unreachable: "check MILLRACE_ADMIN_URL"}.Do(ctx, http.MethodGet, "/x", nil, &out)
	if err == nil || !strings.Contains(err.Error(), "MILLRACE_ADMIN_URL") {
		t.Fatalf("Do to nowhere = %v, want a hint at the admin URL", err)
	}
}

func jsonDecode(r *http.Request, v any) error { return json.NewDecoder(r.Body).Decode(v) }
