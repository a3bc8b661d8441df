package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/platform/auth/secret"
	"github.com/millrace/millrace/platform/config"
)

// cliRules is a rules document with a secret, served by the real admin
// handler to the real CLI.
type cliRules struct {
	Name   string        `yaml:"name"`
	Window time.Duration `yaml:"window"`
	Rate   float64       `yaml:"rate"`
	Token  secret.String `yaml:"token"`
}

func (r cliRules) validate() error {
	if r.Rate <= 0 {
		return &cliRuleError{[]string{"rate"}, "must be above 0"}
	}
	return nil
}

type cliRuleError struct {
	path []string
	msg  string
}

func (e *cliRuleError) Error() string        { return strings.Join(e.path, ".") + ": " + e.msg }
func (e *cliRuleError) ConfigPath() []string { return e.path }

// configAdmin serves a live configuration from a file holding a secret,
// with its history, over a real HTTP server, until the test ends.
func configAdmin(t *testing.T) (url, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte("name: first # the first\nrate: 1\ntoken: tok-EXAMPLE-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	live, err := config.New(config.NewFile(path), config.Options[cliRules]{
		Defaults: func() cliRules { return cliRules{Window: time.Second} },
		Validate: cliRules.validate, Debounce: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	history := config.NewHistory()
	history.MarkCaughtUp()
	rec, err := config.NewRecorder(live, config.RecorderConfig{Publisher: pubsub, History: history, Instance: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := live.Run(ctx, func(cliRules) error { return nil }); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	wg.Go(func() {
		if err := rec.Run(ctx); err != nil {
			t.Errorf("recorder: %v", err)
		}
	})
	srv := httptest.NewServer(config.AdminHandler(live, history, config.AdminOptions{}))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		wg.Wait()
		_ = pubsub.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for len(history.List(config.NewFile(path).ID())) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first version was not recorded within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return srv.URL, path
}

// TestConfigCLI runs millrace config against the real admin handler: get,
// a refused set, sets, history, rollback; no configured secret ever shows.
func TestConfigCLI(t *testing.T) {
	url, path := configAdmin(t)
	env := []string{"MILLRACE_ADMIN_URL=" + url, "USER=carol", "MILLRACE_TOKEN="}
	const secrets = "tok-EXAMPLE"
	steps := []struct {
		name    string
		args    []string
		wantErr bool
		want    []string // in stdout, or stderr on error
		notWant []string
	}{
		{name: "get everything", args: []string{"config", "get"},
			want: []string{"# configuration version 1, in force since ", "# layer: " + path + " (revision ", "<- config set writes here",
				"name: first\n", "window: 1s\n", "rate: 1\n", `token: "***"`}},
		{name: "get one key", args: []string{"config", "get", "window"}, want: []string{"1s\n"}},
		{name: "get as JSON", args: []string{"config", "get", "--json"}, want: []string{`"window": "1s"`, `"token": "***"`, `"writable": "file://`}},
		{name: "get an unknown key", args: []string{"config", "get", "nope"}, wantErr: true,
			want: []string{"get the rules: nope is not a setting"}},
		{name: "a refused set", args: []string{"config", "set", "rate", "0"}, wantErr: true,
			want: []string{"set rate: refused; nothing was written:", path + ":2: rate: must be above 0"}},
		{name: "a misspelt key", args: []string{"config", "set", "rte", "2"}, wantErr: true,
			want: []string{path + `:4: unknown field "rte"`}},
		{name: "set", args: []string{"config", "set", "rate", "2.5", "--as", "alice", "--reason", "more"},
			want: []string{"Written to " + path + " (revision ", "in force as configuration version 2", "recorded as version 2 of file://"}},
		{name: "set a secret", args: []string{"config", "set", "token", "tok-EXAMPLE-2"},
			want: []string{"recorded as version 3"}},
		{name: "history", args: []string{"config", "history"},
			want: []string{"VERSION  WHEN", "1        ", "found at start", "first version (3 settings)",
				"alice", "config set rate", "rate: 1 -> 2.5",
				"carol", "config set token", "token: (secret changed)"}},
		{name: "one version", args: []string{"config", "history", "2"},
			want: []string{"Version      2", "Who          alice", "Reason       more", "Changes:\n  rate: 1 -> 2.5", "Document:\n  name: first # the first\n  rate: 2.5\n"}},
		{name: "a version that does not exist", args: []string{"config", "history", "9"}, wantErr: true,
			want: []string{"has no version 9 (it has 3)"}},
		{name: "rollback", args: []string{"config", "rollback", "1", "--as", "bob"},
			want: []string{"in force as configuration version 4", "recorded as version 4"}},
		{name: "after the rollback", args: []string{"config", "get", "rate"}, want: []string{"1\n"}},
		{name: "the rollback in the history", args: []string{"config", "history", "4", "--json"},
			want: []string{`"who": "bob"`, `"via": "rollback to version 1"`}},
		{name: "a bad version", args: []string{"config", "rollback", "x"}, wantErr: true,
			want: []string{`version "x": want the number millrace config history shows`}},
		{name: "nothing listening", args: []string{"config", "get", "--admin-url", "http://127.0.0.1:1"}, wantErr: true,
			want: []string{"is millrace running there?"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			stdout, stderr, err := cli(t, env, s.args...)
			var exit interface{ ExitCode() int }
			if s.wantErr != (err != nil) || (err != nil && (!errors.As(err, &exit) || exit.ExitCode() != 1)) {
				t.Fatalf("millrace %s: %v; stdout:\n%s\nstderr:\n%s", strings.Join(s.args, " "), err, stdout, stderr)
			}
			out := stdout
			if s.wantErr {
				out = stderr
			}
			for _, w := range s.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not say %q:\n%s", w, out)
				}
			}
			if strings.Contains(stdout+stderr, secrets) {
				t.Errorf("a secret shows:\n%s%s", stdout, stderr)
			}
		})
	}
	// The secret in force is the one set last: the rollback kept it.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `token: "tok-EXAMPLE-2"`) || !strings.Contains(string(data), "rate: 1") {
		t.Errorf("file after the rollback:\n%s\nwant version 1's settings with the secret in force", data)
	}
	var probe map[string]any
	stdout, _, err := cli(t, env, "config", "history", "--json")
	if err != nil || json.Unmarshal([]byte(stdout), &probe) != nil {
		t.Errorf("history --json is not JSON: %v\n%s", err, stdout)
	}
}
