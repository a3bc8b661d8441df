package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/config"
)

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "gateway.max_in_flight", want: []string{"gateway", "max_in_flight"}},
		{in: "gateway.rate_limits[0].burst", want: []string{"gateway", "rate_limits", "0", "burst"}},
		{in: `router.handlers["notifications.orders.events"].retry`, want: []string{"router", "handlers", "notifications.orders.events", "retry"}},
		{in: `timeouts.routes["GET /v1/orders/{id}"]`, want: []string{"timeouts", "routes", "GET /v1/orders/{id}"}},
		{in: "rate_limits.0.burst", want: []string{"rate_limits", "0", "burst"}},
		{in: "", wantErr: "empty"},
		{in: "a..b", wantErr: "empty key"},
		{in: "a.", wantErr: "ends with a dot"},
		{in: "a[x]", wantErr: "neither a list index nor a quoted key"},
		{in: `a["x`, wantErr: "does not end"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := config.ParsePath(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("ParsePath = %v, %v; want an error saying %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ParsePath = %q, %v; want %q", got, err, tc.want)
			}
			if again, err := config.ParsePath(config.FormatPath(got)); err != nil || !slices.Equal(again, got) {
				t.Errorf("FormatPath %q does not read back: %q, %v", config.FormatPath(got), again, err)
			}
		})
	}
}

// TestSetEditsDocuments sets values in files of both formats and checks
// the documents written: a value on its own line is changed in place, the
// rest re-encoded in the file's own format.
func TestSetEditsDocuments(t *testing.T) {
	for _, tc := range []struct {
		name, file, doc string
		edit            config.Edit
		want            string
	}{
		{name: "yaml value in place", file: "r.yaml",
			doc:  "# top\nname: first   # why\nlimits:\n  rate: 1\n\n  window: 1s\n",
			edit: config.Edit{Path: "limits.window", Value: "2m"},
			want: "# top\nname: first   # why\nlimits:\n  rate: 1\n\n  window: 2m\n"},
		{name: "yaml quoted value in place", file: "r.yaml",
			doc:  "name: 'it''s'\n",
			edit: config.Edit{Path: "name", Value: "plain"},
			want: "name: plain\n"},
		{name: "yaml new key", file: "r.yaml",
			doc:  "name: first # why\n",
			edit: config.Edit{Path: "features.slow_path", Value: "true"},
			want: "name: first # why\nfeatures:\n  slow_path: true\n"},
		{name: "yaml unset", file: "r.yaml",
			doc:  "name: first\nlimits:\n  rate: 3\n",
			edit: config.Edit{Path: "limits.rate", Unset: true},
			want: "name: first\nlimits: {}\n"},
		{name: "json value in place", file: "r.json",
			doc:  "{\n  \"name\": \"first\",\n  \"limits\": {\"rate\": 1}\n}\n",
			edit: config.Edit{Path: "limits.rate", Value: "2.5"},
			want: "{\n  \"name\": \"first\",\n  \"limits\": {\"rate\": 2.5}\n}\n"},
		{name: "json string in place", file: "r.json",
			doc:  "{\"name\": \"first\"}\n",
			edit: config.Edit{Path: "name", Value: `a "quoted" name`},
			want: "{\"name\": \"a \\\"quoted\\\" name\"}\n"},
		{name: "json new section", file: "r.json",
			doc:  "{\"name\": \"first\"}\n",
			edit: config.Edit{Path: "limits.window", Value: "2s"},
			want: "{\n  \"name\": \"first\",\n  \"limits\": {\n    \"window\": \"2s\"\n  }\n}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tc.file)
			if err := os.WriteFile(path, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			live, err := config.New(config.NewFile(path), config.Options[rules]{Defaults: defaultRules, Validate: rules.validate})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := live.Load(t.Context()); err != nil {
				t.Fatal(err)
			}
			w, err := live.Set(t.Context(), tc.edit, config.Note{Who: "alice"})
			if err != nil || !w.Changed {
				t.Fatalf("Set = %+v, %v", w, err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("document:\n%s\nwant:\n%s", got, tc.want)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want the file's 0600 kept", fi.Mode().Perm())
			}
			if note, ok, _ := config.NewFile(path).NoteFor(t.Context(), got, w.Revision); ok {
				t.Errorf("a new File knows a note %+v: notes are per source", note)
			}
		})
	}
}

func TestSetRefusals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(path, []byte("limits:\n  rate: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	live, err := config.New(config.NewFile(path), config.Options[rules]{Defaults: defaultRules, Validate: rules.validate})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		edit config.Edit
		want string
	}{
		{config.Edit{Path: "limits.rte", Value: "1"}, `unknown field "rte"; known here: rate, window`},
		{config.Edit{Path: "limits.window", Value: "soon"}, `cannot use "soon" as a duration`},
		{config.Edit{Path: "limits.rate.x", Value: "1"}, "r.yaml:3: cannot use a mapping as a number"},
		{config.Edit{Path: "name", Value: "{a: [}"}, "is not YAML"},
		{config.Edit{Path: "name", Unset: true}, "name is not set in the document"},
		{config.Edit{Path: "a[", Value: "1"}, "is not closed"},
	} {
		t.Run(tc.edit.Path, func(t *testing.T) {
			_, err := live.Set(t.Context(), tc.edit, config.Note{})
			var ce *config.Error
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Set(%+v) = %v, want a refusal saying %q", tc.edit, err, tc.want)
			}
		})
	}
	if data, _ := os.ReadFile(path); string(data) != "limits:\n  rate: 1\n" {
		t.Errorf("the file was changed by refused edits: %q", data)
	}

	ro, err := config.New(config.NewEnv("P", func(string) string { return "" }, defaultRules(), config.EnvOptions{}),
		config.Options[rules]{Defaults: defaultRules})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Set(t.Context(), config.Edit{Path: "name", Value: "x"}, config.Note{}); !errors.Is(err, config.ErrNotWritable) {
		t.Errorf("Set on a read-only configuration = %v, want ErrNotWritable", err)
	}
}

func TestFileWriteConflict(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(path, []byte("name: a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := config.NewFile(path)
	_, rev, err := f.ReadRevision(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Someone saves meanwhile; the modification time moves on.
	later := time.Now().Add(time.Second)
	if err := os.WriteFile(path, []byte("name: b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(t.Context(), []byte("name: c\n"), rev, config.Note{}); !errors.Is(err, config.ErrConflict) {
		t.Errorf("Write with a stale revision = %v, want ErrConflict", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "name: b\n" {
		t.Errorf("file holds %q, want the newer save", data)
	}
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"changed, added, removed", "name: a\nlimits:\n  rate: 1\n  window: 1s\n", "name: b\nlimits:\n  rate: 1\nfeatures:\n  x: true\n",
			[]string{"name: a -> b", "+ features.x: true", "- limits.window: 1s"}},
		{"a list compared whole", "routes: [a, b]\n", "routes:\n  - a\n  - c\n", []string{"routes: [a, b] -> [a, c]"}},
		{"from nothing", "", "name: a\n", []string{"+ name: a"}},
		{"quoted keys", "routes:\n  \"GET /x\": 1s\n", "routes:\n  \"GET /x\": 2s\n", []string{`routes["GET /x"]: 1s -> 2s`}},
		{"nothing", "name: a\n", "name: a # same\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := config.Diff(tc.old, tc.new); !slices.Equal(got, tc.want) {
				t.Errorf("Diff = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFlags(t *testing.T) {
	flags, err := config.NewFlags(config.Flag{Name: "prefer_wait", Default: true}, config.Flag{Name: "beta"})
	if err != nil {
		t.Fatal(err)
	}
	if !flags.Enabled("prefer_wait") || flags.Enabled("beta") || flags.Enabled("undeclared") {
		t.Errorf("defaults: %v", flags.Values())
	}
	if err := flags.Set(map[string]bool{"beta": true}); err != nil {
		t.Fatal(err)
	}
	if !flags.Enabled("beta") || !flags.Enabled("prefer_wait") {
		t.Errorf("after Set(beta): %v; want beta on and the rest at defaults", flags.Values())
	}
	err = flags.Set(map[string]bool{"prefer_wiat": false})
	if err == nil || !strings.Contains(err.Error(), "prefer_wiat: unknown feature flag; known: prefer_wait, beta") {
		t.Errorf("Set of a misspelt flag = %v", err)
	}
	if !flags.Enabled("beta") {
		t.Error("a refused Set changed the flags")
	}
	var fe config.FieldError
	if !errors.As(flags.Check(map[string]bool{"x": true}), &fe) || !slices.Equal(fe.ConfigPath(), []string{"x"}) {
		t.Errorf("Check does not place the problem at its key")
	}
	if _, err := config.NewFlags(config.Flag{Name: "Bad-Name"}, config.Flag{Name: "a"}, config.Flag{Name: "a"}); err == nil ||
		!strings.Contains(err.Error(), `"Bad-Name"`) || !strings.Contains(err.Error(), `"a": declared twice`) {
		t.Errorf("NewFlags of bad declarations = %v", err)
	}
}
