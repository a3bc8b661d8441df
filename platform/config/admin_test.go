package config_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/config"
)

func TestAdminAPI(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte("name: first\nadmin:\n  token: s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	live, err := config.New(config.NewFile(path), config.Options[rules]{Defaults: defaultRules, Validate: rules.validate, Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, live, true)
	srv := httptest.NewServer(config.AdminHandler(live, r.history, config.AdminOptions{}))
	t.Cleanup(srv.Close)
	c, err := config.NewClient(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	doc := config.NewFile(path).ID()
	r.waitVersions(t, doc, 1)

	v, err := c.Get(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(v.YAML, "s3cret") || strings.Contains(string(v.Config), "s3cret") || !strings.Contains(v.YAML, `token: "***"`) {
		t.Errorf("GET /admin/config shows the secret or hides its redaction:\n%s\n%s", v.YAML, v.Config)
	}
	if !strings.Contains(string(v.Config), `"window":"1s"`) || v.Writable != doc || v.Version != 1 || len(v.Layers) != 1 {
		t.Errorf("view %+v", v)
	}
	if v, err := c.Get(ctx, "limits.window"); err != nil || v.YAML != "1s\n" || string(v.Config) != `"1s"` || v.Key != "limits.window" {
		t.Errorf("GET ?key=limits.window = %+v, %v", v, err)
	}
	var ae *config.APIError
	if _, err := c.Get(ctx, "limits.nope"); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("GET of an unknown key = %v, want 404", err)
	}

	_, err = c.Set(ctx, config.SetRequest{Key: "limits.rate", Value: "0", Who: "alice"})
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || len(ae.Problems) != 1 ||
		ae.Problems[0].Line != 5 || !strings.Contains(ae.Problems[0].Message, "limits.rate: must be above 0") {
		t.Fatalf("PUT of an invalid value = %#v, want 422 naming the problem", err)
	}
	res, err := c.Set(ctx, config.SetRequest{Key: "name", Value: "second", Who: "alice", Reason: "why not"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Applied || res.Version != 2 || res.Recorded == nil || res.Recorded.Version != 2 || res.Recorded.Who != "alice" {
		t.Errorf("PUT = %+v; want it applied and recorded as version 2", res)
	}

	h, err := c.History(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if h.Document != doc || len(h.Changes) != 2 || h.Changes[1].Reason != "why not" {
		t.Errorf("history %+v", h)
	}
	res, err = c.Rollback(ctx, config.RollbackRequest{Version: 1, Who: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Applied || res.Recorded == nil || res.Recorded.Version != 3 || res.Recorded.Via != "rollback to version 1" || live.Current().Name != "first" {
		t.Errorf("rollback = %+v, in force %q", res, live.Current().Name)
	}
	if _, err := c.Rollback(ctx, config.RollbackRequest{Version: 9, Who: "bob"}); !errors.As(err, &ae) || ae.Status != http.StatusNotFound ||
		!strings.Contains(ae.Detail, "has no version 9 (it has 3)") {
		t.Errorf("rollback to a version that does not exist = %v, want 404", err)
	}
	res, err = c.Set(ctx, config.SetRequest{Key: "name", Value: "first", Who: "alice"})
	if err != nil || res.Written.Changed || !strings.Contains(res.Detail, "nothing was written") {
		t.Errorf("PUT of the value in force = %+v, %v", res, err)
	}
	resp, err := http.Post(srv.URL+"/admin/config/nope", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("unknown route: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
