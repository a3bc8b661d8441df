package config_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/config"
)

const (
	goodDoc  = "name: first\nlimits:\n  rate: 1\n"
	otherDoc = "name: second\nlimits:\n  rate: 2\n"
)

// live is a Live[settings] on a real file in a temporary directory, run
// until the test ends.
type live struct {
	t       *testing.T
	dir     string
	path    string
	live    *config.Live[settings]
	applied chan settings
	logs    *syncBuffer
	// refuseApply, when set, makes apply refuse the value.
	refuseApply func(settings) error
	mu          sync.Mutex
}

func startLive(t *testing.T, initial string) *live {
	t.Helper()
	dir := t.TempDir()
	l := &live{t: t, dir: dir, path: filepath.Join(dir, "rules.yaml"), applied: make(chan settings, 16), logs: &syncBuffer{}}
	l.write(initial)
	lv, err := config.New(config.NewFile(l.path), config.Options[settings]{
		Validate: settings.validate,
		Debounce: 10 * time.Millisecond,
		Logger:   slog.New(slog.NewJSONHandler(l.logs, nil)),
	})
	if err != nil {
		t.Fatalf("new live configuration: %v", err)
	}
	l.live = lv
	got, err := lv.Load(context.Background())
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if got.Name != "first" || lv.Status().Version != 1 {
		t.Fatalf("loaded %+v, version %d; want the first document as version 1", got, lv.Status().Version)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- lv.Run(ctx, func(s settings) error {
			l.mu.Lock()
			refuse := l.refuseApply
			l.mu.Unlock()
			if refuse != nil {
				if err := refuse(s); err != nil {
					return err
				}
			}
			l.applied <- s
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return l
}

// write replaces the file's contents in place.
func (l *live) write(doc string) {
	l.t.Helper()
	if err := os.WriteFile(l.path, []byte(doc), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// waitApplied returns the next value applied.
func (l *live) waitApplied() settings {
	l.t.Helper()
	select {
	case s := <-l.applied:
		return s
	case <-time.After(10 * time.Second):
		l.t.Fatalf("no change applied within 10s; status %+v", l.live.Status())
		return settings{}
	}
}

// waitVersion waits until version n is in force: apply has returned and
// the change is recorded.
func (l *live) waitVersion(n uint64) {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.live.Status().Version < n {
		if time.Now().After(deadline) {
			l.t.Fatalf("version %d not in force within 10s; status %+v", n, l.live.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitRefused waits until a change was refused and returns why.
func (l *live) waitRefused() string {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.live.Status().Refused == "" {
		if time.Now().After(deadline) {
			l.t.Fatalf("no change refused within 10s; status %+v", l.live.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return l.live.Status().Refused
}

func TestLiveAppliesChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(l *live)
	}{
		{"written in place", func(l *live) { l.write(otherDoc) }},
		{"renamed over, as editors save", func(l *live) {
			tmp := filepath.Join(l.dir, ".rules.yaml.swp")
			if err := os.WriteFile(tmp, []byte(otherDoc), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, l.path); err != nil {
				t.Fatal(err)
			}
		}},
		{"deleted, then created", func(l *live) {
			if err := os.Remove(l.path); err != nil {
				t.Fatal(err)
			}
			l.waitRefused() // the file is gone: refused, the old rules stay
			if got := l.live.Current().Name; got != "first" {
				t.Errorf("while the file is missing: current %q, want first", got)
			}
			l.write(otherDoc)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := startLive(t, goodDoc)
			tc.change(l)
			got := l.waitApplied()
			if got.Name != "second" || got.Limits.Rate != 2 {
				t.Errorf("applied %+v, want the second document", got)
			}
			l.waitVersion(2)
			st := l.live.Status()
			if st.Version != 2 || st.Refused != "" || l.live.Current().Name != "second" {
				t.Errorf("status %+v, current %+v; want version 2 in force", st, l.live.Current())
			}
			waitFor(t, "a log record of the change", func() bool {
				return strings.Contains(l.logs.String(), `"msg":"configuration applied"`)
			})
		})
	}
}

func TestLiveFileRestoredUnchanged(t *testing.T) {
	l := startLive(t, goodDoc)
	if err := os.Remove(l.path); err != nil {
		t.Fatal(err)
	}
	if refused := l.waitRefused(); !strings.Contains(refused, "no such file or directory") {
		t.Errorf("refusal = %q, want it to say the file is missing", refused)
	}
	l.write(goodDoc)
	if got := l.waitApplied(); got.Name != "first" {
		t.Errorf("applied %+v, want the restored first document", got)
	}
	l.waitVersion(2)
	if st := l.live.Status(); st.Refused != "" {
		t.Errorf("status %+v: the refusal stays after the file came back", st)
	}
}

func TestLiveSymlinkSwap(t *testing.T) {
	// The way Kubernetes updates a mounted ConfigMap: rules.yaml is a link
	// to ..data/rules.yaml, and ..data is swapped for a link to a new
	// directory.
	dir := t.TempDir()
	mk := func(name, doc string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "rules.yaml"), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("..v1", goodDoc)
	for old, new := range map[string]string{"..v1": "..data", "..data/rules.yaml": "rules.yaml"} {
		if err := os.Symlink(old, filepath.Join(dir, new)); err != nil {
			t.Fatal(err)
		}
	}
	lv, err := config.New(config.NewFile(filepath.Join(dir, "rules.yaml")), config.Options[settings]{Debounce: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lv.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	applied := make(chan settings, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lv.Run(ctx, func(s settings) error { applied <- s; return nil }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	mk("..v2", otherDoc)
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-applied:
		if s.Name != "second" {
			t.Errorf("applied %+v, want the second document", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the swap was not applied within 10s; status %+v", lv.Status())
	}
}

func TestLiveRefusesBadChanges(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		// refuse, when set, is the apply function's verdict.
		refuse func(settings) error
		// want are substrings of the refusal, each naming file and line.
		want []string
	}{
		{name: "parse error", doc: "name: x\nlimits:\n  rate: 1\n   window: 2s\n",
			want: []string{"rules.yaml:4: mapping values are not allowed"}},
		{name: "typo", doc: "name: x\nlimits:\n  rat: 3\n",
			want: []string{`rules.yaml:3: unknown field "rat"; known here: rate, window`}},
		{name: "every invalid value", doc: "name: forbidden\nlimits:\n  rate: 0\nroutes:\n  - path: /a\n    burst: 1\n  - path: /b\n    burst: 0\n",
			want: []string{"rules.yaml: this name is reserved", "rules.yaml:3: limits.rate: must be above 0", "rules.yaml:8: routes.1.burst: must be at least 1"}},
		{name: "apply refuses", doc: otherDoc,
			refuse: func(s settings) error {
				return errors.Join(&pathError{[]string{"limits", "rate"}, "cannot be raised while running"})
			},
			want: []string{"rules.yaml:3: limits.rate: cannot be raised while running"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := startLive(t, goodDoc)
			l.mu.Lock()
			l.refuseApply = tc.refuse
			l.mu.Unlock()
			l.write(tc.doc)
			refused := l.waitRefused()
			for _, w := range tc.want {
				if !strings.Contains(refused, w) {
					t.Errorf("refusal does not say %q:\n%s", w, refused)
				}
			}
			if got := l.live.Current(); got.Name != "first" || l.live.Status().Version != 1 {
				t.Errorf("current %+v, version %d; want the first document still in force", got, l.live.Status().Version)
			}
			if len(l.applied) != 0 {
				t.Errorf("a refused document was applied")
			}
			const refusedMsg = "configuration change refused; the last good configuration stays in force"
			waitFor(t, "a log record of the refusal", func() bool { return l.logs.record(t, refusedMsg) != nil })
			rec := l.logs.record(t, refusedMsg)
			if rec == nil || !strings.Contains(rec["error"].(string), tc.want[0]) || rec["version_in_force"] != 1.0 {
				t.Errorf("log record %v, want the refusal with the version in force", rec)
			}

			// A good change after a refused one is applied, and clears it.
			l.mu.Lock()
			l.refuseApply = nil
			l.mu.Unlock()
			l.write("name: third\nlimits:\n  rate: 3\n")
			if got := l.waitApplied(); got.Name != "third" {
				t.Errorf("applied %+v, want the third document", got)
			}
			l.waitVersion(2)
			if st := l.live.Status(); st.Version != 2 || st.Refused != "" {
				t.Errorf("status %+v, want version 2 and nothing refused", st)
			}
		})
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, file, doc, want string
	}{
		{"missing file", "absent.yaml", "", "absent.yaml: no such file or directory"},
		{"invalid", "bad.yaml", "limits:\n  rate: -1\n", "bad.yaml:2: limits.rate: must be above 0"},
		{"json typo", "bad.json", "{\n  \"limits\": {\"rte\": 1}\n}", `bad.json:2: unknown field "rte"`},
		{"every problem at once", "all.yaml", "limits:\n  rate: fast\nroutes:\n  - path: /a\n    burst: 0\n  - pth: /b\n    burst: 1\n",
			"all.yaml:2: cannot use \"fast\" as a number\n" +
				"all.yaml:5: routes.0.burst: must be at least 1\n" +
				"all.yaml:6: unknown field \"pth\"; known here: path, burst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.file)
			if tc.doc != "" {
				if err := os.WriteFile(path, []byte(tc.doc), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			lv, err := config.New(config.NewFile(path), config.Options[settings]{Validate: settings.validate})
			if err != nil {
				t.Fatal(err)
			}
			_, err = lv.Load(context.Background())
			want := strings.Split(tc.want, "\n")
			if err == nil || strings.Count(err.Error(), "\n") != len(want)-1 {
				t.Fatalf("Load = %v, want %d problems", err, len(want))
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load = %v, want it to say %q", err, w)
				}
			}
			if lv.Status().Version != 0 {
				t.Errorf("version %d after a refused load, want 0", lv.Status().Version)
			}
		})
	}
}

func TestNewRefusesUnknownFormat(t *testing.T) {
	if _, err := config.New(config.NewFile("rules.toml"), config.Options[settings]{}); err == nil ||
		!strings.Contains(err.Error(), ".yaml, .yml or .json") {
		t.Errorf("New = %v, want an error naming the formats", err)
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's and the test's
// goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// record returns the last JSON log record with the message, or nil.
func (b *syncBuffer) record(t *testing.T, msg string) map[string]any {
	t.Helper()
	var found map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err == nil && rec["msg"] == msg {
			found = rec
		}
	}
	return found
}

func TestLoadStartsFromDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte("name: only-the-name\nroutes:\n  - path: /x\n    burst: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lv, err := config.New(config.NewFile(path), config.Options[settings]{
		Defaults: func() settings {
			return settings{Limits: limits{Rate: 7, Window: time.Minute}, Routes: []route{{"/default", 9}}}
		},
		Validate: settings.validate,
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := lv.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := settings{Name: "only-the-name", Limits: limits{Rate: 7, Window: time.Minute}, Routes: []route{{"/x", 1}}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("loaded %+v, want %+v (defaults kept where the document is silent, the list replaced)", got, want)
	}
}
