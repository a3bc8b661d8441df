package config_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/config"
)

// stackFixture is defaults → file → environment → Consul KV, the layers of
// a millrace process, over a real file and a real Consul key.
type stackFixture struct {
	file string
	key  string
	kv   *config.ConsulKV
	put  func(doc string)
	live *config.Live[rules]
}

func newStack(t *testing.T, fileDoc string, env map[string]string, kvDoc string) (*stackFixture, error) {
	t.Helper()
	client := consulAgent(t).Client(t)
	f := &stackFixture{file: filepath.Join(t.TempDir(), "rules.yaml"), key: kvKey(t)}
	if err := os.WriteFile(f.file, []byte(fileDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	f.put = func(doc string) { kvPut(t, client, f.key, doc) }
	if kvDoc != "" {
		f.put(kvDoc)
	}
	var err error
	f.kv, err = config.NewConsulKV(client, f.key, config.KVOptions{MinRetry: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stack, err := config.NewStack(
		config.Layer{Source: config.NewFile(f.file)},
		config.Layer{Source: config.NewEnv("TEST_RULES", func(k string) string { return env[k] }, defaultRules(), config.EnvOptions{})},
		config.Layer{Source: f.kv, Optional: true},
	)
	if err != nil {
		t.Fatal(err)
	}
	f.live, err = config.New(stack, config.Options[rules]{Defaults: defaultRules, Validate: rules.validate, Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.live.Load(t.Context())
	return f, err
}

func TestStackMergesLayers(t *testing.T) {
	f, err := newStack(t,
		"name: from-file\nlimits:\n  rate: 2\n  window: 5s\nfeatures:\n  slow_path: true\n",
		map[string]string{"TEST_RULES__LIMITS__RATE": "3", "TEST_RULES__FEATURES__FAST_PATH": "false"},
		"name: from-kv\n")
	if err != nil {
		t.Fatal(err)
	}
	got := f.live.Current()
	want := rules{Name: "from-kv", Limits: limits{Rate: 3, Window: 5 * time.Second}, Features: map[string]bool{"fast_path": false, "slow_path": true}}
	if got.Name != want.Name || got.Limits != want.Limits || !mapsEqual(got.Features, want.Features) {
		t.Errorf("merged %+v, want %+v (KV over environment over file over defaults, key by key)", got, want)
	}
	if w, ok := f.live.Writable(); !ok || w.ID() != "consul:"+f.key {
		t.Errorf("writable = %v; want the Consul key, the highest writable layer", w)
	}
	snap := f.live.Snapshot()
	if len(snap.Documents) != 3 || snap.Documents[2].Revision == "" || snap.Documents[1].Writable {
		t.Errorf("snapshot documents %+v", snap.Documents)
	}
}

func TestStackOptionalLayerMissing(t *testing.T) {
	f, err := newStack(t, "name: from-file\n", nil, "")
	if err != nil {
		t.Fatalf("Load with the key missing: %v", err)
	}
	if got := f.live.Current().Name; got != "from-file" {
		t.Errorf("in force %q, want the file's (the missing key is an empty layer)", got)
	}
	r := run(t, f.live, false)
	f.put("name: from-kv\n")
	r.waitName(t, "from-kv")
	// Deleting the key takes its overrides away.
	if _, err := consulAgent(t).Client(t).KV().Delete(f.key, nil); err != nil {
		t.Fatal(err)
	}
	r.waitName(t, "from-file")
}

// TestStackPlacesProblems checks that every problem is reported in the
// layer, and on the line or by the variable, that causes it.
func TestStackPlacesProblems(t *testing.T) {
	for _, tc := range []struct {
		name  string
		file  string
		env   map[string]string
		kv    string
		wants []string // "SOURCE:LINE: message", SOURCE a placeholder
	}{
		{name: "a value set in the file",
			file:  "name: x\nlimits:\n  rate: -1\n",
			wants: []string{"FILE:3: limits.rate: must be above 0"}},
		{name: "a value set in KV over the file",
			file:  "limits:\n  rate: 2\n",
			kv:    "name: x\nlimits:\n  rate: 0\n",
			wants: []string{"KV:3: limits.rate: must be above 0"}},
		{name: "a value set by a variable",
			file:  "limits:\n  rate: 2\n",
			env:   map[string]string{"TEST_RULES__LIMITS__RATE": "0", "TEST_RULES__NAME": "forbidden"},
			wants: []string{"FILE + env: this name is reserved", "TEST_RULES__LIMITS__RATE: limits.rate: must be above 0"}},
		{name: "a section set by one variable",
			file:  "name: x\n",
			env:   map[string]string{"TEST_RULES__LIMITS": "{rate: 1, windw: 2s}"},
			wants: []string{`TEST_RULES__LIMITS: unknown field "windw"; known here: rate, window`}},
		{name: "a wrong type in each layer",
			file:  "limits:\n  rate: fast\n",
			env:   map[string]string{"TEST_RULES__LIMITS__WINDOW": "5"},
			kv:    "# comment\nname: [a]\n",
			wants: []string{`FILE:2: cannot use "fast" as a number`, `TEST_RULES__LIMITS__WINDOW: cannot use "5" as a duration`, "KV:2: cannot use a list as a string"}},
		{name: "a variable that is not YAML",
			file:  "name: x\n",
			env:   map[string]string{"TEST_RULES__LIMITS": "{rate: 1"},
			wants: []string{"TEST_RULES__LIMITS: value \"{rate: 1\" is not YAML"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := newStack(t, tc.file, tc.env, tc.kv)
			if err == nil {
				t.Fatalf("Load accepted %+v", f.live.Current())
			}
			stackName := f.file + " + environment TEST_RULES__* + consul:" + f.key
			for _, w := range tc.wants {
				w = strings.NewReplacer("FILE + env", stackName, "FILE", f.file, "KV", "consul:"+f.key).Replace(w)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%s", w, err)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.wants) {
				t.Errorf("error has %d problems, want %d:\n%s", n, len(tc.wants), err)
			}
		})
	}
}

// TestStackRefusedLayerKeepsLastGood changes the KV layer to a value the
// whole refuses: the last good merged configuration stays, and a file
// change made meanwhile is refused with it until KV is fixed.
func TestStackRefusedLayerKeepsLastGood(t *testing.T) {
	f, err := newStack(t, "name: from-file\nlimits:\n  rate: 2\n", nil, "name: from-kv\n")
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, f.live, false)
	f.put("name: from-kv\nlimits:\n  rate: 0\n")
	waitFor(t, "the KV change to be refused", func() bool { return f.live.Status().Refused != "" })
	if got := f.live.Current(); got.Name != "from-kv" || got.Limits.Rate != 2 {
		t.Errorf("in force %+v after a refused KV change, want the last good merge", got)
	}
	if !strings.Contains(f.live.Status().Refused, "consul:"+f.key+":3: limits.rate: must be above 0") {
		t.Errorf("refusal %q does not name the key and line", f.live.Status().Refused)
	}
	f.put("name: fixed-in-kv\n")
	r.waitName(t, "fixed-in-kv")
	if got := f.live.Current().Limits.Rate; got != 2 {
		t.Errorf("rate %v, want the file's 2 once KV no longer sets it", got)
	}
}

// TestStackSetChecksEveryLayer sets a value in KV that is fine on its own
// but refused with the file and the environment below it.
func TestStackSetChecksEveryLayer(t *testing.T) {
	f, err := newStack(t, "name: x\n", map[string]string{"TEST_RULES__FEATURES": "{slow_path: true}"}, "")
	if err != nil {
		t.Fatal(err)
	}
	run(t, f.live, false)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = f.live.Set(ctx, config.Edit{Path: "name", Value: "forbidden"}, config.Note{Who: "alice"})
	if err == nil || !strings.Contains(err.Error(), "this name is reserved") {
		t.Fatalf("Set = %v, want it refused", err)
	}
	if _, _, err := f.kv.ReadRevision(ctx); err == nil {
		t.Error("the refused value was written to the key")
	}
	w, err := f.live.Set(ctx, config.Edit{Path: `features["fast_path"]`, Value: "false"}, config.Note{Who: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.live.AwaitApplied(ctx, w); err != nil {
		t.Fatal(err)
	}
	if got := f.live.Current().Features; !mapsEqual(got, map[string]bool{"fast_path": false, "slow_path": true}) {
		t.Errorf("features %v", got)
	}
	data, _, _ := f.kv.ReadRevision(ctx)
	if string(data) != "features:\n  fast_path: false\n" {
		t.Errorf("key holds %q, want only what was set", data)
	}
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestEnvNames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		environ []string
		want    string // the document, or the error
		wantErr bool
	}{
		{name: "nothing set", want: "{}\n"},
		{name: "one value per variable",
			env:  map[string]string{"P__NAME": "n", "P__LIMITS__WINDOW": "2s", "P__ADMIN__TOKEN": "123"},
			want: "name: n\nlimits:\n  window: 2s\nadmin:\n  token: 123\n"},
		{name: "a section, then one of its keys over it",
			env:  map[string]string{"P__LIMITS": "{rate: 1, window: 1s}", "P__LIMITS__RATE": "7"},
			want: "limits:\n  rate: 7\n  window: 1s\n"},
		{name: "a map key the defaults hold",
			env:  map[string]string{"P__FEATURES__FAST_PATH": "false"},
			want: "features:\n  fast_path: false\n"},
		{name: "a misspelt variable, with the environment given",
			env:     map[string]string{"P__LIMITS__RATE": "1"},
			environ: []string{"P__LIMITS__RATE=1", "P__LIMIT__RATE=2", "PATH=/bin"},
			want:    "P__LIMIT__RATE names no setting; did you mean P__LIMITS__RATE?", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := config.NewEnv("P", func(k string) string { return tc.env[k] }, defaultRules(), config.EnvOptions{Environ: tc.environ})
			doc, err := env.Read(t.Context())
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Read = %q, %v; want an error saying %q", doc, err, tc.want)
				}
				return
			}
			if err != nil || string(doc) != tc.want {
				t.Errorf("Read = %q, %v; want %q", doc, err, tc.want)
			}
			var set []string
			for k := range tc.env {
				set = append(set, k)
			}
			slices.Sort(set)
			got := env.Set()
			slices.Sort(got)
			if !slices.Equal(got, set) {
				t.Errorf("Set() = %v, want %v", got, set)
			}
		})
	}
}
